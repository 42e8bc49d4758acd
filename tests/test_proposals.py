"""External-proposal mode (recipe export.proposals): Fast R-CNN and R-CNN style second stages with
proposals as a graph input, against torchvision's own RoI heads / ops as the oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torchvision.models.detection.image_list import ImageList

import edgevision
from conftest import recipe_dict
from edgevision.data.shapes import ShapesDataset
from edgevision.errors import InputError
from oracles import as_contract
from edgevision.models.sources import build_model
from edgevision.recipe import ModelSpec, parse_recipe
from edgevision.verify.parity import compare_detections

LABELS = ["background", "circle", "square", "triangle"]
SIZE = 192


def _proposals(image_size: tuple[int, int], n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = image_size
    xy = rng.uniform(0, 0.8, (n, 2)) * [w, h]
    return np.concatenate([xy, xy + rng.uniform(8, 0.5 * min(h, w), (n, 2))], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def fast_rcnn(compiled):  # noqa: ANN001, ANN201
    return compiled("proposals-fast", "detection", "fasterrcnn_mobilenet_v3_large_320_fpn", SIZE,
                    export={"proposals": {"style": "fast_rcnn", "max": 64}},
                    targets=[{"backend": "onnxruntime", "precision": "fp32"}, {"backend": "openvino", "precision": "fp32"},
                             {"backend": "tensorrt", "precision": "fp32"}])


@pytest.fixture(scope="module")
def rcnn(compiled):  # noqa: ANN001, ANN201
    return compiled("proposals-rcnn", "detection", "mobilenet_v3_small", SIZE,
                    export={"proposals": {"style": "rcnn", "max": 48, "crop": 48}}, model={"num_classes": 4})


def _feeds(root: Path, name: str, images: list, proposals: list) -> tuple:
    with edgevision.load(root / name) as predictor:
        feeds, _ = predictor.feeds(images, proposals)
        return feeds, predictor.runner.infer(feeds)


def test_fast_rcnn_matches_torchvision_roi_heads(fast_rcnn) -> None:  # noqa: ANN001
    manifest, root = fast_rcnn
    assert manifest["input"]["proposals"] == 64
    for v in manifest["variants"]:
        assert v["status"] == "passed" and v["parity"]["matched"] == 1.0, v
    model = build_model(ModelSpec(source=manifest["model"]["source"], labels=LABELS, checkpoint=manifest["model"]["checkpoint"]))
    shapes = ShapesDataset(3, seed=8, size=(SIZE, SIZE))
    images = [shapes[i].image for i in range(3)]
    proposals = [_proposals((SIZE, SIZE), n, seed=i) for i, n in enumerate((64, 20, 1))]  # batch > 1, ragged
    for name in ("onnxruntime-fp32", "openvino-fp32"):
        feeds, got = _feeds(root, name, images, proposals)
        x = torch.from_numpy(feeds["images"])
        given = [torch.from_numpy(p[(p[:, 2:] > p[:, :2]).all(1)]) for p in feeds["proposals"]]  # padding rows out
        with torch.no_grad():
            expected, _ = model.roi_heads(model.backbone(x), given, ImageList(x, [(SIZE, SIZE)] * 3).image_sizes)
        m = compare_detections([as_contract(expected, manifest["nms"]["max_detections"])], [got])
        assert m["detections"] >= 20 and m["matched"] >= 0.99 and m["matched_candidate"] >= 0.99, (name, m)
        assert m["max_score_diff"] < 1e-3, (name, m)


def test_rcnn_matches_crop_classify_nms(rcnn) -> None:  # noqa: ANN001
    manifest, root = rcnn
    assert manifest["variants"][0]["status"] == "passed"
    model = build_model(ModelSpec(source="mobilenet_v3_small", labels=LABELS, num_classes=4,
                                  checkpoint=manifest["model"]["checkpoint"])).eval()
    image = ShapesDataset(1, seed=2, size=(SIZE, SIZE))[0].image
    feeds, got = _feeds(root, "onnxruntime-fp32", [image], [_proposals((SIZE, SIZE), 30, seed=5)])
    boxes = torch.from_numpy(feeds["proposals"][0, :30])
    nms = manifest["nms"]
    with torch.no_grad():  # R-CNN: warp each proposal (RoI Align), classify, per-class NMS; class 0 is background
        crops = torchvision.ops.roi_align(torch.from_numpy(feeds["images"]), [boxes], (48, 48), 1.0, 2, True)
        scores = torch.softmax(model(crops), dim=1)[:, 1:]
    ids, labels = torch.nonzero(scores > nms["score_threshold"], as_tuple=True)
    keep = torchvision.ops.batched_nms(boxes[ids], scores[ids, labels], labels, nms["iou_threshold"])[: nms["max_detections"]]
    expected = [{"boxes": boxes[ids][keep], "scores": scores[ids, labels][keep], "labels": labels[keep] + 1}]
    m = compare_detections([as_contract(expected, nms["max_detections"])], [got])
    assert m["detections"] >= 30 and m["matched"] == m["matched_candidate"] == 1.0 and m["max_score_diff"] < 1e-4, m


def test_proposal_input_is_checked_and_clipped(rcnn, compiled) -> None:  # noqa: ANN001
    _, root = rcnn
    image = ShapesDataset(1, seed=3, size=(150, 250))[0].image  # not square: letterboxed or stretched
    with edgevision.load(root / "onnxruntime-fp32") as predictor:
        assert len(predictor.predict(image, proposals=np.zeros((0, 4)))) == 0  # zero proposals: empty result
        outside = np.array([[-50, -40, 120, 90], [200, 100, 400, 300]], np.float32)
        dets = predictor.predict(image, proposals=outside)
        assert len(dets) > 0 and dets.boxes.min() >= 0 and (dets.boxes[:, 2] <= 250).all() and (dets.boxes[:, 3] <= 150).all()
        assert len(predictor.predict(image)) > 0  # no proposals: the default grid
        with pytest.raises(InputError, match=r"proposals\[0\]: expected an array of shape \[N, 4\]"):
            predictor.predict(image, proposals=np.zeros((3, 5)))
        with pytest.raises(InputError, match="at most 48 per image"):
            predictor.predict(image, proposals=_proposals((150, 250), 49, seed=1))
        with pytest.raises(InputError, match="one array per image"):
            predictor.predict([image, image], proposals=[outside])
    _, plain = compiled("frcnn", "detection", "fasterrcnn_mobilenet_v3_large_320_fpn", 320)
    with edgevision.load(plain / "onnxruntime-fp32") as predictor:
        with pytest.raises(InputError, match="does not take proposals"):
            predictor.predict(image, proposals=outside)


def test_proposal_recipe_errors(tmp_path: Path) -> None:
    seg = recipe_dict("p", "segmentation", "unet", 64, tmp_path, export={"proposals": {"style": "rcnn"}})
    with pytest.raises(Exception, match="external-proposal mode is for task detection"):
        parse_recipe(seg)
    int8 = recipe_dict("p", "detection", "mobilenet_v3_small", 64, tmp_path, export={"proposals": {"style": "rcnn"}},
                       targets=[{"backend": "onnxruntime", "precision": "int8"}], calibration={"source": "shapes", "count": 4})
    with pytest.raises(Exception, match="int8 targets are not built in external-proposal mode"):
        parse_recipe(int8)
