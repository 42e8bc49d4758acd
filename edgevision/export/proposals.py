"""External-proposal mode (recipe export.proposals): the second stage of a detector, with region
proposals from elsewhere as a second graph input.

  images [B,3,H,W] (normalised), proposals [B,K,4] xyxy in network-input pixels (clipped to the
  image in the graph; rows of zero area are padding) -> boxes [B,N,4], scores [B,N,C], then the
  canonical NMS appended after export, as for every detector.

  fast_rcnn  a torchvision Faster R-CNN: backbone + FPN features, multi-level RoI Align of each
             proposal, box head, per-class decode (TwoStageAdapter.box_stage, i.e. torchvision's
             RoIHeads given these proposals instead of the RPN's).
  rcnn       any classifier whose class 0 is background: each proposal cropped from the image by
             RoI Align (aligned=True, 2x2 samples per bin) and warped to crop x crop, classified;
             the boxes are the proposals themselves (no regression), scores the softmax.
"""

from __future__ import annotations

from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.ops import boxes as box_ops

from edgevision.errors import ExportError
from edgevision.ops.nms import NMSParams
from edgevision.runtime.proposals import PROPOSALS


class ProposalAdapter(nn.Module):
    """images [B,3,H,W], proposals [B,K,4] -> boxes [B,N,4], scores [B,N,C] (module docstring)."""

    def __init__(self, model: nn.Module, size: tuple[int, int], style: str, max_proposals: int, crop: int = 64) -> None:
        from edgevision.export.two_stage import TwoStageAdapter, is_two_stage

        super().__init__()
        self.style, self.size, self.max_proposals, self.crop = style, (int(size[0]), int(size[1])), int(max_proposals), int(crop)
        if style == "fast_rcnn":
            if not is_two_stage(model):
                raise ExportError(f"export.proposals.style fast_rcnn needs a torchvision Faster R-CNN (e.g. "
                                  f"fasterrcnn_mobilenet_v3_large_fpn); {type(model).__name__} is not one (for a "
                                  "classifier use style: rcnn)")
            self.stage = TwoStageAdapter(model, self.size, "detection")
        elif style == "rcnn":
            if hasattr(model, "roi_heads") or hasattr(model, "head"):
                raise ExportError(f"export.proposals.style rcnn needs an image classifier (class 0 = background); "
                                  f"{type(model).__name__} is a detector (use style: fast_rcnn for Faster R-CNN)")
            self.classifier = model.eval()
        else:
            raise ExportError(f"export.proposals.style: '{style}' is not one of fast_rcnn, rcnn")

    input_names = ["images", PROPOSALS]
    output_names = ["boxes", "scores"]

    def nms_params(self, **overrides: Any) -> NMSParams:
        given = {k: v for k, v in overrides.items() if v is not None}
        if self.style == "fast_rcnn":
            self.stage.nms_params(**given)
            return NMSParams(**{**self.stage.box_nms.to_dict(), "pre_nms_top_k": self.max_proposals * self.stage.per_proposal,
                                **given})
        return NMSParams(**{"pre_nms_top_k": self.max_proposals, **given})

    def forward(self, images: torch.Tensor, proposals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        proposals = box_ops.clip_boxes_to_image(proposals, self.size)
        wh = proposals[..., 2:] - proposals[..., :2]
        valid = (wh > 0).all(dim=-1)
        if self.style == "fast_rcnn":
            feats = self.stage.model.backbone(images)
            boxes, scores, labels = self.stage.box_stage(feats, proposals, valid)
            onehot = (labels.unsqueeze(-1) == torch.arange(self.stage.num_classes, dtype=labels.dtype)).to(scores.dtype)
            return boxes, onehot * scores.unsqueeze(-1)
        b, k = proposals.shape[:2]
        batch = torch.arange(b, dtype=proposals.dtype).repeat_interleave(k).unsqueeze(1)
        rois = torch.cat([batch, proposals.reshape(b * k, 4)], dim=1)
        crops = torchvision.ops.roi_align(images, rois, (self.crop, self.crop), 1.0, 2, True)
        scores = torch.softmax(self.classifier(crops), dim=-1).reshape(b, k, -1)
        keep = torch.ones(scores.shape[-1], dtype=scores.dtype)
        keep[0] = 0  # class 0 is background
        return proposals, scores * keep * valid.unsqueeze(-1).to(scores.dtype)
