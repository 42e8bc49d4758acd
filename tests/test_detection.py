"""One-stage detectors: our decode + canonical NMS vs torchvision's postprocess_detections, and
the compiled detection artifact end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

import edgevision
from conftest import Quiet, calibrated_checkpoint, recipe_dict
from edgevision import api
from edgevision.artifact import read_manifest
from edgevision.data import ShapesDataset
from edgevision.errors import ExportError, VerificationFailed
from edgevision.recipe import parse_recipe
from edgevision.export.detection import OneStageAdapter, backbone_features
from oracles import torchvision_reference
from edgevision.models.batchnorm import reestimate_batchnorm
from edgevision.ops.nms import nms_reference
from edgevision.verify.parity import compare_detections

FAMILIES = [
    ("ssdlite320_mobilenet_v3_large", 320),
    ("ssd300_vgg16", 300),
    ("retinanet_resnet50_fpn", 256),
    ("retinanet_resnet50_fpn_v2", 256),
    ("fcos_resnet50_fpn", 256),
]


def realistic_bn(model: torch.nn.Module, size: int) -> None:
    """Re-estimate BatchNorm statistics so random-weight features do not collapse into ties, and
    spread the head's near-constant initial scores (RetinaNet's prior) so ties stay rare."""
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    batches = [torch.randn(2, 3, size, size) for _ in range(2)]
    reestimate_batchnorm(model, batches, lambda x: model.head(backbone_features(model, x)))


def assert_same_detections(ours: dict, ref: list, b: int) -> int:
    """Order-free: same count, and every torchvision detection has ours with its label, score, box."""
    n = int(ours["num_dets"][b, 0])
    r = {k: v.numpy() for k, v in ref[b].items()}
    assert n == len(r["boxes"]), (n, len(r["boxes"]))
    if n == 0:
        return 0
    # nearest box among ours with the same label and score (degenerate clipped boxes have IoU 0)
    dist = np.abs(r["boxes"][:, None, :] - ours["boxes"][b, :n][None]).max(axis=2)
    same = (r["labels"][:, None] == ours["labels"][b, :n][None]) & (np.abs(r["scores"][:, None] - ours["scores"][b, :n][None]) < 1e-5)
    best = np.where(same, dist, np.inf).argmin(1)
    np.testing.assert_allclose(ours["boxes"][b, :n][best], r["boxes"], atol=1e-3)
    assert (same[np.arange(n), best]).all()
    return n


@pytest.mark.parametrize("name,size", FAMILIES)
def test_decode_and_nms_equal_torchvision_postprocess(name: str, size: int) -> None:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=5)
    realistic_bn(model, size)
    adapter = OneStageAdapter(model, (size, size))
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        boxes, scores = (t.numpy() for t in adapter(x))
    candidates = np.sort(scores[scores > 0])[::-1]
    total = 0
    for rank in (20, 200, 2000):  # score thresholds that leave ~rank candidates: few to many detections
        for iou in (0.3, 0.6):
            model.score_thresh = float(candidates[min(rank, len(candidates) - 1)])
            model.nms_thresh = iou
            with torch.no_grad():
                ref = torchvision_reference(model, x)
            ours = nms_reference(boxes, scores, adapter.nms_params())
            total += sum(assert_same_detections(ours, ref, b) for b in range(2))
    assert total > 0


def test_unsupported_detector_lists_supported() -> None:
    model = torchvision.models.get_model("fasterrcnn_mobilenet_v3_large_320_fpn", weights=None, weights_backbone=None, num_classes=3)
    with pytest.raises(ExportError, match="not supported; supported families: SSD"):
        OneStageAdapter(model, (320, 320))


SSD_EXTRA = {"export": {"nms": {"score_threshold": 0.3}}}


def test_ssdlite_artifact_parity_and_runtime(compiled) -> None:  # noqa: ANN001
    manifest, root = compiled("ssdlite", "detection", "ssdlite320_mobilenet_v3_large", 160, **SSD_EXTRA)
    assert manifest["outputs"] == ["num_dets", "boxes", "scores", "labels"]
    assert manifest["nms"]["score_threshold"] == 0.3 and manifest["nms"]["iou_threshold"] == 0.55  # model's own
    for v in manifest["variants"]:
        p = v["parity"]
        assert v["status"] == "passed" and p["detections"] > 100
        assert p["matched"] == 1.0 and p["matched_candidate"] == 1.0 and p["max_score_diff"] < 1e-4
    assert "map" in manifest["baseline"]["accuracy"]
    ops = manifest["export"]["ops"]
    assert ops["NonMaxSuppression"] == 1 and ops["TopK"] >= 1 and "Loop" not in ops
    image = ShapesDataset(1, seed=5, size=(120, 200))[0].image  # not the network size
    results = {}
    for name in ("onnxruntime-fp32", "openvino-fp32"):
        with edgevision.load(root / name) as model:
            dets = model.predict(image)
            assert isinstance(dets, edgevision.Detections) and len(dets) > 0
            assert dets.boxes[:, 0::2].max() <= 200 and dets.boxes[:, 1::2].max() <= 120
            assert (np.diff(dets.scores) <= 1e-6).all() and set(dets.names) <= {"circle", "square", "triangle"}
            results[name] = dets
            two = model.predict([image, image])
            np.testing.assert_allclose(two[1].boxes, dets.boxes, atol=1e-3)
    a, b = results.values()
    as_batch = [{"num_dets": np.array([[len(d)]]), "boxes": d.boxes[None], "scores": d.scores[None],
                 "labels": d.class_ids[None]} for d in (a, b)]
    same = compare_detections(as_batch[:1], as_batch[1:])  # order-free: near-equal scores may swap
    assert same["matched"] == 1.0 and same["matched_candidate"] == 1.0
    top = a.filter(min_score=float(a.scores[2]))
    assert len(top) >= 3 and len(a.filter(classes=["circle"])) == int((a.class_ids == 1).sum())
    coco = a[:2].to_coco(7, {"circle": 1, "square": 2, "triangle": 3})
    assert len(coco) == 2 and coco[0]["image_id"] == 7 and len(coco[0]["bbox"]) == 4


@pytest.mark.slow
def test_parity_that_compared_nothing_fails_and_no_detections_is_an_empty_result(build_root) -> None:  # noqa: ANN001
    """Issue 15, item 2: zero detections in PyTorch and in the artifact is not a match, it is nothing checked."""
    data = recipe_dict("ssdlite_strict", "detection", "ssdlite320_mobilenet_v3_large", 160, build_root,
                       export={"nms": {"score_threshold": 0.999}}, targets=[{"backend": "onnxruntime", "precision": "fp32"}])
    data["model"]["checkpoint"] = str(calibrated_checkpoint(data, build_root / "ssdlite_strict.pt"))
    with pytest.raises(VerificationFailed, match="onnxruntime-fp32"):
        api.compile(parse_recipe(data), reporter=Quiet(), threads=2)
    failed = build_root / "ssdlite_strict.failed"
    (variant,) = read_manifest(failed).variants
    assert variant.status == "failed" and variant.parity["detections"] == 0
    assert variant.reasons[0].startswith("compared nothing: neither PyTorch nor the variant detected anything on the 4")
    with edgevision.load(failed / "onnxruntime-fp32") as model:
        dets = model.predict(np.zeros((50, 60, 3), np.uint8))
    assert len(dets) == 0 and dets.boxes.shape == (0, 4) and dets.to_dict() == {"detections": []}


@pytest.mark.parametrize("bad,message", [
    ({"score_threshold": 1.5}, "export.nms.score_threshold"),
    ({"max_detections": 0}, "export.nms.max_detections"),
    ({"iou_threshold": 0}, "export.nms.iou_threshold"),
])
def test_bad_nms_settings_are_recipe_errors(bad: dict, message: str, tmp_path) -> None:  # noqa: ANN001
    from edgevision.errors import RecipeError
    from edgevision.recipe import parse_recipe

    from conftest import recipe_dict

    with pytest.raises(RecipeError, match=message):
        parse_recipe(recipe_dict("x", "detection", "ssdlite320_mobilenet_v3_large", 160, tmp_path, export={"nms": bad}))


def test_predict_cli_draws_boxes(compiled, tmp_path) -> None:  # noqa: ANN001
    import json
    import subprocess
    import sys

    from PIL import Image

    _, root = compiled("ssdlite", "detection", "ssdlite320_mobilenet_v3_large", 160, **SSD_EXTRA)
    image = ShapesDataset(1, seed=5, size=(120, 200))[0].image
    Image.fromarray(image).save(tmp_path / "a.png")
    proc = subprocess.run([sys.executable, "-m", "edgevision", "predict", str(root / "openvino-fp32"), str(tmp_path / "a.png"),
                           "--json", "--save", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    dets = json.loads(proc.stdout.splitlines()[0])["detections"]
    assert dets and {"label", "score", "box", "class_id"} <= set(dets[0])
    drawn = np.asarray(Image.open(tmp_path / "out" / "a.overlay.png"))
    assert drawn.shape == image.shape and (drawn != image).any()
    scores = sorted({d["score"] for d in dets})  # rounded to 4 places: cut half-way between two of them
    k = next(i for i in range(len(scores) // 2, len(scores) - 1) if scores[i + 1] - scores[i] > 2e-4)
    threshold = round((scores[k] + scores[k + 1]) / 2, 6)
    kept = subprocess.run([sys.executable, "-m", "edgevision", "predict", str(root / "openvino-fp32"), str(tmp_path / "a.png"),
                           "--json", "--min-score", str(threshold), "--classes", f"{dets[0]['label']},2"],
                          capture_output=True, text=True, timeout=300)
    assert kept.returncode == 0, kept.stderr
    got = json.loads(kept.stdout.splitlines()[0])["detections"]
    expected = [d for d in dets if d["score"] >= threshold and (d["label"] == dets[0]["label"] or d["class_id"] == 2)]
    assert got == expected and 0 < len(got) < len(dets)  # issue 15, item 6: the filter a user asked for
