"""Serving artifacts beyond one box: Triton model repositories (`edgevision export triton`), a local
tritonserver (`edgevision serve`), and remote predictors (`edgevision.load("grpc://host:8001/MODEL")`)."""
