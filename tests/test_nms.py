"""The canonical NMS: numpy reference vs torchvision, and every ONNX lowering vs the reference."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import openvino as ov
import pytest
import torch
import torchvision
from onnx import TensorProto, helper

from edgevision.errors import ExportError
from edgevision.export.nms import EFFICIENT_NMS, append_nms, efficient_nms_attributes, lower_efficient_nms
from edgevision.ops.nms import NMSParams, nms_reference


def clustered(rng: np.random.Generator, b: int, n: int, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes in overlapping clusters (so NMS has work to do) and sparse class scores."""
    centres = rng.uniform(20, 300, size=(b, 12, 2))
    pick = rng.integers(0, 12, size=(b, n))
    xy = np.take_along_axis(centres, pick[..., None], axis=1) + rng.normal(0, 6, size=(b, n, 2))
    wh = rng.uniform(10, 60, size=(b, n, 2))
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=2).astype(np.float32)
    scores = (rng.uniform(0, 1, size=(b, n, c)) ** 6).astype(np.float32)
    return boxes, scores


def nms_graph(n: int, c: int, p: NMSParams, form: str, opset: int = 18) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["in_boxes"], ["boxes"]), helper.make_node("Identity", ["in_scores"], ["scores"])],
        "nms_test",
        [helper.make_tensor_value_info("in_boxes", TensorProto.FLOAT, ["batch", n, 4]),
         helper.make_tensor_value_info("in_scores", TensorProto.FLOAT, ["batch", n, c])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", n, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", n, c])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return append_nms(model, p, form)


def run_ort(model: onnx.ModelProto, boxes: np.ndarray, scores: np.ndarray) -> dict:
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"in_boxes": boxes, "in_scores": scores})))


def run_ov(model: onnx.ModelProto, boxes: np.ndarray, scores: np.ndarray) -> dict:
    core = ov.Core()
    compiled = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    res = compiled.create_infer_request().infer({"in_boxes": boxes, "in_scores": scores})
    names = [o.name for o in model.graph.output]
    return {n: np.asarray(res[port]) for n, port in zip(names, compiled.outputs)}


def assert_same(got: dict, ref: dict) -> None:
    np.testing.assert_array_equal(got["num_dets"], ref["num_dets"])
    np.testing.assert_array_equal(got["labels"], ref["labels"])
    np.testing.assert_allclose(got["scores"], ref["scores"], atol=1e-6)
    np.testing.assert_allclose(got["boxes"], ref["boxes"], atol=1e-4)


PARAMS = [
    NMSParams(score_threshold=0.05, iou_threshold=0.5, max_detections=50, pre_nms_top_k=200),
    NMSParams(score_threshold=0.3, iou_threshold=0.3, max_detections=20, pre_nms_top_k=1000),
    NMSParams(score_threshold=0.01, iou_threshold=0.7, max_detections=100, pre_nms_top_k=64, class_agnostic=True),
    NMSParams(score_threshold=0.9, iou_threshold=0.5, max_detections=10, pre_nms_top_k=300),  # few or none
]


def test_reference_matches_torchvision_batched_nms() -> None:
    rng = np.random.default_rng(0)
    boxes, scores = clustered(rng, 2, 300, 5)
    p = NMSParams(score_threshold=0.1, iou_threshold=0.5, max_detections=1000, pre_nms_top_k=300)
    ref = nms_reference(boxes, scores, p)
    for b in range(2):
        idx, cls = np.nonzero(scores[b] > p.score_threshold)
        keep = torchvision.ops.batched_nms(torch.from_numpy(boxes[b][idx]), torch.from_numpy(scores[b][idx, cls]),
                                           torch.from_numpy(cls), p.iou_threshold).numpy()
        n = int(ref["num_dets"][b, 0])
        assert n == len(keep)
        np.testing.assert_array_equal(ref["labels"][b, :n], cls[keep])
        np.testing.assert_allclose(ref["boxes"][b, :n], boxes[b][idx[keep]])


@pytest.mark.parametrize("p", PARAMS, ids=lambda p: f"s{p.score_threshold}-i{p.iou_threshold}-k{p.max_detections}-agn{int(p.class_agnostic)}")
def test_onnx_form_matches_reference_in_ort_and_openvino(p: NMSParams) -> None:
    rng = np.random.default_rng(1)
    boxes, scores = clustered(rng, 3, 400, 6)
    ref = nms_reference(boxes, scores, p)
    model = nms_graph(400, 6, p, "onnx")
    assert_same(run_ort(model, boxes, scores), ref)
    assert_same(run_ov(model, boxes, scores), ref)
    assert ref["num_dets"].dtype == np.int32 and ref["num_dets"].shape == (3, 1)


@pytest.mark.parametrize("p", PARAMS[:3], ids=["default", "strict", "agnostic"])
def test_efficient_nms_form_lowered_matches_reference(p: NMSParams) -> None:
    rng = np.random.default_rng(2)
    boxes, scores = clustered(rng, 2, 300, 4)
    model = nms_graph(300, 4, p, "efficient_nms")
    node = next(n for n in model.graph.node if n.op_type == EFFICIENT_NMS)
    attrs = efficient_nms_attributes(node)
    assert attrs["max_output_boxes"] == p.max_detections and attrs["class_agnostic"] == int(p.class_agnostic)
    assert attrs["plugin_version"] == "1" and attrs["background_class"] == -1 and node.domain == "TRT"
    lowered = lower_efficient_nms(model)
    assert not any(n.op_type == EFFICIENT_NMS for n in lowered.graph.node)
    assert_same(run_ort(lowered, boxes, scores), nms_reference(boxes, scores, p))


def test_lowering_honours_background_class_and_sigmoid() -> None:
    rng = np.random.default_rng(3)
    boxes, scores = clustered(rng, 1, 200, 3)
    logits = np.log(scores / (1 - scores + 1e-7) + 1e-7).astype(np.float32)
    p = NMSParams(score_threshold=0.2, iou_threshold=0.5, max_detections=30, pre_nms_top_k=200)
    model = nms_graph(200, 3, p, "efficient_nms")
    node = next(n for n in model.graph.node if n.op_type == EFFICIENT_NMS)
    for a in node.attribute:
        if a.name == "background_class":
            a.i = 0
        if a.name == "score_activation":
            a.i = 1
    got = run_ort(lower_efficient_nms(model), boxes, logits)
    no_bg = scores.copy()
    no_bg[..., 0] = 0
    ref = nms_reference(boxes, no_bg, p)
    np.testing.assert_array_equal(got["num_dets"], ref["num_dets"])
    assert (got["labels"][0, : int(got["num_dets"][0, 0])] != 0).all()
    np.testing.assert_allclose(got["scores"], ref["scores"], atol=1e-4)


@pytest.mark.parametrize("attr,value,message", [
    ("iou_threshold", 0.0, "iou_threshold must be > 0"),
    ("max_output_boxes", 0, "max_output_boxes must be > 0"),
    ("box_coding", 2, "box_coding must be 0 or 1"),
    ("score_threshold", 1, "must be float"),
])
def test_efficient_nms_attributes_are_validated(attr: str, value: object, message: str) -> None:
    model = nms_graph(50, 2, PARAMS[0], "efficient_nms")
    node = next(n for n in model.graph.node if n.op_type == EFFICIENT_NMS)
    kept = [a for a in node.attribute if a.name != attr]
    del node.attribute[:]
    node.attribute.extend(kept + [helper.make_attribute(attr, value)])
    with pytest.raises(ExportError, match=message):
        efficient_nms_attributes(node)


def test_missing_required_attribute_and_opset17() -> None:
    model = nms_graph(50, 2, PARAMS[0], "efficient_nms")
    node = next(n for n in model.graph.node if n.op_type == EFFICIENT_NMS)
    kept = [a for a in node.attribute if a.name != "score_activation"]
    del node.attribute[:]
    node.attribute.extend(kept)
    with pytest.raises(ExportError, match="required attribute 'score_activation' is missing"):
        efficient_nms_attributes(node)
    rng = np.random.default_rng(4)
    boxes, scores = clustered(rng, 2, 50, 2)
    assert_same(run_ort(nms_graph(50, 2, PARAMS[0], "onnx", opset=17), boxes, scores), nms_reference(boxes, scores, PARAMS[0]))


def test_params_are_validated() -> None:
    for bad in (dict(score_threshold=1.5), dict(iou_threshold=0), dict(max_detections=0), dict(pre_nms_top_k=-1)):
        with pytest.raises(ValueError):
            NMSParams(**bad)
