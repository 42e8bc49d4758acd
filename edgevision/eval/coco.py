"""COCO box (and mask) mAP of a detection Predictor on a dataset, with faster-coco-eval (not hand-written)."""

from __future__ import annotations

import contextlib
import io
from typing import Any, Callable, Optional

from edgevision.data.shapes import to_coco
from edgevision.data.types import Dataset
from edgevision.runtime.predictor import Predictor


def coco_map(predictor: Predictor, dataset: Dataset, progress: Optional[Callable[[], None]] = None) -> dict[str, Any]:
    """mAP@[.5:.95] and mAP50 (bbox); for instance segmentation also mask_map / mask_map50 (segm).
    Model labels are matched to dataset categories by name."""
    from faster_coco_eval import COCO
    from faster_coco_eval.core import mask as mask_util

    samples = [dataset[i] for i in range(len(dataset))]
    gt = to_coco(samples, dataset.categories)
    category_ids = {c["name"]: c["id"] for c in gt["categories"]}
    masks = predictor.task == "instance_segmentation"
    results = []
    for s in samples:
        results.extend(predictor.predict(s.image).to_coco(s.image_id, category_ids))
        if progress:
            progress()
    out: dict[str, Any] = {"images": len(samples), "detections": len(results), "map": 0.0, "map50": 0.0}
    if masks:
        out.update(mask_map=0.0, mask_map50=0.0)
    if not results:
        return out
    if masks:  # uncompressed RLE (the runtime's, numpy only) -> compressed, as the evaluator reads it
        for r in results:
            r["segmentation"] = mask_util.frPyObjects(r["segmentation"], *r["segmentation"]["size"])
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt)
        detections = coco_gt.loadRes(results)
        for iou_type, prefix in (("bbox", ""), ("segm", "mask_")) if masks else (("bbox", ""),):
            stats = _stats(coco_gt, detections, iou_type)
            out[f"{prefix}map"], out[f"{prefix}map50"] = float(stats[0]), float(stats[1])
    return out


def _stats(coco_gt: Any, detections: Any, iou_type: str) -> Any:
    from faster_coco_eval import COCOeval_faster

    evaluator = COCOeval_faster(coco_gt, detections, iou_type)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator.stats
