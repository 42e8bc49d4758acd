"""Mask R-CNN and Keypoint R-CNN as one graph (export/two_stage.py), and the host-side finishing
of their outputs (runtime/instances.py), against torchvision's own code as the oracle."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torchvision.models.detection.roi_heads import heatmaps_to_keypoints, paste_masks_in_image

import edgevision
from conftest import calibrated_checkpoint, recipe_dict
from edgevision.data.shapes import ShapesDataset
from edgevision.errors import ExportError
from edgevision.export.detection import detection_adapter
from edgevision.export.two_stage import TwoStageAdapter
from oracles import as_contract, torchvision_two_stage
from edgevision.models.sources import build_model
from edgevision.recipe import ModelSpec
from edgevision.runtime.instances import decode_keypoints, mask_rle, paste_masks
from edgevision.records import InputSpec
from edgevision.runtime.preprocess import preprocess
from edgevision.verify.parity import compare_detections

LABELS = ["background", "circle", "square", "triangle"]


def _boxes(n: int, g: torch.Generator, width: int = 320, height: int = 240) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * torch.tensor([width * 0.7, height * 0.7])
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 150 + 0.3], dim=1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)  # detections are clipped to the image
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    return boxes


def test_paste_masks_is_torchvision() -> None:
    g = torch.Generator().manual_seed(0)
    probs, boxes = torch.rand(40, 1, 28, 28, generator=g), _boxes(40, g)
    boxes[0] = torch.tensor([3.3, 4.7, 3.9, 5.1])  # thinner than a pixel
    expected = paste_masks_in_image(probs, boxes, (240, 320))[:, 0] > 0.5
    ours = paste_masks(probs[:, 0].numpy(), boxes.numpy(), 240, 320)
    assert ours.shape == (40, 240, 320) and ours.dtype == bool
    assert expected.sum() > 10000 and (ours == expected.numpy()).all()
    assert paste_masks(np.zeros((0, 28, 28), np.float32), np.zeros((0, 4)), 5, 6).shape == (0, 5, 6)


def test_decode_keypoints_is_torchvision() -> None:
    g = torch.Generator().manual_seed(1)
    maps, boxes = torch.randn(30, 17, 56, 56, generator=g), _boxes(30, g)
    points, scores = heatmaps_to_keypoints(maps, boxes)
    ours, our_scores = decode_keypoints(maps.numpy(), boxes.numpy())
    assert np.abs(ours - points.numpy()).max() < 1e-3 and np.abs(our_scores - scores.numpy()).max() < 1e-3


def test_keypoints_differ_from_torchvision_only_at_heatmap_near_ties() -> None:
    """Issue 15, item 4: OpenCV's bicubic resize and torch's differ by a few 1e-6 of the heatmap's range,
    so a keypoint moves only when its heatmap has two maxima closer than that; then it can jump to the
    other one (30 px on a photo). A maximum ahead by 1e-3 always decodes where torchvision puts it."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(2)
    maps = torch.randn(20, 17, 56, 56, generator=g)
    for size in [(37, 91), (120, 64), (255, 300)]:
        ours = cv2.resize(np.ascontiguousarray(maps.numpy().reshape(-1, 56, 56).transpose(1, 2, 0)), size[::-1],
                          interpolation=cv2.INTER_CUBIC)
        theirs = F.interpolate(maps.reshape(1, -1, 56, 56), size=size, mode="bicubic", align_corners=False)[0]
        gap = np.abs(ours.transpose(2, 0, 1) - theirs.numpy()).max() / maps.abs().max().item()
        assert gap < 2e-5, gap
    twin = torch.zeros(1, 1, 56, 56)
    twin[0, 0, 10, 10], twin[0, 0, 45, 45] = 1.0, 1.0 + 1e-3  # two peaks 35 heatmap cells apart
    box = torch.tensor([[0.0, 0.0, 112.0, 112.0]])
    points, _ = heatmaps_to_keypoints(twin, box)
    ours, _ = decode_keypoints(twin.numpy(), box.numpy())
    assert np.abs(ours[0, 0, :2] - points.numpy()[0, 0, :2]).max() < 1e-3 and ours[0, 0, 0] > 80


def test_mask_rle_decodes_to_the_mask() -> None:
    from faster_coco_eval.core import mask as mask_util

    rng = np.random.default_rng(0)
    for mask in (rng.random((37, 23)) > 0.6, np.ones((4, 5), bool), np.zeros((4, 5), bool)):
        rle = mask_rle(mask)
        encoded = mask_util.frPyObjects(rle, *rle["size"])
        assert (mask_util.decode(encoded).astype(bool) == mask).all() and mask_util.area(encoded) == mask.sum()


def _model_and_batch(source: str, task: str, size: int, tmp_path: Path) -> tuple[torch.nn.Module, torch.Tensor]:
    data = recipe_dict("m", task, source, size, tmp_path)
    model = build_model(ModelSpec(**{**data["model"], "checkpoint": calibrated_checkpoint(data, tmp_path / "m.pt")}))
    shapes = ShapesDataset(2, seed=5, size=(size, size))
    x = torch.from_numpy(preprocess([shapes[i].image for i in range(2)], InputSpec.from_dict(data["input"]))[0])
    return model, x


@pytest.mark.parametrize("source,task", [("maskrcnn_resnet50_fpn", "instance_segmentation"),
                                         ("keypointrcnn_resnet50_fpn", "keypoints")])
def test_adapter_equals_torchvision(source: str, task: str, tmp_path: Path) -> None:
    model, x = _model_and_batch(source, task, 160, tmp_path)
    model.roi_heads.score_thresh = 0.01  # more detections to compare
    model.roi_heads.detections_per_img = 40  # fewer runs of the (heavy) mask and keypoint heads
    adapter = TwoStageAdapter(model, (160, 160), task)
    with torch.no_grad():
        expected = as_contract(torchvision_two_stage(model, x), 40)
        ours = {k: v.numpy() for k, v in zip(adapter.output_names, adapter(x))}
    assert list(ours["num_dets"][:, 0]) == list(expected["num_dets"][:, 0])
    m = compare_detections([expected], [ours])
    assert m["detections"] == 80 and m["matched"] == m["matched_candidate"] == 1.0 and m["max_score_diff"] < 1e-5, m
    if task == "instance_segmentation":
        assert ours["masks"].shape == (2, 40, 28, 28) and m["min_mask_iou"] == 1.0, m
    else:
        assert ours["keypoint_heatmaps"].shape == (2, 40, 17, 56, 56) and m["max_keypoint_px"] < 1e-3, m


def test_heads_need_the_matching_task(tmp_path: Path) -> None:
    faster = build_model(ModelSpec(source="fasterrcnn_mobilenet_v3_large_320_fpn", labels=LABELS))
    with pytest.raises(ExportError, match="task 'instance_segmentation' needs a model with a mask head"):
        detection_adapter(faster, (128, 128), "instance_segmentation")
    ssd = build_model(ModelSpec(source="ssdlite320_mobilenet_v3_large", labels=LABELS))
    with pytest.raises(ExportError, match="one-stage detector"):
        detection_adapter(ssd, (128, 128), "keypoints")
    mask = build_model(ModelSpec(source="maskrcnn_resnet50_fpn", labels=LABELS))
    assert detection_adapter(mask, (128, 128), "detection").output_names == ["boxes", "scores"]  # boxes only
    with pytest.raises(ValueError, match="class_agnostic is not supported for Mask / Keypoint R-CNN"):
        detection_adapter(mask, (128, 128), "instance_segmentation").nms_params(class_agnostic=True)


@pytest.fixture(scope="module")
def maskrcnn(maskrcnn_artifact):  # noqa: ANN001, ANN201
    return maskrcnn_artifact


def test_mask_rcnn_artifact_matches_torchvision(maskrcnn) -> None:  # noqa: ANN001
    manifest, root = maskrcnn
    assert manifest["outputs"] == ["num_dets", "boxes", "scores", "labels", "masks"]
    ops = manifest["export"]["ops"]
    assert ops["RoiAlign"] >= 4 and ops["NonMaxSuppression"] == 2 and "Loop" not in ops and "If" not in ops
    for v in manifest["variants"]:
        assert v["status"] == "passed" and v["parity"]["masks_close"] >= 0.99, v
        assert set(v["accuracy"]) >= {"map", "mask_map"} and 0 <= v["accuracy"]["mask_map"] <= 1
    model = build_model(ModelSpec(source=manifest["model"]["source"], labels=LABELS, checkpoint=manifest["model"]["checkpoint"]))
    model.roi_heads.score_thresh = manifest["nms"]["score_threshold"]
    shapes = ShapesDataset(3, seed=21, size=(160, 160))
    images = [shapes[i].image for i in range(3)] + [np.full((160, 160, 3), 128, np.uint8)]  # grey: no detection
    batch = preprocess(images, InputSpec.from_dict(manifest["input"]))[0]  # batch > 1
    with torch.no_grad():
        expected = as_contract(torchvision_two_stage(model, torch.from_numpy(batch)), manifest["nms"]["max_detections"])
    counts = expected["num_dets"][:, 0]
    assert counts[-1] == 0 and len(set(counts)) == 4, counts  # a different number of mask heads per image
    for name in ("onnxruntime-fp32", "openvino-fp32"):
        with edgevision.load(root / name) as predictor:
            got = predictor.runner.infer({"images": batch})
            m = compare_detections([expected], [got])
            assert m["detections"] >= 30 and m["matched"] >= 0.99 and m["matched_candidate"] >= 0.99, (name, m)
            # random weights: mask logits sit near 0, so a few pixels near 0.5 may flip; >= 99% of instances hold
            assert m["max_score_diff"] < 1e-3 and m["masks_close"] >= 0.99, (name, m)
            assert all(not got["masks"][i, n:].any() for i, n in enumerate(got["num_dets"][:, 0]))  # empty slots: zeros
            alone = predictor.runner.infer({"images": batch[3:]})  # a batch without any detection
            assert alone["num_dets"][0, 0] == 0 and not alone["masks"].any()


def test_mask_rcnn_predict_gives_masks_at_the_original_size(maskrcnn) -> None:  # noqa: ANN001
    _, root = maskrcnn
    image = ShapesDataset(1, seed=3, size=(120, 200))[0].image  # not square: letterboxed
    with edgevision.load(root / "onnxruntime-fp32") as predictor:
        dets = predictor.predict(image)
        outputs = predictor.runner.infer({"images": preprocess([image], predictor.input)[0]})
    assert len(dets) > 0 and dets.masks.shape == (len(dets), 120, 200) and dets.masks.dtype == bool
    # every mask lies in its (slightly grown) box, as torchvision pastes it
    for mask, (x0, y0, x1, y1) in zip(dets.masks, dets.boxes):
        ys, xs = np.nonzero(mask)
        if len(xs):
            assert xs.min() >= int(x0) - 2 and xs.max() <= x1 + 2 and ys.min() >= int(y0) - 2 and ys.max() <= y1 + 2
    top = dets.filter(min_score=float(np.median(dets.scores)))
    assert 0 < len(top) < len(dets) and (top.masks == dets.masks[: len(top)]).all()
    assert (dets.mask_probs == outputs["masks"][0, : len(dets)]).all()
    entry = dets.to_coco(1, {"circle": 1, "square": 2, "triangle": 3})[0]
    assert entry["segmentation"]["size"] == [120, 200] and sum(entry["segmentation"]["counts"]) == 120 * 200


def test_keypoint_rcnn_artifact_matches_torchvision(keypointrcnn_artifact) -> None:  # noqa: ANN001
    manifest, root = keypointrcnn_artifact
    variant = manifest["variants"][0]
    assert variant["status"] == "passed" and variant["parity"]["keypoints_close"] == 1.0, variant
    model = build_model(ModelSpec(source=manifest["model"]["source"], labels=LABELS, checkpoint=manifest["model"]["checkpoint"],
                                  kwargs=manifest["model"]["kwargs"]))
    model.roi_heads.detections_per_img = 20
    image = ShapesDataset(1, seed=4, size=(200, 140))[0].image
    with edgevision.load(root / "onnxruntime-fp32") as predictor:
        batch, (t,) = preprocess([image], predictor.input)
        dets = predictor.predict(image)
    with torch.no_grad():
        expected = torchvision_two_stage(model, torch.from_numpy(batch))[0]
    assert dets.keypoints.shape == (len(dets), 17, 3) and dets.keypoint_scores.shape == (len(dets), 17)
    # torchvision's keypoints of its best detection, mapped back to the original image
    want = expected["keypoints"][0].numpy().copy()
    want[:, 0], want[:, 1] = (want[:, 0] - t.pad_x) / t.scale_x, (want[:, 1] - t.pad_y) / t.scale_y
    best = int(np.argmax(dets.scores))
    assert np.abs(dets.keypoints[best, :, :2] - want[:, :2]).max() < 1.0 / min(t.scale_x, t.scale_y)
