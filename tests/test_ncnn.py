"""ncnn: variants built by pnnx from the verified ONNX, run by ncnn's Python bindings, judged against PyTorch
like every backend (parity at compile time; mAP against the trained quickstart detector's), and refused
with the reason where ncnn cannot carry a model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import edgevision
from edgevision.builders import BuildContext
from edgevision.builders import ncnn as ncnn_builder
from edgevision.errors import BackendError, InputError, RecipeError
from edgevision.recipe import parse_recipe

from conftest import recipe_dict


def test_segmentation_with_in_graph_argmax(unet_artifact) -> None:  # noqa: ANN001
    """ncnn has no ArgMax: the runner makes the labels from the logits, the same as the graph's."""
    manifest, root = unet_artifact
    variants = {v["name"]: v for v in manifest["variants"]}
    fp32 = variants["ncnn-fp32"]
    assert fp32["status"] == "passed" and fp32["settings"]["argmax"] == [{"name": "labels", "of": "logits", "dtype": "int32"}]
    assert fp32["parity"]["max_abs_diff"] < 1e-3 and fp32["parity"]["labels_agreement"] > 0.999
    assert "ArgMax" not in (root / "ncnn-fp32" / "model.ncnn.param").read_text()
    with edgevision.load(root / "ncnn-fp32", threads=1) as ncnn_model, edgevision.load(root / "onnxruntime-fp32") as ort:
        rng = np.random.default_rng(3)
        images = [rng.integers(0, 255, (50 + 20 * i, 90, 3), dtype=np.uint8) for i in range(3)]  # a batch of 3
        ours, theirs = ncnn_model.predict(images), ort.predict(images)
        for a, b in zip(ours, theirs):
            assert a.label_map.shape == b.label_map.shape and (a.label_map == b.label_map).mean() > 0.999
        assert all(len(np.unique(r.label_map)) >= 2 for r in theirs)  # more than one class: the labels compared something


def test_classifier_fp32_and_fp16(classifier_artifact) -> None:  # noqa: ANN001
    manifest, root = classifier_artifact
    variants = {v["name"]: v for v in manifest["variants"]}
    assert all(v["status"] == "passed" for v in variants.values()), [(v["name"], v["reasons"]) for v in variants.values()]
    assert variants["ncnn-fp32"]["parity"]["max_abs_diff"] < 1e-4 < variants["ncnn-fp16"]["parity"]["max_abs_diff"]
    assert variants["ncnn-fp16"]["parity"]["min_cosine"] > 0.999
    weights = {p: (root / f"ncnn-{p}" / "model.ncnn.bin").stat().st_size for p in ("fp32", "fp16")}
    assert weights["fp16"] < 0.6 * weights["fp32"]  # fp16 weights are stored as fp16
    model = edgevision.load(root / "ncnn-fp32")
    model.close()
    with pytest.raises(InputError, match="closed"):
        model.predict(np.zeros((64, 64, 3), np.uint8))


def test_trained_detector_keeps_its_map(detector: Path, tmp_path: Path) -> None:
    """The trained quickstart detector on ncnn, with the NMS finished on the host: every detection of
    PyTorch's found (parity) and the mAP on 200 held-out images within the accuracy gate."""
    manifest = json.loads((detector / "manifest.json").read_text())
    variants = {v["name"]: v for v in manifest["variants"]}
    base = manifest["baseline"]["accuracy"]["map"]
    for name in ("ncnn-fp32", "ncnn-fp16"):
        v = variants[name]
        assert v["status"] == "passed", v["reasons"]
        assert v["settings"]["host_postprocessing"] == "canonical NMS (numpy)" and v["settings"]["nms"]
        assert v["parity"]["detections"] > 0 and v["parity"]["matched"] >= 0.99
        assert abs(v["accuracy"]["map"] - base) <= 0.01, (name, v["accuracy"]["map"], base)
    assert variants["ncnn-fp32"]["parity"]["max_score_diff"] < 1e-3
    photo = Path(__import__("matplotlib").get_data_path()) / "sample_data" / "grace_hopper.jpg"
    with edgevision.load(detector, "ncnn-fp32") as ncnn_model, edgevision.load(detector, "onnxruntime-fp32") as ort:
        from edgevision.data import ShapesDataset

        scene = ShapesDataset(count=1, size=(240, 320), seed=11, max_objects=4)[0].image
        a, b = ncnn_model.predict([scene, str(photo)]), ort.predict([scene, str(photo)])
        assert len(b[0]) >= 2
        for x, y in zip(a, b):
            assert len(x) == len(y) and (x.class_ids == y.class_ids).all() and np.abs(x.boxes - y.boxes).max() < 0.05


def test_int8_and_r_cnn_tasks_are_refused_at_recipe_load(tmp_path: Path) -> None:
    base = recipe_dict("r", "detection", "yolo", 64, tmp_path)
    with pytest.raises(RecipeError, match=r"targets\[0\]: backend 'ncnn' does not build precision 'int8' \(ncnn's INT8 needs its ncnn2table"):
        parse_recipe({**base, "targets": [{"backend": "ncnn", "precision": "int8"}], "calibration": {"source": "shapes"}})
    for task in ("instance_segmentation", "keypoints"):
        data = recipe_dict("r", task, "maskrcnn_resnet50_fpn", 64, tmp_path, targets=[{"backend": "ncnn"}])
        with pytest.raises(RecipeError, match=rf"targets\[0\]: backend 'ncnn' cannot carry task '{task}': its graphs keep the NMS inside"):
            parse_recipe(data)
    with pytest.raises(RecipeError, match=r"backend 'ncnn' has no device 'gpu' \(its devices: cpu\)"):
        parse_recipe({**base, "targets": [{"backend": "ncnn", "device": "gpu"}]})


def _graph(op: str, tmp_path: Path) -> Path:
    """A one-op graph using `op` (with what it needs), as a detector's post-processing would."""
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 8])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])
    k = helper.make_tensor("k", TensorProto.INT64, [1], [2])
    node = helper.make_node("TopK", ["images", "k"], ["logits", "idx"], axis=1) if op == "TopK" else \
        helper.make_node(op, ["images"], ["logits"])
    model = helper.make_model(helper.make_graph([node], "g", [x], [y], [k]), opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    path = tmp_path / f"{op}.onnx"
    onnx.save_model(model, str(path))
    return path


@pytest.mark.parametrize("op", ["TopK", "NonZero"])
def test_a_graph_op_ncnn_lacks_is_named(op: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(BackendError, match=rf"ncnn cannot run this graph: op {op} \("):
        ncnn_builder.build(_graph(op, tmp_path), out, "fp32", "cpu", {}, BuildContext())
    assert not any(out.iterdir())  # refused before pnnx wrote anything


def _reduction(op: str, axis: int, keepdims: int, tmp_path: Path) -> tuple[Path, tuple[int, ...]]:
    """x [batch,4,16,7] -> op over one axis (the axes as an input, as opset 18 writes them)."""
    from onnx import numpy_helper

    shape = [4, 16, 7]
    out = [1 if i == axis else d for i, d in enumerate(shape, 1)] if keepdims else \
        [d for i, d in enumerate(shape, 1) if i != axis]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *shape])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", *out])
    node = helper.make_node(op, ["x", "axes"], ["y"], keepdims=keepdims)
    axes = numpy_helper.from_array(np.array([axis], np.int64), "axes")
    model = helper.make_model(helper.make_graph([node], "g", [x], [y], [axes]), opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    path = tmp_path / f"{op}-{axis}-{keepdims}.onnx"
    onnx.save_model(model, str(path))
    return path, tuple(out)


@pytest.mark.parametrize(("op", "axis", "keepdims"), [("ReduceSum", 2, 0), ("ReduceMean", 3, 1), ("ReduceSum", 1, 1)])
def test_a_one_axis_reduction_reduces(op: str, axis: int, keepdims: int, tmp_path: Path) -> None:
    """pnnx drops the axis of these (its Reduction then reduces nothing); the builder rewrites them first."""
    from edgevision.backends.ncnn import Runner

    path, shape = _reduction(op, axis, keepdims, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    settings = ncnn_builder.build(path, out, "fp32", "cpu", {}, BuildContext())
    x = np.random.default_rng(0).random((2, 4, 16, 7), dtype=np.float32)
    got = Runner({"param": out / "model.ncnn.param", "weights": out / "model.ncnn.bin"}, settings).infer({"x": x})["y"]
    want = (np.sum if op == "ReduceSum" else np.mean)(x, axis=axis, keepdims=bool(keepdims))
    assert got.shape == (2, *shape) == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_one_axis_reduction_it_cannot_rewrite_is_named(tmp_path: Path) -> None:
    path, _ = _reduction("ReduceMax", 2, 0, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(BackendError, match="pnnx converts ReduceMax .* over one axis without its axis"):
        ncnn_builder.build(path, out, "fp32", "cpu", {}, BuildContext())
    assert not any(out.iterdir())


def test_a_damaged_param_file_is_one_clear_error(unet_artifact, tmp_path: Path) -> None:  # noqa: ANN001
    _, root = unet_artifact
    variant = tmp_path / "ncnn-fp32"
    shutil.copytree(root / "ncnn-fp32", variant)
    (variant / "model.ncnn.param").write_text("7767517\n1 1\nNoSuchLayer l0 0 1 in0\n")
    with pytest.raises(edgevision.EdgeVisionError, match="ncnn could not load"):
        edgevision.load(variant, verify=False)


def test_threads_share_one_net(unet_artifact) -> None:  # noqa: ANN001
    """predict from several threads at once: each call its own extractor, results as from one thread."""
    from concurrent.futures import ThreadPoolExecutor

    _, root = unet_artifact
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(6)]
    with edgevision.load(root / "ncnn-fp32", streams=3) as model:
        alone = [model.predict(im).label_map for im in images]
        with ThreadPoolExecutor(3) as pool:
            together = list(pool.map(lambda im: model.predict(im).label_map, images * 2))
    for i, labels in enumerate(together):
        assert (labels == alone[i % len(images)]).all()
