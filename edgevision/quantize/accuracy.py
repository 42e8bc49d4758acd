"""The accuracy gate's measuring stick during quantization: scores candidate models on data.val
with the task metric, end to end through the runtime's Predictor (accuracy control uses it)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np


@dataclass
class AccuracyProbe:
    metric: str  # "map", "miou" or "top1"
    baseline: float  # PyTorch FP32 on data.val (fraction)
    max_drop: float  # fraction (the recipe gives points)
    size: int  # images in data.val
    evaluate: Callable[[Any, Optional[list[int]]], dict[str, Any]]  # (runner, val indices or None=all) -> metrics
    outputs: list[str]  # the graph's output names, in order
    threads: Optional[int] = None

    def drop(self, value: float) -> float:
        return self.baseline - value

    def score(self, runner: Any, indices: Optional[list[int]] = None) -> float:
        return float(self.evaluate(runner, indices)[self.metric])

    def score_onnx(self, model: Any) -> float:
        """An ONNX ModelProto, run in ONNX Runtime on the CPU."""
        import onnx

        from edgevision.backends.onnxruntime import Runner

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "candidate.onnx"
            onnx.save_model(model, str(path))
            runner = Runner({"model": path}, {"device": "cpu"}, self.threads)
        try:
            return self.score(runner)
        finally:
            runner.close()

    def score_openvino(self, model: Any) -> float:
        from edgevision.backends.openvino import shared_core

        config = {"INFERENCE_PRECISION_HINT": "f32"}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = str(self.threads)
        return self.score_compiled(shared_core().compile_model(model, "CPU", config))

    def score_compiled(self, compiled: Any, indices: Optional[list[int]] = None) -> float:
        """An OpenVINO CompiledModel (what NNCF's validation_fn receives, with a subset of val indices)."""
        return self.score(_CompiledRunner(compiled, self.outputs), indices)


class _CompiledRunner:
    def __init__(self, compiled: Any, names: list[str]) -> None:
        self._request = compiled.create_infer_request()
        # a port can carry several names after NNCF's transformations; use the graph's own, by position
        self._ports = list(zip(names, compiled.outputs))

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self._request.infer(feeds)
        return {name: np.asarray(result[port]) for name, port in self._ports}
