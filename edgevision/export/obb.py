"""Oriented boxes in the graph: Ultralytics' probabilistic IoU and its rotated NMS, in ops every backend runs.

Ultralytics 8.4.190's `non_max_suppression(rotated=True)` keeps each box's best class above conf, offsets
the boxes by class (class-aware), sorts them by score and runs `TorchNMS.fast_nms` with `batch_probiou`:
a box is dropped when any higher-scoring box overlaps it by more than the IoU threshold (whether or not
that box was itself dropped: "fast NMS", an upper-triangular IoU matrix, no loop). That is one matrix in
ONNX, so it runs in the graph: the best `pre_nms_top_k` candidates by score (1000 by default; Ultralytics
allows 30000, which would be a 30000^2 matrix), their probiou matrix masked to same-class pairs of valid
candidates above the diagonal, then the best `max_detections` survivors. Boxes are xywhr: centre, size and
the angle in radians, network-input pixels.
"""

from __future__ import annotations

import torch

EPS = 1e-7


def covariance(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """xywhr [...,5] -> the Gaussian's covariance entries a, b, c ([[a, c], [c, b]]), as Ultralytics'
    _get_covariance_matrix (each [...])."""
    a, b = boxes[..., 2].pow(2) / 12, boxes[..., 3].pow(2) / 12
    cos, sin = boxes[..., 4].cos(), boxes[..., 4].sin()
    cos2, sin2 = cos.pow(2), sin.pow(2)
    return a * cos2 + b * sin2, a * sin2 + b * cos2, (a - b) * cos * sin


def probiou(boxes: torch.Tensor) -> torch.Tensor:
    """Pairwise probabilistic IoU of xywhr boxes [B,K,5] -> [B,K,K] (Ultralytics' batch_probiou)."""
    x, y = boxes[..., 0], boxes[..., 1]
    a, b, c = covariance(boxes)
    x1, y1, a1, b1, c1 = (v.unsqueeze(-1) for v in (x, y, a, b, c))
    x2, y2, a2, b2, c2 = (v.unsqueeze(-2) for v in (x, y, a, b, c))
    den = (a1 + a2) * (b1 + b2) - (c1 + c2).pow(2) + EPS
    t1 = ((a1 + a2) * (y1 - y2).pow(2) + (b1 + b2) * (x1 - x2).pow(2)) / den * 0.25
    t2 = ((c1 + c2) * (x2 - x1) * (y1 - y2)) / den * 0.5
    det1, det2 = (a1 * b1 - c1.pow(2)).clamp(min=0), (a2 * b2 - c2.pow(2)).clamp(min=0)
    t3 = (((a1 + a2) * (b1 + b2) - (c1 + c2).pow(2)) / (4 * (det1 * det2).sqrt() + EPS) + EPS).log() * 0.5
    bd = (t1 + t2 + t3).clamp(EPS, 100.0)
    return 1 - (1.0 - (-bd).exp() + EPS).sqrt()


def rotated_nms(rboxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, score_threshold: float,
                iou_threshold: float, top_k: int, max_detections: int,
                class_agnostic: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """rboxes [B,N,5], each box's best score and class [B,N] -> num_dets [B,1] int32, scores [B,D],
    labels [B,D] int32 and the kept boxes' indices into N [B,D], best first, rows past num_dets zero."""
    k = min(top_k, scores.shape[1])
    candidates = torch.where(scores > score_threshold, scores, torch.full_like(scores, -1.0))
    top = candidates.topk(k, dim=1)  # sorted, best first; candidates below the threshold last
    index = top.indices
    boxes = torch.gather(rboxes, 1, index.unsqueeze(-1).expand(-1, -1, 5))
    classes = torch.gather(labels, 1, index)
    valid = top.values >= 0
    overlap = probiou(boxes)
    above = torch.arange(k).unsqueeze(1) < torch.arange(k).unsqueeze(0)  # [K,K]: row i scores higher than column j
    pair = above.unsqueeze(0) & valid.unsqueeze(-1)
    if not class_agnostic:
        pair = pair & (classes.unsqueeze(-1) == classes.unsqueeze(-2))
    suppressed = ((overlap > iou_threshold) & pair).any(dim=1)  # [B,K]
    kept = torch.where(valid & ~suppressed, top.values, torch.full_like(top.values, -1.0))
    best = kept.topk(min(max_detections, k), dim=1)
    ok = best.values >= 0
    num = ok.to(torch.int32).sum(dim=1, keepdim=True)
    det_scores = torch.where(ok, best.values, torch.zeros_like(best.values))
    det_labels = torch.where(ok, torch.gather(classes, 1, best.indices), torch.zeros_like(best.indices))
    return num, det_scores, det_labels.to(torch.int32), torch.gather(index, 1, best.indices)


def enclosing(rboxes: torch.Tensor) -> torch.Tensor:
    """xywhr [...,5] -> the axis-aligned boxes around them, xyxy [...,4]."""
    cos, sin = rboxes[..., 4].cos().abs(), rboxes[..., 4].sin().abs()
    half_w = (rboxes[..., 2] * cos + rboxes[..., 3] * sin) / 2
    half_h = (rboxes[..., 2] * sin + rboxes[..., 3] * cos) / 2
    x, y = rboxes[..., 0], rboxes[..., 1]
    return torch.stack([x - half_w, y - half_h, x + half_w, y + half_h], dim=-1)
