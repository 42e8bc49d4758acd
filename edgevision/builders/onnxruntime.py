"""ONNX Runtime variants: the verified ONNX as it is (fp32), or quantized with Q/DQ (int8)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Dict

from edgevision.backends.base import unknown_options
from edgevision.backends.onnxruntime import PROVIDERS as _PROVIDERS
from edgevision.builders import BuildContext
from edgevision.errors import BackendError


def build(onnx_path: Path, out_dir: Path, precision: str, device: str, options: Dict[str, Any],
          context: BuildContext) -> Dict[str, Any]:
    """Write the variant's files into out_dir; return its runtime settings. int8 reads the
    context's calibration set (and its accuracy probe for accuracy control)."""
    if device not in _PROVIDERS:
        raise BackendError(f"onnxruntime: unknown device '{device}' (known: {', '.join(_PROVIDERS)})")
    if precision not in ("fp32", "int8"):
        raise BackendError(f"onnxruntime: precision '{precision}' is not built by this version (fp32, int8)")
    problem = unknown_options("onnxruntime", options)
    if problem:
        raise BackendError(problem)
    settings: Dict[str, Any] = {
        "files": {"model": "model.onnx"},
        "device": device,
        "graph_optimization_level": options.get("graph_optimization_level", "all"),
    }
    if precision == "int8":
        import onnx

        from edgevision.quantize.onnx_qdq import quantize_onnx

        model, settings["quantization"] = quantize_onnx(onnx.load(str(onnx_path)), "onnxruntime", context)
        onnx.save_model(model, str(out_dir / "model.onnx"))
    else:
        shutil.copyfile(onnx_path, out_dir / "model.onnx")
    return settings
