"""The canonical NMS (edgevision/ops/nms.py) lowered into an ONNX graph, in two forms.

- "onnx": TopK pre-filter + NonMaxSuppression + dense mask + TopK + GatherND + padding. Runs
  in ONNX Runtime and OpenVINO, and TensorRT >= 10 (the parser maps NonMaxSuppression to
  INMSLayer). All shapes are static except inside the mask step, so batch > 1 works.
- "efficient_nms": the same pre-filter, then one `EfficientNMS_TRT` plugin node (TensorRT
  8.6-11.x). The plugin NMSes at most 4096 (box, class) candidates above the score threshold;
  beyond that its result can differ from the "onnx" form. `lower_efficient_nms` turns it back into the "onnx" form so the TensorRT-bound
  graph can be executed and verified on CPU.

Both take graph outputs boxes [B,N,4] and scores [B,N,C] and produce num_dets [B,1] int32,
boxes [B,K,4], scores [B,K], labels [B,K] int32.
"""

from __future__ import annotations

from typing import Any, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgevision.errors import ExportError
from edgevision.ops.nms import NMSParams

OUTPUTS = ("num_dets", "boxes", "scores", "labels")
TRT_DOMAIN = "TRT"
EFFICIENT_NMS = "EfficientNMS_TRT"


class _Builder:
    """Collects nodes and constants with unique names under a prefix."""

    def __init__(self, prefix: str, opset: int) -> None:
        self.prefix, self.opset, self.nodes, self.inits, self._n = prefix, opset, [], [], 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{self.prefix}/{hint}_{self._n}"

    def const(self, value: Any, dtype: Any, hint: str = "c") -> str:
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def reduce(self, op_type: str, x: str, axes: list, keepdims: int, outputs: Any = 1) -> Any:
        """ReduceMax/ReduceSum with axes as an input (opset >= 18; ReduceSum >= 13) or an attribute."""
        if self.opset >= 18 or (op_type == "ReduceSum" and self.opset >= 13):
            return self.op(op_type, [x, self.const(axes, np.int64)], outputs=outputs, keepdims=keepdims)
        return self.op(op_type, [x], outputs=outputs, axes=axes, keepdims=keepdims)

    def op(self, op_type: str, inputs: list, hint: str = "", outputs: Any = 1, **attrs: Any) -> Any:
        outs = [self.name(hint or op_type.lower()) for _ in range(outputs)] if isinstance(outputs, int) else list(outputs)
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.name(op_type), **attrs))
        return outs[0] if len(outs) == 1 else outs


def _pre_top_k(g: _Builder, boxes: str, scores: str, n: int, k: int) -> tuple[str, str]:
    """Keep the k boxes with the highest max-over-classes score: [B,k,4], [B,k,C]."""
    if k >= n:
        return boxes, scores
    best = g.reduce("ReduceMax", scores, [2], keepdims=0)
    _, idx = g.op("TopK", [best, g.const([k], np.int64)], outputs=2, axis=1, largest=1, sorted=1)
    idx3 = g.op("Unsqueeze", [idx, g.const([2], np.int64)])
    return g.op("GatherND", [boxes, idx3], batch_dims=1), g.op("GatherND", [scores, idx3], batch_dims=1)


def _nms(g: _Builder, boxes: str, scores: str, outputs: tuple, p: NMSParams, candidates: Tuple[int, int]) -> None:
    """Standard-ONNX NMS on k candidates with c classes (candidates: (k, c)), writing the four
    contract outputs."""
    k, c = candidates
    if p.class_agnostic:
        per_class = g.reduce("ReduceMax", scores, [2], keepdims=1)  # [B,k,1]
        agnostic_labels = g.op("ArgMax", [scores], axis=2, keepdims=0)  # [B,k]
        c_eff = 1
    else:
        per_class, c_eff = scores, c
    scores_t = g.op("Transpose", [per_class], perm=[0, 2, 1])  # [B,C',k]
    selected = g.op("NonMaxSuppression", [
        boxes, scores_t, g.const([p.max_detections], np.int64), g.const([p.iou_threshold], np.float32),
        g.const([p.score_threshold], np.float32)], center_point_box=0)  # [M,3]: batch, class, box
    count = g.op("Slice", [g.op("Shape", [selected]), g.const([0], np.int64), g.const([1], np.int64)])
    ones = g.op("ConstantOfShape", [count], value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]))
    zeros = g.op("ConstantOfShape", [g.op("Shape", [scores_t])], value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))
    mask = g.op("Greater", [g.op("ScatterND", [zeros, selected, ones]), g.const(0.5, np.float32)])
    masked = g.op("Where", [mask, scores_t, g.const(-1.0, np.float32)])
    flat = g.op("Reshape", [masked, g.const([0, -1], np.int64)])  # [B, C'*k], class-major
    k_top = min(p.max_detections, c_eff * k)
    values, flat_idx = g.op("TopK", [flat, g.const([k_top], np.int64)], outputs=2, axis=1, largest=1, sorted=1)
    box_idx = g.op("Mod", [flat_idx, g.const(k, np.int64)])
    labels = (g.op("GatherElements", [agnostic_labels, box_idx], axis=1) if p.class_agnostic
              else g.op("Div", [flat_idx, g.const(k, np.int64)]))
    picked = g.op("GatherND", [boxes, g.op("Unsqueeze", [box_idx, g.const([2], np.int64)])], batch_dims=1)
    valid = g.op("Greater", [values, g.const(-0.5, np.float32)])
    pad = p.max_detections - k_top
    results = [
        g.op("Where", [g.op("Unsqueeze", [valid, g.const([2], np.int64)]), picked, g.const(0.0, np.float32)]),
        g.op("Where", [valid, values, g.const(0.0, np.float32)]),
        g.op("Where", [valid, g.op("Cast", [labels], to=TensorProto.INT32), g.const(0, np.int32)]),
    ]
    num, out_boxes, out_scores, out_labels = outputs
    g.reduce("ReduceSum", g.op("Cast", [valid], to=TensorProto.INT32), [1], keepdims=1, outputs=[num])
    for src, dst, rank in zip(results, (out_boxes, out_scores, out_labels), (3, 2, 2)):
        if pad:
            pads = [0, 0] + [0] * (rank - 2) + [0, pad] + [0] * (rank - 2)
            g.op("Pad", [src, g.const(pads, np.int64)], outputs=[dst])
        else:
            g.op("Identity", [src], outputs=[dst])


def _dims(model: onnx.ModelProto, name: str) -> list:
    for vi in list(model.graph.output) + list(model.graph.value_info):
        if vi.name == name:
            return [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
    raise ExportError(f"NMS: graph has no shape information for '{name}'")


def append_nms(model: onnx.ModelProto, p: NMSParams, form: str = "onnx") -> onnx.ModelProto:
    """Replace graph outputs boxes [B,N,4], scores [B,N,C] by the four NMS contract outputs."""
    names = [o.name for o in model.graph.output]
    if names[:2] != ["boxes", "scores"]:
        raise ExportError(f"NMS: expected graph outputs ['boxes', 'scores', ...], got {names}")
    n, c = _dims(model, "scores")[1:3]
    if n is None or c is None:
        raise ExportError("NMS: the number of boxes and classes must be static (fixed input size)")
    graph = model.graph
    others = list(graph.output)[2:]
    del graph.output[:]
    for node in graph.node:  # free the contract names for the new outputs
        node.output[:] = [f"{x}_pre_nms" if x in ("boxes", "scores") else x for x in node.output]
        node.input[:] = [f"{x}_pre_nms" if x in ("boxes", "scores") else x for x in node.input]
    g = _Builder("nms", _opset(model))
    k = min(p.pre_nms_top_k, n)
    boxes, scores = _pre_top_k(g, "boxes_pre_nms", "scores_pre_nms", n, k)
    if form == "onnx":
        _nms(g, boxes, scores, OUTPUTS, p, (k, c))
    elif form == "efficient_nms":
        g.nodes.append(helper.make_node(
            EFFICIENT_NMS, [boxes, scores], list(OUTPUTS), name="nms/EfficientNMS_TRT", domain=TRT_DOMAIN,
            plugin_version="1", score_threshold=float(p.score_threshold), iou_threshold=float(p.iou_threshold),
            max_output_boxes=int(p.max_detections), background_class=-1, score_activation=0,
            class_agnostic=int(p.class_agnostic), box_coding=0))
        if not any(o.domain == TRT_DOMAIN for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid(TRT_DOMAIN, 1))
    else:
        raise ExportError(f"NMS: unknown form '{form}' (onnx, efficient_nms)")
    graph.node.extend(g.nodes)
    graph.initializer.extend(g.inits)
    k_out = p.max_detections
    graph.output.extend([
        helper.make_tensor_value_info("num_dets", TensorProto.INT32, ["batch", 1]),
        helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", k_out, 4]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", k_out]),
        helper.make_tensor_value_info("labels", TensorProto.INT32, ["batch", k_out]),
        *others,
    ])
    return model


# EfficientNMS_TRT v1 attributes (TensorRT plugin/efficientNMSPlugin): name -> (type, required)
_EFFICIENT_NMS_ATTRS = {
    "score_threshold": (float, True), "iou_threshold": (float, True), "max_output_boxes": (int, True),
    "background_class": (int, True), "score_activation": (int, True), "box_coding": (int, True),
    "class_agnostic": (int, False), "plugin_version": (str, False), "plugin_namespace": (str, False),
}


def efficient_nms_attributes(node: onnx.NodeProto) -> dict[str, Any]:
    """Read and validate an EfficientNMS_TRT node against the plugin's specification."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    where = f"{EFFICIENT_NMS} node '{node.name}'"
    unknown = sorted(set(attrs) - set(_EFFICIENT_NMS_ATTRS))
    if unknown:
        raise ExportError(f"{where}: unknown attribute(s) {unknown}")
    for key, (kind, required) in _EFFICIENT_NMS_ATTRS.items():
        if key not in attrs:
            if required:
                raise ExportError(f"{where}: required attribute '{key}' is missing")
            continue
        value = attrs[key].decode() if isinstance(attrs[key], bytes) else attrs[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ExportError(f"{where}: attribute '{key}' must be {kind.__name__}, got {type(value).__name__}")
        attrs[key] = value
    if attrs.get("plugin_version", "1") != "1":
        raise ExportError(f"{where}: plugin_version must be '1', got {attrs['plugin_version']!r}")
    if attrs["score_threshold"] < 0:
        raise ExportError(f"{where}: score_threshold must be >= 0")
    if not attrs["iou_threshold"] > 0:
        raise ExportError(f"{where}: iou_threshold must be > 0")
    if attrs["max_output_boxes"] <= 0:
        raise ExportError(f"{where}: max_output_boxes must be > 0")
    for key in ("score_activation", "class_agnostic", "box_coding"):
        if attrs.get(key, 0) not in (0, 1):
            raise ExportError(f"{where}: {key} must be 0 or 1, got {attrs[key]}")
    if len(node.input) != 2:
        raise ExportError(f"{where}: the fused box decoder (anchors input) is not supported; decode boxes in the graph")
    if len(node.output) != 4:
        raise ExportError(f"{where}: expected 4 outputs, got {len(node.output)}")
    return attrs


def lower_efficient_nms(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace every EfficientNMS_TRT node by the standard-ONNX form (for CPU verification)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    for node in list(graph.node):
        if node.op_type != EFFICIENT_NMS:
            continue
        a = efficient_nms_attributes(node)
        k, c = _dims(inferred, node.input[1])[1:3]
        if k is None or c is None:
            raise ExportError(f"{EFFICIENT_NMS} node '{node.name}': boxes and classes must be static to lower it")
        g = _Builder(f"{node.name}/lowered", _opset(model))
        boxes, scores = node.input
        if a["box_coding"] == 1:  # centre-size -> corners
            xy, wh = g.op("Split", [boxes, g.const([2, 2], np.int64)], outputs=2, axis=2)
            half = g.op("Mul", [wh, g.const(0.5, np.float32)])
            boxes = g.op("Concat", [g.op("Sub", [xy, half]), g.op("Add", [xy, half])], axis=2)
        if a["score_activation"]:
            scores = g.op("Sigmoid", [scores])
        if 0 <= a["background_class"] < c:
            keep = np.ones(c, np.float32)
            keep[a["background_class"]] = 0
            scores = g.op("Mul", [scores, g.const(keep, np.float32)])
        p = NMSParams(score_threshold=min(a["score_threshold"], 0.999999), iou_threshold=min(a["iou_threshold"], 1.0),
                      max_detections=a["max_output_boxes"], pre_nms_top_k=k, class_agnostic=bool(a.get("class_agnostic", 0)))
        _nms(g, boxes, scores, tuple(node.output), p, (k, c))
        pos = list(graph.node).index(node)
        graph.node.remove(node)
        for j, new in enumerate(g.nodes):
            graph.node.insert(pos + j, new)
        graph.initializer.extend(g.inits)
    if not any(n.domain == TRT_DOMAIN for n in graph.node):
        kept = [o for o in model.opset_import if o.domain != TRT_DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(kept)
    return model


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
