"""Accuracy against ground truth: mIoU (segmentation) and top-1/top-5 (classification)."""

from edgevision.eval.metrics import evaluate

__all__ = ["evaluate"]
