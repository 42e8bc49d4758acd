"""Export adapters for one-stage detectors: tensors in, decoded boxes and candidate scores out.

torchvision's detectors export their post-processing as per-class loops unrolled at trace time.
An adapter instead runs backbone + head, decodes boxes against anchors (or points) precomputed
for the fixed input size, and expresses torchvision's candidate selection as score masks:

  SSD / SSDlite   softmax, background column zeroed, per-class top-k (topk_candidates)
  RetinaNet       sigmoid, per-level top-k over (anchor, class) pairs
  FCOS            sqrt(sigmoid(cls) * sigmoid(centerness)), per-level top-k over pairs

A mask keeps the scores torchvision would keep and zeroes the rest, so the canonical NMS
(score > score_thresh, per-class IoU > nms_thresh, best detections_per_img) reproduces
postprocess_detections exactly (up to ties), with static shapes. Boxes are clipped to the image.
Outputs: boxes [B,N,4] xyxy in network-input pixels, scores [B,N,C]; labels are score columns,
i.e. torchvision's label ids.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.models.detection.fcos import FCOS
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import boxes as box_ops

from edgevision.errors import ExportError
from edgevision.ops.nms import NMSParams

SUPPORTED = ("SSD (ssd300_vgg16, ssdlite320_mobilenet_v3_large), RetinaNet (retinanet_resnet50_fpn[_v2]), FCOS "
             "(fcos_resnet50_fpn), Faster R-CNN (fasterrcnn_mobilenet_v3_large[_320]_fpn, fasterrcnn_resnet50_fpn[_v2]), "
             "Mask R-CNN (maskrcnn_resnet50_fpn[_v2]), Keypoint R-CNN (keypointrcnn_resnet50_fpn)")


def family_of(model: nn.Module) -> str:
    for cls, name in ((SSD, "ssd"), (RetinaNet, "retinanet"), (FCOS, "fcos")):
        if isinstance(model, cls):
            return name
    raise ExportError(f"detector {type(model).__name__} is not supported; supported families: {SUPPORTED}")


def backbone_features(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The detector backbone's feature maps as a list (FPN dict values, or one tensor)."""
    feats = model.backbone(x)
    return [feats] if isinstance(feats, torch.Tensor) else list(feats.values())


class OneStageAdapter(nn.Module):
    """images [B,3,H,W] (normalised, network size) -> boxes [B,N,4], scores [B,N,C]."""

    def __init__(self, model: nn.Module, size: tuple[int, int]) -> None:
        super().__init__()
        self.family = family_of(model)
        self.model = model.eval()
        self.size = (int(size[0]), int(size[1]))
        with torch.no_grad():
            dummy = torch.zeros(1, 3, *self.size)
            feats = backbone_features(model, dummy)
            anchors = model.anchor_generator(ImageList(dummy, [self.size]), feats)[0]
        self.register_buffer("anchors", anchors, persistent=False)
        per_cell = anchors.shape[0] // sum(f.shape[-2] * f.shape[-1] for f in feats)
        self.level_sizes = [int(f.shape[-2] * f.shape[-1] * per_cell) for f in feats]
        self.topk = int(model.topk_candidates)

    def nms_params(self, **overrides: Any) -> NMSParams:
        """The model's own thresholds (score_thresh, nms_thresh, detections_per_img)."""
        base = dict(score_threshold=float(self.model.score_thresh), iou_threshold=float(self.model.nms_thresh),
                    max_detections=int(self.model.detections_per_img), pre_nms_top_k=int(self.anchors.shape[0]))
        base.update({k: v for k, v in overrides.items() if v is not None})
        return NMSParams(**base)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        head = self.model.head(backbone_features(self.model, images))
        reg = head["bbox_regression"]
        b, n = reg.shape[0], reg.shape[1]
        anchors = self.anchors.unsqueeze(0).expand(b, n, 4)
        coder = self.model.box_coder
        if self.family == "fcos":
            boxes = coder.decode(reg, anchors)
            scores = torch.sqrt(torch.sigmoid(head["cls_logits"]) * torch.sigmoid(head["bbox_ctrness"]))
        else:
            boxes = coder.decode_single(reg.reshape(-1, 4), anchors.reshape(-1, 4)).reshape(b, n, 4)
            scores = torch.softmax(head["cls_logits"], dim=-1) if self.family == "ssd" else torch.sigmoid(head["cls_logits"])
        boxes = box_ops.clip_boxes_to_image(boxes, self.size)
        if self.family == "ssd":
            keep_bg = torch.ones(scores.shape[-1], dtype=scores.dtype)
            keep_bg[0] = 0  # class 0 is background in torchvision's SSD
            scores = _per_class_top_k(scores * keep_bg, self.topk)
        else:
            scores = torch.cat([_pair_top_k(s, self.topk) for s in scores.split(self.level_sizes, dim=1)], dim=1)
        return boxes, scores


def _per_class_top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Zero every score below its class's k-th best over the boxes: [B,N,C]."""
    k = min(k, scores.shape[1])
    kth = scores.topk(k, dim=1).values[:, -1:, :]
    return torch.where(scores >= kth, scores, torch.zeros_like(scores))


def _pair_top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Zero every score below the k-th best (box, class) pair of this level: [B,N_l,C]."""
    flat = scores.flatten(1)
    k = min(k, flat.shape[1])
    kth = flat.topk(k, dim=1).values[:, -1:].unsqueeze(-1)
    return torch.where(scores >= kth, scores, torch.zeros_like(scores))


def detection_adapter(model: nn.Module, size: tuple[int, int], task: str = "detection", proposals: Any = None,
                      end2end: bool | None = None) -> nn.Module:
    """The export adapter of a detector: the model's own (`export_adapter(size)`), or torchvision's.
    task: detection, or instance_segmentation / keypoints (Mask / Keypoint R-CNN only).
    proposals: the recipe's export.proposals (external-proposal mode: the second stage only).
    end2end: the recipe's export.end2end (Ultralytics heads with a one-to-one branch only)."""
    from edgevision.export.proposals import ProposalAdapter
    from edgevision.export.two_stage import SUPPORTED as TWO_STAGE, TwoStageAdapter, is_two_stage
    from edgevision.export.rtdetr import RTDETRAdapter, is_rtdetr
    from edgevision.export.ultralytics import UltralyticsAdapter, is_ultralytics

    if is_ultralytics(model):
        if proposals is not None:
            raise ExportError("export.proposals is for torchvision R-CNNs; an Ultralytics model takes images only")
        if is_rtdetr(model):
            if end2end is not None:
                raise ExportError("export.end2end: RT-DETR has one head, a set predictor without NMS: remove it")
            return RTDETRAdapter(model, size, task)
        return UltralyticsAdapter(model, size, task, end2end)
    if end2end is not None:
        raise ExportError("export.end2end chooses the branch of an Ultralytics head that has a one-to-one (NMS-free) "
                          f"branch (YOLO26, YOLOv10); {type(model).__name__} has none: remove export.end2end")
    if proposals is not None:
        return ProposalAdapter(model, size, proposals.style, proposals.max, proposals.crop)
    if is_two_stage(model):
        return TwoStageAdapter(model, size, task)
    if task != "detection":
        raise ExportError(f"task '{task}' needs a two-stage model with that head ({TWO_STAGE}); "
                          f"{type(model).__name__} is a one-stage detector (use task: detection)")
    own = getattr(model, "export_adapter", None)
    if callable(own):
        return own(size)
    return OneStageAdapter(model, size)
