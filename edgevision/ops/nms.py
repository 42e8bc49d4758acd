"""The canonical NMS contract and its numpy reference (the oracle for every lowering).

"Padded batched multi-class NMS" (README, "Detection: one NMS, fused into the graph"):
  inputs   boxes [B,N,4] xyxy, scores [B,N,C] (activated: probabilities)
  1. pre-NMS top-k: keep the pre_nms_top_k boxes with the highest max-over-classes score
     (ties: lower index first, as ONNX TopK);
  2. per class (or over all classes when class_agnostic, label = argmax class), greedy NMS
     over candidates with score > score_threshold, suppressing IoU > iou_threshold;
  3. the max_detections best (score, class, box) triples over all classes, best first;
  outputs  num_dets [B,1] int32, boxes [B,K,4], scores [B,K], labels [B,K] int32, K =
           max_detections; rows past num_dets are zeros.
numpy only (runs in the runtime, Python 3.10).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict

import numpy as np


@dataclass(frozen=True)
class NMSParams:
    score_threshold: float = 0.05
    iou_threshold: float = 0.5
    max_detections: int = 100
    pre_nms_top_k: int = 1000
    class_agnostic: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in [0, 1), got {self.score_threshold}")
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if self.max_detections <= 0:
            raise ValueError(f"max_detections must be > 0, got {self.max_detections}")
        if self.pre_nms_top_k <= 0:
            raise ValueError(f"pre_nms_top_k must be > 0, got {self.pre_nms_top_k}")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a [N,4] with every box in b [M,4] (xyxy; corners may come in any order)."""
    a = np.concatenate([np.minimum(a[:, :2], a[:, 2:]), np.maximum(a[:, :2], a[:, 2:])], axis=1)
    b = np.concatenate([np.minimum(b[:, :2], b[:, 2:]), np.maximum(b[:, :2], b[:, 2:])], axis=1)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _greedy(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, limit: int) -> np.ndarray:
    """Greedy NMS: indices of the kept boxes, best first, at most `limit`. The IoU of a kept box is computed
    against the boxes after it only, so the work is (kept x candidates), not the full candidates^2 matrix
    (on a noisy frame with 500 candidates per class that matrix was 95% of ncnn's call); the values are
    the same elementwise arithmetic, so the result is identical."""
    order = np.argsort(-scores, kind="stable")
    ordered = boxes[order]
    keep: list = []
    alive = np.ones(len(order), dtype=bool)
    for i in range(len(order)):
        if not alive[i]:
            continue
        keep.append(order[i])
        if len(keep) == limit:
            break
        alive[i + 1:] &= ~(box_iou(ordered[i:i + 1], ordered[i + 1:])[0] > iou_threshold)
    return np.asarray(keep, dtype=np.int64)


def nms_reference(boxes: np.ndarray, scores: np.ndarray, p: NMSParams) -> Dict[str, np.ndarray]:
    """The contract, in plain numpy: see the module docstring."""
    b_count, n, c = scores.shape
    k_out = p.max_detections
    out = {
        "num_dets": np.zeros((b_count, 1), np.int32),
        "boxes": np.zeros((b_count, k_out, 4), np.float32),
        "scores": np.zeros((b_count, k_out), np.float32),
        "labels": np.zeros((b_count, k_out), np.int32),
    }
    for b in range(b_count):
        top = np.argsort(-scores[b].max(axis=1), kind="stable")[: min(p.pre_nms_top_k, n)]
        cand_boxes, cand_scores = boxes[b][top].astype(np.float64), scores[b][top].astype(np.float64)
        k = len(top)
        if p.class_agnostic:
            per_class = cand_scores.max(axis=1, keepdims=True)
            agnostic_labels = cand_scores.argmax(axis=1)
        else:
            per_class = cand_scores
        found = []  # (score, flat index class * k + box) - the ONNX lowering's TopK order
        for cls in range(per_class.shape[1]):
            idx = np.nonzero(per_class[:, cls] > p.score_threshold)[0]
            for i in idx[_greedy(cand_boxes[idx], per_class[idx, cls], p.iou_threshold, k_out)]:
                found.append((per_class[i, cls], cls * k + i))
        found.sort(key=lambda t: (-t[0], t[1]))
        found = found[:k_out]
        out["num_dets"][b, 0] = len(found)
        for row, (score, flat) in enumerate(found):
            i = flat % k
            out["boxes"][b, row] = cand_boxes[i]
            out["scores"][b, row] = score
            out["labels"][b, row] = agnostic_labels[i] if p.class_agnostic else flat // k
    return out
