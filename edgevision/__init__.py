"""edgevision: PyTorch vision models -> verified edge artifacts, and a torch-free runtime.

    import edgevision
    model = edgevision.load("build/quickstart/openvino-fp32")
    result = model.predict("image.jpg")

Importing edgevision loads no backend and no PyTorch; `compile` and `train` import them lazily.
"""

from __future__ import annotations

from typing import Any

from edgevision.errors import EdgeVisionError
from edgevision.runtime import Classification, Detections, Predictor, Segmentation
from edgevision.runtime import load as load_local
from edgevision.version import __version__

__all__ = ["Classification", "Detections", "EdgeVisionError", "Predictor", "Segmentation", "__version__", "compile", "load",
           "train"]


def load(path: Any, variant: Any = None, **kwargs: Any) -> Any:
    """Open an artifact's variant (see edgevision.runtime.load), or a model served by Triton:
    load("grpc://host:8001/MODEL") or load("http://host:8000/MODEL") (see edgevision.serve.remote.connect;
    keyword arguments: timeout, retries, backoff, workers). Both give the same predict() and stream()."""
    if isinstance(path, str) and "://" in path:
        if variant is not None:
            raise EdgeVisionError(f"{path}: a served model is one variant already; do not also ask for variant {variant!r}")
        from edgevision.serve.remote import connect

        return connect(path, **kwargs)
    return load_local(path, variant, **kwargs)


def compile(recipe: Any, **kwargs: Any) -> Any:  # noqa: A001 - the verb users expect
    """Compile a recipe (path or Recipe) into an artifact directory; see edgevision.api.compile."""
    from edgevision import api

    return api.compile(recipe, **kwargs)


def train(recipe: Any, **kwargs: Any) -> Any:
    """Train the recipe's model on its data.train source; see edgevision.api.train."""
    from edgevision import api

    return api.train(recipe, **kwargs)
