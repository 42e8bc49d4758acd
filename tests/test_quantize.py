"""INT8 / FP16: calibration sets, caching, where quantization stops, TensorRT's Q/DQ rules, and
the accuracy gate on a model trained here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from edgevision.data import ShapesDataset
from edgevision.errors import DataError, VerificationFailed
from edgevision.quantize.calibration import load_calibration, make_calibration_set
from edgevision.quantize.graph import tail_nodes
from edgevision.quantize.onnx_qdq import check_tensorrt_qdq, quantize_qdq, tail_consumers_of_qdq, to_fp16
from edgevision.recipe import CalibrationSpec, parse_recipe
from edgevision.records import InputSpec
from edgevision.runtime.preprocess import preprocess
from conftest import Quiet, recipe_dict

SPEC = InputSpec(size=(64, 64), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), resize="letterbox")
SSD_EXTRA = {"export": {"nms": {"score_threshold": 0.3}}}  # the session's SSDlite artifact (test_detection)


def test_folder_calibration_skips_unreadable_and_preprocesses_like_the_runtime(tmp_path: Path) -> None:
    shapes = ShapesDataset(5, seed=2, size=(50, 80))
    for i in range(5):
        Image.fromarray(shapes[i].image).save(tmp_path / f"{i}.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    logs: list[str] = []
    calib = load_calibration(CalibrationSpec(source="folder", path=tmp_path, count=300), SPEC, logs.append)
    assert len(calib) == 5 and len(calib.skipped) == 1 and "broken.jpg" in calib.skipped[0]
    assert any("skipped 1 unreadable" in m for m in logs) and any("< 100" in m for m in logs)  # few images: warned
    np.testing.assert_array_equal(calib.inputs[0], preprocess([shapes[0].image], SPEC)[0])
    assert calib.inputs[0].shape == (1, 3, 64, 64)


def test_coco_and_shapes_calibration_sample_by_seed(tmp_path: Path) -> None:
    ann = ShapesDataset(12, seed=4, size=(64, 64)).write(tmp_path / "coco")
    a = load_calibration(CalibrationSpec(source="coco", path=ann, count=5, seed=1), SPEC, print)
    b = load_calibration(CalibrationSpec(source="coco", path=ann, count=5, seed=1), SPEC, print)
    c = load_calibration(CalibrationSpec(source="coco", path=ann, count=5, seed=2), SPEC, print)
    assert len(a) == 5 and a.digest == b.digest != c.digest
    s = load_calibration(CalibrationSpec(source="shapes", count=3, seed=9), SPEC, print)
    np.testing.assert_array_equal(s.inputs[2], preprocess([ShapesDataset(3, seed=9, size=(64, 64))[2].image], SPEC)[0])


def test_bad_calibration_sources_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"calibration.path: .*nowhere does not exist"):
        load_calibration(CalibrationSpec(source="folder", path=tmp_path / "nowhere"), SPEC, print)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_calibration(CalibrationSpec(source="folder", path=tmp_path / "empty"), SPEC, print)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="no readable images"):
        load_calibration(CalibrationSpec(source="folder", path=tmp_path / "bad"), SPEC, print)


def test_int8_target_without_images_is_a_recipe_error(tmp_path: Path) -> None:
    from edgevision.errors import RecipeError

    data = recipe_dict("q", "segmentation", "unet", 64, tmp_path, targets=[{"backend": "onnxruntime", "precision": "int8"}])
    with pytest.raises(RecipeError, match="calibration: int8 targets need calibration images"):
        parse_recipe(data)
    data["data"]["train"] = {"source": "shapes", "count": 1000}
    assert parse_recipe(data).calibration_source.count == 300  # default: 300 images of data.train


def test_calibration_make_samples_copies_and_refuses_to_overwrite(tmp_path: Path) -> None:
    frames = tmp_path / "frames" / "day1"
    frames.mkdir(parents=True)
    shapes = ShapesDataset(8, seed=0, size=(40, 40))
    for i in range(8):
        Image.fromarray(shapes[i].image).save(frames / f"f{i}.png")
    (frames / "bad.jpg").write_bytes(b"x")
    out = tmp_path / "set"
    info = make_calibration_set(out, str(tmp_path / "frames"), count=6, seed=3)
    meta = json.loads((out / "calibration.json").read_text())
    assert info["images"] + info["skipped"] == 6 and meta["images"] == len(list(out.glob("*.png")))
    for entry in meta["files"]:  # copied byte for byte
        assert (out / entry["file"]).read_bytes() == Path(entry["from"]).read_bytes()
    with pytest.raises(DataError, match="already exists"):
        make_calibration_set(out, str(tmp_path / "frames"), count=6)
    assert not list(tmp_path.glob(".set.tmp*"))


@pytest.fixture(scope="module")
def ssd(compiled):  # noqa: ANN001, ANN201
    _, root = compiled("ssdlite", "detection", "ssdlite320_mobilenet_v3_large", 160, **SSD_EXTRA)
    spec = InputSpec(size=(160, 160), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    calib = load_calibration(CalibrationSpec(source="shapes", count=8, seed=3), spec, lambda m: None)
    return onnx.load(str(root / "model.onnx")), calib


def test_post_processing_tail_is_left_in_float(ssd, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)  # the statistics cache lives under ./build/.cache
    model, calib = ssd
    tail = set(tail_nodes(model))
    ops = {n.op_type for n in model.graph.node if n.name in tail}
    assert {"NonMaxSuppression", "TopK", "Exp"} <= ops and "Conv" not in ops  # decoding + NMS, no layer
    for profile in ("onnxruntime", "tensorrt"):
        q, info = quantize_qdq(model, calib, profile)
        assert info["quantized_nodes"] > 50
        assert tail_consumers_of_qdq(q) == []
        qtail = {n.name for n in q.graph.node if n.name in tail}
        assert qtail == tail  # every tail node is still there, reading float tensors
    float_conv = {n.name for n in model.graph.node if n.op_type == "Conv"}
    dq_out = {o for n in q.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert all(n.input[1] in dq_out for n in q.graph.node if n.name in float_conv)  # every layer quantized


def test_openvino_ignored_scope_covers_decode_and_nms(ssd) -> None:  # noqa: ANN001
    import openvino as ov

    from edgevision.quantize.nncf_ov import quantize_openvino, tail_ops

    model, calib = ssd
    ov_model = ov.Core().read_model(model.SerializeToString(), b"")
    tail = set(tail_ops(ov_model))
    q, info = quantize_openvino(ov_model, calib, lambda m: None)
    types = {op.get_friendly_name(): op.get_type_name() for op in q.get_ordered_ops()}
    assert "NonMaxSuppression" in {types[n] for n in tail if n in types}
    assert info["fake_quantize_ops"] > 50 and info["float_tail_nodes"] == len(tail)
    for op in q.get_ordered_ops():
        if op.get_friendly_name() in tail and op.get_type_name() != "ShapeOf":  # ShapeOf reads only the shape
            assert all(v.get_node().get_type_name() != "FakeQuantize" for v in op.input_values()), op.get_friendly_name()


def test_calibration_statistics_are_cached_by_model_data_and_method(ssd, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)
    model, calib = ssd
    first, a = quantize_qdq(model, calib, "tensorrt")
    second, b = quantize_qdq(model, calib, "tensorrt")
    assert not a["calibration_cached"] and b["calibration_cached"]
    assert first.SerializeToString() == second.SerializeToString()
    calib.method = "percentile"
    try:
        _, c = quantize_qdq(model, calib, "tensorrt")
    finally:
        calib.method = "minmax"
    assert not c["calibration_cached"] and len(list((tmp_path / "build/.cache/calibration/onnx").iterdir())) == 2


def test_tensorrt_checker_enforces_symmetric_int8(ssd, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)
    model, calib = ssd
    q, _ = quantize_qdq(model, calib, "tensorrt")
    assert check_tensorrt_qdq(q) == []
    qn = next(n for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "images")
    zp = next(i for i in q.graph.initializer if i.name == qn.input[2])
    zp.CopyFrom(onnx.numpy_helper.from_array(np.array(3, dtype=np.int8), zp.name))
    problems = check_tensorrt_qdq(q)
    assert any(qn.name in p and "zero point [3] is not 0" in p for p in problems)
    ort_q, _ = quantize_qdq(model, calib, "onnxruntime")  # uint8 asymmetric activations: not for TensorRT
    assert any("TensorRT needs int8" in p for p in check_tensorrt_qdq(ort_q))


def test_fp16_onnx_keeps_the_tail_in_fp32_and_runs(ssd) -> None:  # noqa: ANN001
    import onnxruntime as ort

    model, calib = ssd
    half, info = to_fp16(model)
    weights = {i.name: i.data_type for i in half.graph.initializer}
    convs = [n for n in half.graph.node if n.op_type == "Conv"]
    assert convs and all(weights.get(n.input[1]) == onnx.TensorProto.FLOAT16 for n in convs)
    assert info["fp16_nodes"] > len(convs)
    runs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]) for m in (model, half)]
    a, b = (r.run(None, {"images": calib.inputs[0]}) for r in runs)
    assert b[1].dtype == np.float32 and int(a[0][0, 0]) > 0
    np.testing.assert_allclose(b[2][0, :3], a[2][0, :3], atol=2e-2)  # top scores


@pytest.fixture(scope="module")
def trained_unet(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A small U-Net trained on shapes for a few epochs: accuracy numbers mean something."""
    from edgevision import api

    root = tmp_path_factory.mktemp("trained")
    data = recipe_dict("gate", "segmentation", "unet", 64, root, model={"kwargs": {"width": 8, "depth": 3}})
    data["model"]["checkpoint"] = str(root / "unet.pt")
    data["data"] = {"train": {"source": "shapes", "count": 400, "seed": 0}, "val": {"source": "shapes", "count": 40, "seed": 1}}
    data["train"] = {"epochs": 6, "batch": 16, "lr": 0.01}
    api.train(parse_recipe(data), reporter=Quiet())
    return data


def _compile(data: dict, **changes: dict) -> dict:
    from edgevision import api

    data = json.loads(json.dumps(data))
    for key, value in changes.items():
        data[key] = value
    try:
        return api.compile(parse_recipe(data), reporter=Quiet(), threads=2)
    except VerificationFailed as e:
        return e.manifest


def _clipping_calibration(folder: Path) -> dict:
    """A calibration set that makes INT8 lose accuracy by construction, on any CPU: mid-gray
    images (the mean, 0 after normalisation) with +-3 levels of noise. Every activation range is
    measured on inputs within +-0.05 of zero, so the quantized model clips every real image to a
    nearly uniform gray and cannot tell the shapes apart: it predicts about the same map for every
    image, whatever the host's arithmetic or the brief training."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    for i in range(4):
        Image.fromarray((128 + rng.integers(-3, 4, size=(64, 64, 3))).astype(np.uint8)).save(folder / f"gray{i}.png")
    return {"source": "folder", "path": str(folder), "count": 4}


# Only the accuracy gate decides in these tests: parity limits that any output passes.
GATE_ONLY = {"int8": {"min_cosine": 0.0, "min_agreement": 0.0}}


def test_accuracy_gate_fails_a_variant_over_its_limit_and_passes_one_under_it(trained_unet, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)
    targets = [{"backend": "onnxruntime", "precision": "int8"}, {"backend": "openvino", "precision": "int8"}]
    calibration = _clipping_calibration(tmp_path / "dark")
    strict = _compile(trained_unet, targets=targets, calibration=calibration,
                      verify={"images": 4, "timing_rounds": 0, "max_drop": {"miou": 0.0}, "tolerances": GATE_ONLY})
    base = strict["baseline"]["accuracy"]["miou"]
    assert base > 0.3  # trained (random weights: ~0.1)
    drops = []
    for v in strict["variants"]:
        assert v["accuracy_drop"] == pytest.approx(100 * (base - v["accuracy"]["miou"]), abs=1e-3)
        assert v["accuracy_drop"] > 5.0 and v["status"] == "failed"  # every input clipped to gray: a real drop
        assert v["reasons"] and all("accuracy gate: mIoU" in r and "verify.max_drop.miou: 0.0" in r for r in v["reasons"])
        q = v["settings"]["quantization"]
        assert q["calibration"]["images"] == 4 and q["quantized_nodes"] > 5
        drops.append(v["accuracy_drop"])
    assert not Path(trained_unet["output"]).exists()  # nothing committed
    # The same variants (cached statistics: the same graphs) under a limit just above the drop measured.
    limit = round(max(drops) + 1.0, 2)
    lenient = _compile(trained_unet, targets=targets, calibration=calibration,
                       verify={"images": 4, "timing_rounds": 0, "max_drop": {"miou": limit}, "tolerances": GATE_ONLY})
    assert [v["status"] for v in lenient["variants"]] == ["passed", "passed"]
    for before, after in zip(strict["variants"], lenient["variants"]):
        assert after["accuracy_drop"] == pytest.approx(before["accuracy_drop"], abs=0.5) and after["accuracy_drop"] <= limit
    assert Path(trained_unet["output"]).is_dir()


def test_accuracy_control_keeps_sensitive_layers_in_float(trained_unet, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)
    manifest = _compile(trained_unet, targets=[{"backend": "onnxruntime", "precision": "int8"}],
                        calibration={**_clipping_calibration(tmp_path / "dark"), "accuracy_control": True},
                        verify={"images": 4, "timing_rounds": 0, "max_drop": {"miou": 0.0}, "tolerances": GATE_ONLY})
    v = manifest["variants"][0]
    control = v["settings"]["quantization"]["accuracy_control"]
    kept = v["settings"]["quantization"]["kept_float"]
    base = manifest["baseline"]["accuracy"]["miou"]
    trials = control["trials"]
    assert len(trials) >= 2 and trials[0]["kept_float"] == 0 and base - trials[0]["metric"] > 0.05  # the drop is certain
    assert [t["kept_float"] for t in trials[1:]] == [2 ** i for i in range(len(trials) - 1)]  # 1, 2, 4, ... layers
    best = max(t["metric"] for t in trials)  # the best trial is what shipped (metrics are rounded: ties possible)
    assert len(kept) in {t["kept_float"] for t in trials if abs(t["metric"] - best) <= 1e-5}
    assert control["recovered"] == (base - best <= 1e-5)
    assert v["status"] == ("passed" if control["recovered"] else "failed")
    root = Path(trained_unet["output"]).parent / ("gate" if v["status"] == "passed" else "gate.failed")
    graph = onnx.load(str(root / "onnxruntime-int8" / "model.onnx")).graph
    consts = {i.name for i in graph.initializer}
    for node in graph.node:
        if node.name in kept:  # float weights, straight from an initializer
            assert node.op_type == "Conv" and node.input[1] in consts
