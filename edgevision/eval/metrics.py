"""Accuracy of a Predictor on a dataset, end to end (decode -> pre -> infer -> post), at original size."""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from edgevision.data.types import Dataset
from edgevision.errors import DataError
from edgevision.runtime.predictor import Predictor
from edgevision.tasks import DETECTION_TASKS


def confusion(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """num_classes x num_classes counts, rows = truth; truth values >= num_classes are ignored."""
    keep = truth < num_classes
    idx = truth[keep].astype(np.int64) * num_classes + pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)


def iou_from_confusion(cm: np.ndarray) -> dict[str, Any]:
    inter = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - inter
    present = union > 0  # classes absent from both truth and prediction do not count
    iou = np.where(present, inter / np.maximum(union, 1), np.nan)
    return {
        "miou": float(np.nanmean(iou)) if present.any() else 0.0,
        "pixel_accuracy": float(inter.sum() / max(cm.sum(), 1)),
        "iou_per_class": [None if np.isnan(v) else round(float(v), 4) for v in iou],
    }


def evaluate(
    predictor: Predictor, dataset: Dataset, progress: Optional[Callable[[], None]] = None
) -> dict[str, Any]:
    """mIoU for segmentation, top-1/top-5 for classification, COCO box (and mask) mAP for detection
    and instance segmentation;
    `progress` is called per image."""
    if predictor.task in DETECTION_TASKS:
        from edgevision.eval.coco import coco_map

        return coco_map(predictor, dataset, progress)
    n = len(dataset)
    if predictor.task == "segmentation":
        k = len(predictor.labels)
        cm = np.zeros((k, k), dtype=np.int64)
        for i in range(n):
            sample = dataset[i]
            if sample.semantic is None:
                raise DataError(f"{dataset.name}: image {sample.file_name} has no segmentation ground truth")
            cm += confusion(predictor.predict(sample.image).label_map, sample.semantic, k)
            if progress:
                progress()
        return {"images": n, **iou_from_confusion(cm)}
    top1 = top5 = counted = 0
    for i in range(n):
        sample = dataset[i]
        if sample.label is None:
            raise DataError(f"{dataset.name}: image {sample.file_name} has no class label")
        result = predictor.predict(sample.image, top_k=5)
        top1 += int(result.top1 == sample.label)
        top5 += int(sample.label in result.class_ids)
        counted += 1
        if progress:
            progress()
    return {"images": counted, "top1": top1 / max(counted, 1), "top5": top5 / max(counted, 1)}
