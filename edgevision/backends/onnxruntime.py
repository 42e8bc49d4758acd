"""ONNX Runtime: build (copy the verified ONNX) and run (CPU, or CUDA when asked)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from edgevision.backends.base import RunnerBase, TensorSpec, require, unknown_options
from edgevision.errors import BackendError

_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def build(onnx_path: Path, out_dir: Path, precision: str, device: str, options: Dict[str, Any],
          context: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Write the variant's files into out_dir; return its runtime settings. int8 reads
    context["calibration"] (a CalibrationSet), and context["accuracy"] for accuracy control."""
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

        model, settings["quantization"] = quantize_onnx(onnx.load(str(onnx_path)), "onnxruntime", context or {})
        onnx.save_model(model, str(out_dir / "model.onnx"))
    else:
        shutil.copyfile(onnx_path, out_dir / "model.onnx")
    return settings


class Runner(RunnerBase):
    def __init__(self, files: Dict[str, Path], settings: Dict[str, Any], threads: Optional[int] = None,
                 streams: int = 1) -> None:
        ort = require("onnxruntime", "onnxruntime", "onnxruntime")
        opts = ort.SessionOptions()
        level = settings.get("graph_optimization_level", "all")
        opts.graph_optimization_level = {
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[level]
        if streams > 1:  # concurrent run() calls share the cores: each gets its part, and no thread spins idle
            threads = max(1, (threads or os.cpu_count() or 1) // streams)
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        wanted = _PROVIDERS[settings.get("device", "cpu")]
        available = ort.get_available_providers()
        if wanted[0] not in available:
            raise BackendError(
                f"onnxruntime: provider {wanted[0]} is not available in this onnxruntime build "
                f"(available: {', '.join(available)}); install onnxruntime-gpu for CUDA/TensorRT"
            )
        providers = [p for p in wanted if p in available]
        try:
            self._session = ort.InferenceSession(str(files["model"]), sess_options=opts, providers=providers)
        except Exception as e:  # ORT raises its own exception types for invalid graphs / unsupported ops
            raise BackendError(f"onnxruntime could not load {files['model']}: {e}") from None
        self.inputs: List[TensorSpec] = [TensorSpec(i.name, tuple(i.shape), i.type) for i in self._session.get_inputs()]
        self.outputs: List[TensorSpec] = [TensorSpec(o.name, tuple(o.shape), o.type) for o in self._session.get_outputs()]
        self._output_names = [o.name for o in self.outputs]

    def infer(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        self.check_feeds(feeds)
        values = self._session.run(self._output_names, feeds)
        return dict(zip(self._output_names, values))

    def close(self) -> None:
        self._session = None
