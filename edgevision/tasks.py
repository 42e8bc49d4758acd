"""What each task is, written once at the bottom of the package (stdlib only): every other module,
compile side and runtime side, reads these facts from here."""

from __future__ import annotations

TASKS = ("classification", "segmentation", "detection", "instance_segmentation", "keypoints")
DETECTION_TASKS = ("detection", "instance_segmentation", "keypoints")  # their results are Detections
# The accuracy metric of each task (the key in manifest / report accuracy dicts) and its title.
METRIC = {"segmentation": "miou", "classification": "top1", "detection": "map", "instance_segmentation": "mask_map",
          "keypoints": "map"}
METRIC_TITLE = {"segmentation": "mIoU", "classification": "top-1", "detection": "mAP", "instance_segmentation": "mask mAP",
                "keypoints": "box mAP"}
