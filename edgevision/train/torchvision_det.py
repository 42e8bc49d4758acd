"""Training torchvision's detectors (Faster / Mask R-CNN, RetinaNet, FCOS, SSD) on edgevision's pre-processing.

torchvision's detectors normalise and resize their input themselves (`model.transform`). The graphs edgevision
exports skip that transform, because the runtime pre-processes (resize or letterbox, mean/std) before the graph.
Training must see what the deployed graph sees, so during a training step the transform is swapped for one that
only batches the already pre-processed images; the model's own losses (RPN, box, mask, ...) are then summed.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn


def is_torchvision_detector(model: nn.Module) -> bool:
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    return isinstance(getattr(model, "transform", None), GeneralizedRCNNTransform)


def background_is_class_zero(model: nn.Module) -> bool:
    """R-CNNs and SSD learn class 0 as background: no dataset category may be mapped to it."""
    from torchvision.models.detection.ssd import SSD
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

    return isinstance(model, (GeneralizedRCNN, SSD))


class _Batched(nn.Module):
    """Stands in for GeneralizedRCNNTransform: the images are already pre-processed and of one size."""

    def forward(self, images: list[torch.Tensor], targets: Any = None) -> tuple[Any, Any]:
        from torchvision.models.detection.image_list import ImageList

        batch = torch.stack(images)
        return ImageList(batch, [tuple(batch.shape[-2:])] * len(images)), targets

    def postprocess(self, result: Any, image_shapes: Any, original_image_sizes: Any) -> Any:
        return result  # R-CNNs call it in training too; the sizes are the network's


@contextmanager
def _pre_processed(model: nn.Module) -> Iterator[None]:
    saved = model.transform
    model.transform = _Batched()
    try:
        yield
    finally:
        model.transform = saved


def detection_loss(model: nn.Module, images: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """Sum of the model's training losses for an NCHW batch already pre-processed as the runtime does."""
    with _pre_processed(model):
        losses = model(list(images), targets)
    return sum(losses.values())
