"""ONNX export: wrappers that flatten model outputs to the contract, cleanup, metadata."""
