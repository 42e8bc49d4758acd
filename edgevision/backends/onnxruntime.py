"""ONNX Runtime: run a variant (CPU, or CUDA / TensorRT providers when asked); builders/onnxruntime.py builds it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from edgevision.backends.base import RunnerBase, TensorSpec, require
from edgevision.errors import BackendError

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


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
        wanted = PROVIDERS[settings.get("device", "cpu")]
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
