"""PyTorch module -> clean, checked ONNX with the output contract of the README ("Detection: one NMS, fused into the graph").

classification: logits [B,C]; segmentation: logits [B,C,H,W] (+ labels [B,H,W] int32 when
export.argmax). torchvision's segmentation models return a dict: it is flattened here.
detection: an adapter (export/detection.py) yields boxes [B,N,4] and scores [B,N,C]; the
canonical NMS is then appended in ONNX (export/nms.py): num_dets, boxes, scores, labels.
instance_segmentation / keypoints (R-CNNs, export/two_stage.py): the adapter has the NMS in the
graph and yields num_dets, boxes, scores, labels and masks [B,D,28,28] / keypoint_heatmaps.
"""

from __future__ import annotations

import io
import json
import re
import time
import warnings
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any, Optional

import onnx
import torch
from torch import nn

from edgevision.records import INPUT_NAME
from edgevision.errors import ExportError
from edgevision.export.nms import OUTPUTS as NMS_OUTPUTS
from edgevision.export.nms import append_nms
from edgevision.ops.nms import NMSParams
from edgevision.recipe import Recipe
from edgevision.tasks import DETECTION_TASKS

MAX_IR_VERSION = 10  # ONNX Runtime 1.31 rejects IR 14; 10 is what opset 18-21 need and every backend reads


class ExportWrapper(nn.Module):
    """images (NCHW or NHWC float32, normalised) -> tuple of contract outputs."""

    def __init__(self, model: nn.Module, task: str, layout: str = "nchw", argmax: bool = False) -> None:
        super().__init__()
        self.model = model.eval()
        self.task, self.layout, self.argmax = task, layout, argmax

    @property
    def output_names(self) -> list[str]:
        """Outputs of the exported network (for detection: before the NMS is appended)."""
        if self.task in DETECTION_TASKS:
            return list(getattr(self.model, "output_names", ["boxes", "scores"]))
        return ["logits", "labels"] if (self.task == "segmentation" and self.argmax) else ["logits"]

    @property
    def input_names(self) -> list[str]:
        """Graph inputs: images, and proposals in external-proposal mode."""
        return list(getattr(self.model, "input_names", [INPUT_NAME]))

    @property
    def appends_nms(self) -> bool:
        """The canonical NMS is appended after export (else the network has its own, or none)."""
        return self.task in DETECTION_TASKS and self.output_names == ["boxes", "scores"]

    @property
    def contract_names(self) -> list[str]:
        """Outputs of the finished graph (the README's output contract)."""
        return list(NMS_OUTPUTS) if self.appends_nms else self.output_names

    def forward(self, images: torch.Tensor, proposals: Optional[torch.Tensor] = None) -> Any:
        x = images.permute(0, 3, 1, 2) if self.layout == "nhwc" else images
        out = self.model(x) if proposals is None else self.model(x, proposals)
        if self.task in DETECTION_TASKS:
            return out
        if isinstance(out, dict):  # torchvision FCN / DeepLabV3 / LRASPP: {"out": ..., "aux": ...}
            out = out["out"]
        elif hasattr(out, "logits"):  # HuggingFace-style output objects
            out = out.logits
        elif isinstance(out, tuple) and type(self.model).__name__ == "ClassificationModel":
            out = out[1]  # Ultralytics' Classify head in eval: (probabilities, logits)
        elif type(self.model).__name__ == "SemanticSegmentationModel" and not self.training:
            # Ultralytics' SemanticSegment head: logits at 1/8 of the input, upsampled as its export and predictor do
            out = nn.functional.interpolate(out, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
        if self.task == "segmentation" and self.argmax:
            return out, out.argmax(dim=1).to(torch.int32)
        return out


def export_onnx(wrapper: ExportWrapper, recipe: Recipe, path: Path, labels: list[str],
                nms: NMSParams | None = None, pre_nms_path: Path | None = None) -> dict[str, Any]:
    """Export, clean with onnxslim, (append the NMS), check, add metadata; write `path`; return facts.

    pre_nms_path: detection only, also write the graph before the NMS (targets that lower the
    NMS their own way, e.g. TensorRT's EfficientNMS_TRT, start from it)."""
    h, w = recipe.input.size
    spec = recipe.export
    batch = 2 if spec.dynamic_batch else 1  # an example batch of 1 would be specialised by torch.export
    shape = (batch, h, w, 3) if recipe.input.layout == "nhwc" else (batch, 3, h, w)
    example = (torch.zeros(shape),)
    if spec.proposals is not None:  # external-proposal mode: proposals [B,K,4], all padding rows here
        example += (torch.zeros(batch, spec.proposals.max, 4),)
    names = wrapper.output_names
    start = time.perf_counter()
    model = _run_exporter(wrapper, example, names, spec.exporter, spec.opset, spec.dynamic_batch)
    exported_nodes = len(model.graph.node)
    model = _clean(model)
    if wrapper.appends_nms:
        if nms is None:
            raise ExportError("detection export needs NMS parameters")
        if pre_nms_path is not None:
            onnx.save_model(model, str(pre_nms_path))
        model = onnx.shape_inference.infer_shapes(append_nms(model, nms, "onnx"), strict_mode=True)
    _add_metadata(model, recipe, labels, wrapper.contract_names)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"the exported ONNX graph does not pass onnx.checker: {e}") from None
    onnx.save_model(model, str(path))
    ops = Counter(n.op_type for n in model.graph.node)
    return {
        "exporter": spec.exporter,
        "opset": _opset(model),
        "ir_version": model.ir_version,
        "dynamic_batch": spec.dynamic_batch,
        "nodes_exported": exported_nodes,
        "nodes": len(model.graph.node),
        "ops": dict(sorted(ops.items())),
        "seconds": round(time.perf_counter() - start, 2),
        **({"head": wrapper.model.branch} if hasattr(wrapper.model, "branch") else {}),
    }


def _run_exporter(wrapper: ExportWrapper, example: tuple[torch.Tensor, ...], names: list[str], exporter: str, opset: int,
                  dynamic: bool) -> onnx.ModelProto:
    inputs = wrapper.input_names
    kwargs: dict[str, Any] = {"input_names": inputs, "output_names": names, "opset_version": opset}
    from edgevision.export.rcnn_ops import CUSTOM_OPS
    from edgevision.export.two_stage import TwoStageAdapter

    if exporter == "dynamo":
        if dynamic:
            batch = torch.export.Dim("batch", min=1, max=1024)
            kwargs["dynamic_shapes"] = tuple({0: batch} for _ in inputs)
        kwargs.update(dynamo=True, optimize=True, verbose=False, custom_translation_table=CUSTOM_OPS)
    elif isinstance(getattr(wrapper, "model", None), TwoStageAdapter):
        raise ExportError("two-stage detectors export with export.exporter: dynamo (their in-graph RPN NMS has no "
                          "TorchScript lowering)")
    else:
        if dynamic:
            kwargs["dynamic_axes"] = {n: {0: "batch"} for n in [*inputs, *names]}
        kwargs.update(dynamo=False)
    buffer, log = io.BytesIO(), io.StringIO()
    try:
        # the exporters print the traced graph on failure (thousands of lines for an R-CNN): kept for --debug
        with warnings.catch_warnings(), redirect_stdout(log), redirect_stderr(log):
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                program = torch.onnx.export(wrapper, example, None, **kwargs)
                return program.model_proto
            torch.onnx.export(wrapper, example, buffer, **kwargs)
    except Exception as e:  # the exporters raise many types: report the innermost cause and where it arose
        two_stage = isinstance(getattr(wrapper, "model", None), TwoStageAdapter)
        advice = "" if two_stage else f" Try export.exporter: {'torchscript' if exporter == 'dynamo' else 'dynamo'}."
        error = ExportError(f"torch.onnx ({exporter} exporter) failed{_failing_module(e)}: {_cause(e)}.{advice} "
                            "(--debug shows the exporter's full output)")
        error.log = log.getvalue()
        raise error from e
    return onnx.load_model_from_string(buffer.getvalue())


def _clean(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxslim

    with redirect_stdout(io.StringIO()):
        model = onnxslim.slim(model)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    if model.ir_version > MAX_IR_VERSION:
        model.ir_version = MAX_IR_VERSION
    return model


def _add_metadata(model: onnx.ModelProto, recipe: Recipe, labels: list[str], outputs: list[str]) -> None:
    meta = {
        "edgevision.task": recipe.task,
        "edgevision.labels": json.dumps(labels),
        "edgevision.input": json.dumps(recipe.input.model_dump(mode="json")),
        "edgevision.outputs": json.dumps(outputs),
        "edgevision.name": recipe.name,
    }
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    model.producer_name = "edgevision"


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _failing_module(error: BaseException) -> str:
    """' in module X (file:line)' for the innermost nn.Module whose forward raised, if any."""
    found = ""
    tb = error.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        owner = frame.f_locals.get("self")
        if frame.f_code.co_name == "forward" and isinstance(owner, nn.Module) and not isinstance(owner, ExportWrapper):
            found = f" in module {type(owner).__name__} ({Path(frame.f_code.co_filename).name}:{tb.tb_lineno})"
        tb = tb.tb_next
    return found


def _cause(error: BaseException) -> str:
    """The innermost exception of the chain, one line, with the model code it arose in when the
    message names it (torch.export's 'File "...", line N, in forward'), and what a data-dependent
    guard means."""
    root = error
    while (root.__cause__ or root.__context__) is not None:
        root = root.__cause__ or root.__context__  # type: ignore[assignment]
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(root))
    frames = [f for f in re.findall(r'File "([^"]+)", line (\d+), in (\w+)', text) if "site-packages" not in f[0]]
    where = f" at {Path(frames[-1][0]).name}:{frames[-1][1]} ({frames[-1][2]})" if frames else ""
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")[:400]
    hint = ""
    if "data-dependent" in first:
        hint = (" - an op checks the size of a tensor whose size depends on the input data (e.g. BatchNorm or a "
                "reshape run on the kept detections); give it a size that is never zero, or move it off that tensor")
    return f"{type(root).__name__}{where}: {first}{hint}"
