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
    """images [1,3,H,W] (0..1) -> torchvision's own boxes, scores, labels (and pasted masks for Mask
    R-CNN): its transform and post-processing."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple:
        out = self.model([x[0]])[0]
        return tuple(out[k] for k in ("boxes", "scores", "labels", "masks") if k in out)


def export_whole(model: torch.nn.Module, path: Path, size: int) -> int:
    """torchvision's whole detector as ONNX; returns its node count. Leaves the model in eval mode."""
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        names = ["boxes", "scores", "labels"] + (["masks"] if getattr(model, "roi_heads", None) and model.roi_heads.has_mask() else [])
        torch.onnx.export(WholeGraph(model), (torch.rand(1, 3, size, size),), str(path), dynamo=False, opset_version=17,
                          input_names=["images"], output_names=names)
    model.eval()  # exporting may leave the module in training mode
    return len(onnx.load(str(path)).graph.node)


def contenders(model: torch.nn.Module, whole: Path, ours: Dict[str, Any], image: np.ndarray,
               label: str, failures: Dict[str, str] | None = None) -> Dict[str, Callable[[], Any]]:
    """End-to-end calls on one uint8 image: torchvision eager, torchvision's ONNX in ONNX Runtime and
    OpenVINO (f32), and edgevision's predictors `ours` ({backend: Predictor}) named '<label>, <backend>'
    (masks pasted at the image size, as torchvision does). A contender that cannot run is left out
    and its error put in `failures`."""
    failures = {} if failures is None else failures
    session = ort.InferenceSession(str(whole), providers=["CPUExecutionProvider"])
    core = ov.Core()
    try:
        request = core.compile_model(core.read_model(str(whole)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
        request.infer({"images": (image.astype(np.float32) / 255).transpose(2, 0, 1)[None]})
    except Exception as e:  # Mask R-CNN's mask-paste Loop: recorded as a failure, not timed
        failures["torchvision ONNX, openvino"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
        request = None

    def to_tensor() -> np.ndarray:
        return (image.astype(np.float32) / 255).transpose(2, 0, 1)[None]

    def eager() -> None:
        with torch.inference_mode():
            model([torch.from_numpy(image).permute(2, 0, 1).float() / 255])

    fns: Dict[str, Callable[[], Any]] = {
        "torchvision eager": eager,
        "torchvision ONNX, onnxruntime": lambda: session.run(None, {"images": to_tensor()}),
    }
    if request is not None:
        fns["torchvision ONNX, openvino"] = lambda: request.infer({"images": to_tensor()})
    fns.update({f"{label}, {backend}": (lambda p=p: p.predict(image).masks) for backend, p in ours.items()})
    return fns


def compile_random_weights(data: Dict[str, Any], root: Path) -> tuple:
    """Compile a recipe dict (output under root) on random weights with BatchNorm re-estimated
    (pretrained weights cannot be downloaded here): returns (manifest, compile seconds).
    data["model"]["checkpoint"] is set to the weights used."""
    import time

    from edgevision import api
    from edgevision.reporting import SilentReporter
    from edgevision.random_weights import reestimated_checkpoint
    from edgevision.recipe import parse_recipe

    data["model"]["checkpoint"] = str(reestimated_checkpoint(data, root / f"{data['name']}.pt"))
    start = time.perf_counter()
    manifest = api.compile(parse_recipe(data), reporter=SilentReporter())
    return manifest, time.perf_counter() - start
