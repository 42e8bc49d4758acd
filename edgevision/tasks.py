"""What each task is, written once at the bottom of the package (stdlib only): every other module,
compile side and runtime side, reads these facts from here."""

from __future__ import annotations

TASKS = ("classification", "segmentation", "detection", "instance_segmentation", "keypoints", "oriented_detection")
# their results are Detections (oriented_detection: rotated boxes too, d.rotated; d.boxes are the boxes around them)
DETECTION_TASKS = ("detection", "instance_segmentation", "keypoints", "oriented_detection")
# The accuracy metric of each task (the key in manifest / report accuracy dicts) and its title.
METRIC = {"segmentation": "miou", "classification": "top1", "detection": "map", "instance_segmentation": "mask_map",
          "keypoints": "map", "oriented_detection": "map"}
METRIC_TITLE = {"segmentation": "mIoU", "classification": "top-1", "detection": "mAP", "instance_segmentation": "mask mAP",
                "keypoints": "box mAP", "oriented_detection": "box mAP"}

# Default parity limits against PyTorch FP32 per precision (recipe.Tolerance's fields; a recipe's
# verify.tolerances overrides them). Detection-like tasks: agreement = matched detections,
# max_abs_diff = score difference; the others: logits' cosine and top-1 / pixel agreement.
_DENSE_TOLERANCES = {
    "fp32": {"min_cosine": 0.9999, "max_abs_diff": 1e-2, "min_agreement": 0.999},
    "fp16": {"min_cosine": 0.999, "max_abs_diff": None, "min_agreement": 0.99},
    "bf16": {"min_cosine": 0.995, "max_abs_diff": None, "min_agreement": 0.98},
    "int8": {"min_cosine": 0.98, "max_abs_diff": None, "min_agreement": 0.95},
}
_DETECTION_TOLERANCES = {
    "fp32": {"min_cosine": 0, "max_abs_diff": 1e-3, "min_agreement": 0.99},
    "fp16": {"min_cosine": 0, "max_abs_diff": None, "min_agreement": 0.95, "match_iou": 0.9, "min_mask_iou": 0.9,
             "max_keypoint_px": 4},
    "bf16": {"min_cosine": 0, "max_abs_diff": None, "min_agreement": 0.9, "match_iou": 0.9, "min_mask_iou": 0.9,
             "max_keypoint_px": 4},
    # INT8 moves boxes by a pixel or two: parity is "same objects found"; accuracy is verify.max_drop's job
    "int8": {"min_cosine": 0, "max_abs_diff": None, "min_agreement": 0.8, "match_iou": 0.5, "min_mask_iou": 0.7,
             "max_keypoint_px": 8},
}


def default_tolerance(task: str, precision: str) -> dict:
    """The default parity limits of a task at a precision (a copy: callers may change it)."""
    return dict((_DETECTION_TOLERANCES if task in DETECTION_TASKS else _DENSE_TOLERANCES)[precision])
