"""The parity oracles the tests (and benchmarks/two_stage_parity.py) compare artifacts with:
torchvision's own post-processing on the same tensors. They live here, not in the package, because
nothing the package ships uses them."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.faster_rcnn import FasterRCNN
from torchvision.models.detection.image_list import ImageList

from edgevision.export.detection import backbone_features
from edgevision.records import InputSpec
from edgevision.runtime.preprocess import preprocess


def torchvision_reference(model: nn.Module, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """torchvision's own post-processing on the same tensors (the parity oracle)."""
    size = tuple(images.shape[-2:])
    feats = backbone_features(model, images)
    head = model.head(feats)
    anchors = model.anchor_generator(ImageList(images, [size] * images.shape[0]), feats)
    if isinstance(model, SSD):
        return model.postprocess_detections(head, anchors, [size] * images.shape[0])
    hw = [f.shape[-2] * f.shape[-1] for f in feats]
    per_cell = head["cls_logits"].shape[1] // sum(hw)
    split = [h * per_cell for h in hw]
    head_split = {k: list(v.split(split, dim=1)) for k, v in head.items()}
    anchors_split = [list(a.split(split)) for a in anchors]
    return model.postprocess_detections(head_split, anchors_split, [size] * images.shape[0])


def torchvision_two_stage(model: FasterRCNN, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """torchvision's own RPN and RoI heads on the same normalised tensors (the parity oracle)."""
    size = tuple(images.shape[-2:])
    image_list = ImageList(images, [size] * images.shape[0])
    feats = model.backbone(images)
    proposals, _ = model.rpn(image_list, feats)
    detections, _ = model.roi_heads(feats, proposals, image_list.image_sizes)
    return detections


def torchvision_scores(model: FasterRCNN, images: list[np.ndarray], spec: InputSpec) -> list[np.ndarray]:
    """torchvision eager's detection scores per image with no score threshold (every candidate kept
    by its NMS, up to detections_per_img); the model's threshold is put back."""
    kept, model.roi_heads.score_thresh = model.roi_heads.score_thresh, 0.0
    try:
        with torch.no_grad():
            found = torchvision_two_stage(model, torch.from_numpy(preprocess(images, spec)[0]))
    finally:
        model.roi_heads.score_thresh = kept
    return [d["scores"].numpy() for d in found]


def threshold_in_a_gap(groups: list[list[np.ndarray]], minimum: list[int], most: int) -> tuple[float, float]:
    """A score threshold with at least minimum[g] detections above it in each group of images (lists of
    per-image scores) and at most `most` in any one image (below detections_per_img, so the scores listed
    are all there are above it), halfway across the widest gap between two neighbouring scores: a
    threshold near a score would make that detection a coin toss between backends. Returns (threshold, gap)."""
    pooled = np.sort(np.concatenate([s for g in groups for s in g]))[::-1]
    best = (0.0, -1.0)
    for high, low in zip(pooled[:-1], pooled[1:]):
        t = float(high + low) / 2
        counts = [sum(int((s > t).sum()) for s in g) for g in groups]
        crowded = any(int((s > t).sum()) > most for g in groups for s in g)
        if all(c >= m for c, m in zip(counts, minimum)) and not crowded and high - low > best[1]:
            best = (t, float(high - low))
    assert best[1] > 1e-4, f"no score gap wider than 1e-4 with {minimum} detections: {pooled[:50]}"
    return best


def as_contract(detections: list[dict[str, torch.Tensor]], k: int) -> dict[str, np.ndarray]:
    """torchvision's per-image detection dicts as the padded contract outputs (num_dets [B,1],
    boxes [B,k,4], scores [B,k], labels [B,k], and masks [B,k,28,28] of Mask R-CNN, decoded
    keypoints [B,k,17,3] of Keypoint R-CNN), to compare with an artifact's outputs."""
    b = len(detections)
    out = {"num_dets": np.zeros((b, 1), np.int32), "boxes": np.zeros((b, k, 4), np.float32),
           "scores": np.zeros((b, k), np.float32), "labels": np.zeros((b, k), np.int32)}
    if detections and "masks" in detections[0]:
        out["masks"] = np.zeros((b, k, *detections[0]["masks"].shape[-2:]), np.float32)
    if detections and "keypoints" in detections[0]:
        out["keypoints"] = np.zeros((b, k, *detections[0]["keypoints"].shape[-2:]), np.float32)
    for i, d in enumerate(detections):
        n = len(d["boxes"])
        out["num_dets"][i, 0] = n
        out["boxes"][i, :n], out["scores"][i, :n], out["labels"][i, :n] = d["boxes"], d["scores"], d["labels"]
        if "masks" in out:
            out["masks"][i, :n] = d["masks"][:, 0]
        if "keypoints" in out:
            out["keypoints"][i, :n] = d["keypoints"]
    return out


def ultralytics_reference(model: nn.Module, images: torch.Tensor, conf: float = 0.25, iou: float = 0.7,
                          max_det: int = 300, end2end: bool = False) -> list[dict[str, np.ndarray]]:
    """Ultralytics' own inference and `non_max_suppression` (its predictor's defaults: best class per
    box, class-aware) on the same tensors; masks by its `process_mask` at network size, keypoints
    [n,K,3] in network pixels; OBB heads: its rotated NMS, rboxes [n,5] (cx, cy, w, h, angle). The parity oracle for YOLO artifacts. end2end: the one-to-one head, as
    Ultralytics' predictor with nms=False runs it (the head's own top-k, then the score filter)."""
    from ultralytics.utils.nms import non_max_suppression
    from ultralytics.utils.ops import process_mask

    head = model.model[-1]
    was = getattr(head, "_end2end", False)
    if end2end:
        head.end2end, head.max_det = True, max(max_det, 300)  # as its predictor sets them
    try:
        with torch.no_grad():
            out = model(images)[0]
    finally:
        if end2end:
            head.end2end = was
    preds, proto = out if isinstance(out, tuple) else (out, None)
    rotated = type(head).__name__ in ("OBB", "OBB26")  # rows: x, y, w, h, score, class, angle
    results = []
    for i, d in enumerate(non_max_suppression(preds, conf, iou, max_det=max_det, nc=len(model.names), end2end=end2end,
                                              rotated=rotated)):
        r = {"boxes": d[:, :4].numpy(), "scores": d[:, 4].numpy(), "labels": d[:, 5].long().numpy()}
        if rotated:
            r["rboxes"] = torch.cat([d[:, :4], d[:, 6:7]], dim=1).numpy()
            del r["boxes"]
        elif proto is not None:
            r["masks"] = process_mask(proto[i], d[:, 6:], d[:, :4], images.shape[2:], upsample=True).bool().numpy()
        elif d.shape[1] > 6:
            r["keypoints"] = d[:, 6:].reshape(len(d), *model.model[-1].kpt_shape).numpy()
        results.append(r)
    return results
