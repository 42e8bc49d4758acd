"""The TensorRT target: the TensorRT-bound graph and builder settings, verified on CPU by running
it in ONNX Runtime with the plugin lowered; real engine build and run where TensorRT is present."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import edgevision
from edgevision.backends.tensorrt import installed_version
from edgevision.builders.tensorrt import choose_nms_form
from edgevision.data import ShapesDataset
from edgevision.errors import BackendError, BackendNotInstalled
from edgevision.export.nms import EFFICIENT_NMS, efficient_nms_attributes

TRT_TARGETS = [{"backend": "onnxruntime"}, {"backend": "tensorrt"}]


@pytest.fixture(scope="module")
def trt_artifact(compiled):  # noqa: ANN001, ANN201
    return compiled("ssdlite_trt", "detection", "ssdlite320_mobilenet_v3_large", 160,
                    export={"nms": {"score_threshold": 0.3}}, targets=TRT_TARGETS)


def test_tensorrt_graph_carries_efficient_nms_and_is_verified(trt_artifact) -> None:  # noqa: ANN001
    manifest, root = trt_artifact
    v = {x["name"]: x for x in manifest["variants"]}["tensorrt-fp32"]
    assert v["status"] == "passed" and v["device"] == "cuda"
    assert v["parity"]["matched"] == 1.0 and v["parity"]["detections"] > 100
    model = onnx.load(str(root / "tensorrt-fp32" / "model.onnx"))
    nodes = [n for n in model.graph.node if n.op_type == EFFICIENT_NMS]
    assert len(nodes) == 1 and not any(n.op_type == "NonMaxSuppression" for n in model.graph.node)
    attrs = efficient_nms_attributes(nodes[0])
    nms = manifest["nms"]
    assert attrs["max_output_boxes"] == nms["max_detections"] and attrs["class_agnostic"] == 0
    assert attrs["score_threshold"] == pytest.approx(nms["score_threshold"]) and attrs["iou_threshold"] == pytest.approx(nms["iou_threshold"])
    assert [o.name for o in model.graph.output] == ["num_dets", "boxes", "scores", "labels"]
    build = json.loads((root / "tensorrt-fp32" / "build.json").read_text())
    assert build["strongly_typed"] and build["profile"]["images"] == {"min": [1, 3, 160, 160], "opt": [1, 3, 160, 160],
                                                                        "max": [8, 3, 160, 160]}
    if installed_version() is None:
        assert "CPU emulation" in v["verified_with"] and not (root / "tensorrt-fp32" / "model.engine").exists()
        assert v.get("latency") is None  # emulation timings would mean nothing


def test_tensorrt_variant_needs_tensorrt_to_load(trt_artifact) -> None:  # noqa: ANN001
    if installed_version() is not None:
        pytest.skip("TensorRT is installed here")
    _, root = trt_artifact
    with pytest.raises(BackendNotInstalled, match="backend 'tensorrt' needs the Python package 'tensorrt'"):
        edgevision.load(root / "tensorrt-fp32")
    with edgevision.load(root) as model:  # the artifact falls back to a variant that runs here
        assert model.variant.backend == "onnxruntime"


@pytest.mark.slow
def test_onnx_nms_form_on_request(compiled) -> None:  # noqa: ANN001
    manifest, root = compiled("ssdlite_trt_onnx", "detection", "ssdlite320_mobilenet_v3_large", 160,
                              export={"nms": {"score_threshold": 0.3}},
                              targets=[{"backend": "tensorrt", "options": {"nms": "onnx", "max_batch": 4}}])
    v = manifest["variants"][0]
    assert v["status"] == "passed" and v["settings"]["nms_form"] == "onnx"
    ops = {n.op_type for n in onnx.load(str(root / "tensorrt-fp32" / "model.onnx")).graph.node}
    assert "NonMaxSuppression" in ops and EFFICIENT_NMS not in ops
    assert v["settings"]["build"]["profile"]["images"]["max"][0] == 4
    # one batch limit: the variant records its engine's, and predict() splits a longer list to fit it
    info = json.loads((root / "tensorrt-fp32" / "variant.json").read_text())
    assert manifest["input"]["max_batch"] == 64 and info["input"]["max_batch"] == 4
    from edgevision.artifact import read_variant
    from edgevision.builders import open_runner
    from edgevision.data import ShapesDataset
    from edgevision.runtime.predictor import Predictor

    found = read_variant(root / "tensorrt-fp32")
    runner, _ = open_runner(found.variant, root / "tensorrt-fp32", threads=2)
    batches: list[int] = []
    infer = runner.infer
    runner.infer = lambda feeds: (batches.append(len(feeds["images"])), infer(feeds))[1]
    with Predictor(found.info, runner, found.variant) as model:
        results = model.predict([ShapesDataset(1, seed=i, size=(120, 160))[0].image for i in range(10)])
    assert len(results) == 10 and batches == [4, 4, 2]


def test_nms_form_defaults_by_tensorrt_version() -> None:
    assert choose_nms_form(None, None)[0] == "efficient_nms"
    assert choose_nms_form(None, (10, 3))[0] == "efficient_nms"  # JetPack 6
    assert choose_nms_form(None, (11, 4))[0] == "onnx"
    assert choose_nms_form("onnx", (10, 3)) == ("onnx", "set in the recipe (targets[].options.nms)")
    with pytest.raises(BackendError, match="options.nms must be one of efficient_nms, onnx"):
        choose_nms_form("batched", None)


@pytest.mark.slow
def test_bad_tensorrt_settings_fail_the_variant(compiled) -> None:  # noqa: ANN001
    from edgevision.errors import RecipeError, VerificationFailed

    with pytest.raises(RecipeError, match=r"targets\[0\]: backend 'tensorrt' has no device 'cpu' \(its devices: cuda"):
        compiled("trt_cpu", "classification", "mobilenet_v3_small", 64,
                 targets=[{"backend": "tensorrt", "device": "cpu"}, {"backend": "onnxruntime"}])
    with pytest.raises(VerificationFailed) as e:  # a value only the builder checks: that variant fails, not the compile
        compiled("trt_bad", "detection", "ssdlite320_mobilenet_v3_large", 160,
                 targets=[{"backend": "tensorrt", "options": {"nms": "bogus"}}, {"backend": "onnxruntime"}])
    variants = {v["name"]: v for v in e.value.manifest["variants"]}
    assert variants["tensorrt-fp32"]["status"] == "error" and "options.nms must be one of" in variants["tensorrt-fp32"]["reasons"][0]
    assert variants["onnxruntime-fp32"]["status"] == "passed"


def test_engine_build_and_run_on_a_gpu(trt_artifact, tmp_path) -> None:  # noqa: ANN001
    pytest.importorskip("tensorrt")
    pytest.importorskip("cuda.bindings.runtime")
    _, root = trt_artifact
    import shutil

    shutil.copytree(root / "tensorrt-fp32", tmp_path / "v")
    image = ShapesDataset(1, seed=5, size=(120, 200))[0].image
    with edgevision.load(tmp_path / "v") as trt_model, edgevision.load(root / "onnxruntime-fp32") as ort_model:
        a, b = trt_model.predict(image), ort_model.predict(image)
    assert len(a) == len(b) and np.abs(np.sort(a.scores) - np.sort(b.scores)).max() < 1e-3


def test_ultralytics_detector_in_the_tensorrt_form(compiled) -> None:  # noqa: ANN001
    """An Ultralytics YOLO takes the same TensorRT path as torchvision's detectors: EfficientNMS_TRT
    on the decoded boxes and best-class scores, verified against PyTorch (CPU emulation here)."""
    manifest, root = compiled("yolo_trt", "detection", "ultralytics:yolov8n.yaml", 160, targets=TRT_TARGETS)
    v = {x["name"]: x for x in manifest["variants"]}["tensorrt-fp32"]
    assert v["status"] == "passed" and v["parity"]["matched"] == 1.0 and v["parity"]["detections"] > 50
    model = onnx.load(str(root / "tensorrt-fp32" / "model.onnx"))
    assert sum(n.op_type == EFFICIENT_NMS for n in model.graph.node) == 1
    assert manifest["nms"]["score_threshold"] == pytest.approx(0.25) and manifest["nms"]["max_detections"] == 300
