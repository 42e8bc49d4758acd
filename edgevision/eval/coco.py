"""COCO box mAP of a detection Predictor on a dataset, with faster-coco-eval (not hand-written)."""

from __future__ import annotations

import contextlib
import io
from typing import Any, Callable, Optional

from edgevision.data.shapes import to_coco
from edgevision.data.types import Dataset
from edgevision.runtime.predictor import Predictor


def coco_map(predictor: Predictor, dataset: Dataset, progress: Optional[Callable[[], None]] = None) -> dict[str, Any]:
    """mAP@[.5:.95] and mAP50 (bbox). Model labels are matched to dataset categories by name."""
    from faster_coco_eval import COCO, COCOeval_faster

    samples = [dataset[i] for i in range(len(dataset))]
    gt = to_coco(samples, dataset.categories)
    category_ids = {c["name"]: c["id"] for c in gt["categories"]}
    results = []
    for s in samples:
        results.extend(predictor.predict(s.image).to_coco(s.image_id, category_ids))
        if progress:
            progress()
    if not results:
        return {"images": len(samples), "detections": 0, "map": 0.0, "map50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt)
        evaluator = COCOeval_faster(coco_gt, coco_gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    return {"images": len(samples), "detections": len(results), "map": float(stats[0]), "map50": float(stats[1])}
