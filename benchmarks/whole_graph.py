"""What edgevision is compared with: a torchvision detector run eagerly, and exported whole by
torch.onnx (TorchScript exporter, opset 17, the path torchvision documents) into ONNX Runtime and
OpenVINO. Shared by detection_nms.py and two_stage.py (imported as a sibling module)."""

from __future__ import annotations

import io
import warnings
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any, Callable, Dict

import numpy as np
import onnx
import onnxruntime as ort
import openvino as ov
import torch


class WholeGraph(torch.nn.Module):
    """images [1,3,H,W] (0..1) -> torchvision's own boxes, scores, labels (its transform and post-processing)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple:
        out = self.model([x[0]])[0]
        return out["boxes"], out["scores"], out["labels"]


def export_whole(model: torch.nn.Module, path: Path, size: int) -> int:
    """torchvision's whole detector as ONNX; returns its node count. Leaves the model in eval mode."""
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(WholeGraph(model), (torch.rand(1, 3, size, size),), str(path), dynamo=False, opset_version=17,
                          input_names=["images"], output_names=["boxes", "scores", "labels"])
    model.eval()  # exporting may leave the module in training mode
    return len(onnx.load(str(path)).graph.node)


def contenders(model: torch.nn.Module, whole: Path, ours: Dict[str, Any], image: np.ndarray,
               label: str) -> Dict[str, Callable[[], Any]]:
    """End-to-end calls on one uint8 image: torchvision eager, torchvision's ONNX in ONNX Runtime and
    OpenVINO (f32), and edgevision's predictors `ours` ({backend: Predictor}) named '<label>, <backend>'."""
    session = ort.InferenceSession(str(whole), providers=["CPUExecutionProvider"])
    core = ov.Core()
    request = core.compile_model(core.read_model(str(whole)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()

    def to_tensor() -> np.ndarray:
        return (image.astype(np.float32) / 255).transpose(2, 0, 1)[None]

    def eager() -> None:
        with torch.inference_mode():
            model([torch.from_numpy(image).permute(2, 0, 1).float() / 255])

    fns: Dict[str, Callable[[], Any]] = {
        "torchvision eager": eager,
        "torchvision ONNX, onnxruntime": lambda: session.run(None, {"images": to_tensor()}),
        "torchvision ONNX, openvino": lambda: request.infer({"images": to_tensor()}),
    }
    fns.update({f"{label}, {backend}": (lambda p=p: p.predict(image)) for backend, p in ours.items()})
    return fns
