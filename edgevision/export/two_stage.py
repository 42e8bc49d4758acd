"""Export adapter for torchvision's Faster R-CNN: one graph, static shapes, batch > 1.

images [B,3,H,W] (normalised, network size) ->
  backbone + FPN -> RPN head -> anchor decode (anchors precomputed for the input size)
  -> per-level pre-NMS top-k -> sigmoid, clip, small boxes dropped
  -> NMS per level (torchvision's batched_nms over levels), as a keep mask  [nms_keep_mask]
  -> the post-NMS top-k proposals [B,K,4] (padding rows marked invalid)
  -> multi-level RoI Align (ONNX RoiAlign, torchvision's level mapping) -> box head
  -> per-class box decode, clip, softmax
  -> boxes [B,K*m,4], scores [B,K*m,C]: every proposal's m best classes as one-hot score rows,
     so the canonical per-class NMS appended after export (export/nms.py) is torchvision's
     batched_nms over labels.

m = min(C-1, ceil(1/score_thresh)-1): softmax scores sum to 1, so at most m classes of a proposal
can pass score_thresh; keeping m per proposal loses nothing torchvision would keep.

Level mapping and sampling are torchvision's own (LevelMapper: canonical size 224, level 4,
clamped to the FPN levels the pooler uses; RoIAlign aligned=False, i.e. ONNX RoiAlign
'output_half_pixel', sampling_ratio 2), so the pooled features equal torchvision's. Every level
is pooled for every RoI and the right one selected by mask: static shapes, no data-dependent
gathers, at the cost of pooling each RoI once per level (cheap next to the box head).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.models.detection.faster_rcnn import FasterRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import concat_box_prediction_layers
from torchvision.ops import boxes as box_ops
from torchvision.ops.poolers import MultiScaleRoIAlign, _setup_scales

from edgevision.errors import ExportError
from edgevision.ops.nms import NMSParams

_INT64_MAX = 0x7FFFFFFFFFFFFFFF


@torch.library.custom_op("edgevision::nms_keep_mask", mutates_args=())
def nms_keep_mask(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS as a mask: boxes [B,N,4] xyxy, scores [B,N] (negative: not a candidate) ->
    keep [B,N] float32, 1 where the box survives. Static output shape; exported as ONNX
    NonMaxSuppression + ScatterND (nms_keep_mask_onnx)."""
    out = torch.zeros_like(scores)
    for b in range(boxes.shape[0]):
        idx = torch.nonzero(scores[b] >= 0).squeeze(1)
        keep = torchvision.ops.nms(boxes[b, idx], scores[b, idx], iou_threshold)
        out[b, idx[keep]] = 1.0
    return out


@nms_keep_mask.register_fake
def _nms_keep_mask_fake(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    return torch.empty_like(scores)


def nms_keep_mask_onnx(boxes: Any, scores: Any, iou_threshold: float) -> Any:
    """ONNX lowering of nms_keep_mask (dynamo exporter's custom_translation_table)."""
    from onnx import TensorProto, helper
    from onnxscript import opset18 as op

    selected = op.NonMaxSuppression(boxes, op.Unsqueeze(scores, [1]), op.Constant(value_ints=[_INT64_MAX]),
                                    op.Constant(value_floats=[iou_threshold]), op.Constant(value_floats=[-0.5]))
    where = op.Gather(selected, op.Constant(value_ints=[0, 2]), axis=1)  # [n, 2]: (batch, box)
    ones = op.Expand(op.Constant(value_floats=[1.0]), op.Shape(where, start=0, end=1))
    zeros = op.ConstantOfShape(op.Shape(scores), value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))
    return op.ScatterND(zeros, where, ones)


CUSTOM_OPS = {torch.ops.edgevision.nms_keep_mask.default: nms_keep_mask_onnx}


def is_two_stage(model: nn.Module) -> bool:
    return isinstance(model, FasterRCNN)


class TwoStageAdapter(nn.Module):
    """images [B,3,H,W] -> boxes [B,K*m,4], scores [B,K*m,C] (see the module docstring)."""

    def __init__(self, model: FasterRCNN, size: tuple[int, int]) -> None:
        super().__init__()
        roi = model.roi_heads
        if roi.has_mask() or roi.has_keypoint():
            kind = "Mask R-CNN" if roi.has_mask() else "Keypoint R-CNN"
            raise ExportError(f"{kind} is not supported by this version yet; Faster R-CNN models are "
                              "(fasterrcnn_mobilenet_v3_large_320_fpn, fasterrcnn_mobilenet_v3_large_fpn, "
                              "fasterrcnn_resnet50_fpn, fasterrcnn_resnet50_fpn_v2)")
        if not isinstance(roi.box_roi_pool, MultiScaleRoIAlign):
            raise ExportError(f"roi_heads.box_roi_pool is {type(roi.box_roi_pool).__name__}; only MultiScaleRoIAlign exports")
        self.model = model.eval()
        self.size = (int(size[0]), int(size[1]))
        rpn = model.rpn
        with torch.no_grad():
            dummy = torch.zeros(1, 3, *self.size)
            feats = model.backbone(dummy)
            anchors = rpn.anchor_generator(ImageList(dummy, [self.size]), list(feats.values()))[0]
            objectness, _ = rpn.head(list(feats.values()))
        self.register_buffer("anchors", anchors, persistent=False)
        self.level_sizes = [int(o.shape[1] * o.shape[2] * o.shape[3]) for o in objectness]
        self.pre_nms = [min(int(rpn.pre_nms_top_n()), n) for n in self.level_sizes]
        self.proposals = min(int(rpn.post_nms_top_n()), sum(self.pre_nms))
        self.rpn_nms, self.rpn_min_size, self.rpn_score = float(rpn.nms_thresh), float(rpn.min_size), float(rpn.score_thresh)
        pool = roi.box_roi_pool
        self.pool_names = [k for k in feats if k in pool.featmap_names]
        scales, mapper = _setup_scales([feats[k] for k in self.pool_names], [self.size], pool.canonical_scale,
                                       pool.canonical_level)
        self.scales = [float(s) for s in scales]
        self.mapper = mapper
        self.output_size = tuple(pool.output_size)
        self.sampling_ratio = int(pool.sampling_ratio)
        num_classes = int(roi.box_predictor.cls_score.out_features)
        self.num_classes = num_classes
        self.per_proposal = max(1, min(num_classes - 1, math.ceil(1.0 / max(float(roi.score_thresh), 1e-6)) - 1))

    def nms_params(self, **overrides: Any) -> NMSParams:
        """The box head's thresholds (roi_heads.score_thresh, nms_thresh, detections_per_img)."""
        roi = self.model.roi_heads
        base = dict(score_threshold=float(roi.score_thresh), iou_threshold=float(roi.nms_thresh),
                    max_detections=int(roi.detections_per_img), pre_nms_top_k=self.proposals * self.per_proposal)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return NMSParams(**base)

    def rpn(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """proposals [B,K,4] and valid [B,K] (bool): torchvision's RPN.filter_proposals, static."""
        rpn = self.model.rpn
        b = feats[0].shape[0]
        objectness, deltas = rpn.head(feats)
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        n = self.anchors.shape[0]
        boxes = rpn.box_coder.decode_single(deltas.reshape(b * n, 4), self.anchors.repeat(b, 1)).reshape(b, n, 4)
        objectness = objectness.reshape(b, n)
        picked, levels, start = [], [], 0
        for level, (size, k) in enumerate(zip(self.level_sizes, self.pre_nms)):
            idx = objectness[:, start:start + size].topk(k, dim=1).indices + start
            picked.append(idx)
            levels.append(torch.full((k,), level, dtype=torch.float32))
            start += size
        idx = torch.cat(picked, dim=1)
        scores = torch.sigmoid(torch.gather(objectness, 1, idx))
        boxes = box_ops.clip_boxes_to_image(torch.gather(boxes, 1, idx.unsqueeze(-1).expand(-1, -1, 4)), self.size)
        wh = boxes[..., 2:] - boxes[..., :2]
        ok = (wh >= self.rpn_min_size).all(dim=-1) & (scores >= self.rpn_score)
        scores = torch.where(ok, scores, torch.full_like(scores, -1.0))
        # NMS per level: torchvision's batched_nms, levels kept apart by a coordinate offset
        offset = torch.cat(levels).to(boxes.dtype) * float(max(self.size) + 1)
        keep = nms_keep_mask(boxes + offset[None, :, None], scores, self.rpn_nms)
        kept = torch.where(keep > 0, scores, torch.full_like(scores, -1.0))
        top = kept.topk(self.proposals, dim=1)
        proposals = torch.gather(boxes, 1, top.indices.unsqueeze(-1).expand(-1, -1, 4))
        return proposals, top.values >= 0

    def pool(self, feats: dict[str, torch.Tensor], proposals: torch.Tensor) -> torch.Tensor:
        """Multi-level RoI Align of proposals [B,K,4] -> [B*K, C, h, w]."""
        b, k = proposals.shape[:2]
        rois = proposals.reshape(b * k, 4)
        batch = torch.arange(b, dtype=rois.dtype).repeat_interleave(k).unsqueeze(1)
        rois5 = torch.cat([batch, rois], dim=1)
        maps = [feats[name] for name in self.pool_names]
        if len(maps) == 1 or self.mapper.k_min == self.mapper.k_max:  # one level (MobileNet FPN: equal strides)
            return torchvision.ops.roi_align(maps[0], rois5, self.output_size, self.scales[0], self.sampling_ratio, False)
        levels = self.mapper([rois])
        pooled = 0
        for level, (fmap, scale) in enumerate(zip(maps, self.scales)):
            part = torchvision.ops.roi_align(fmap, rois5, self.output_size, scale, self.sampling_ratio, False)
            pooled = pooled + part * (levels == level).to(part.dtype)[:, None, None, None]
        return pooled

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        roi = self.model.roi_heads
        feats = self.model.backbone(images)
        proposals, valid = self.rpn(list(feats.values()))
        b, k = proposals.shape[:2]
        logits, deltas = roi.box_predictor(roi.box_head(self.pool(feats, proposals)))
        c = self.num_classes
        boxes = roi.box_coder.decode_single(deltas.reshape(b * k, c * 4),
                                            proposals.reshape(b * k, 4)).reshape(b, k, c, 4)
        boxes = box_ops.clip_boxes_to_image(boxes, self.size)[:, :, 1:]  # class 0 is background
        scores = torch.softmax(logits, dim=-1).reshape(b, k, c)[:, :, 1:]
        wh = boxes[..., 2:] - boxes[..., :2]
        ok = (wh >= 1e-2).all(dim=-1) & valid.unsqueeze(-1)  # torchvision: remove_small_boxes(min_size=1e-2)
        scores = torch.where(ok, scores, torch.zeros_like(scores))
        top = scores.topk(self.per_proposal, dim=2)  # [B,K,m]
        labels = top.indices + 1
        boxes = torch.gather(boxes, 2, top.indices.unsqueeze(-1).expand(-1, -1, -1, 4)).reshape(b, k * self.per_proposal, 4)
        columns = torch.arange(c, dtype=labels.dtype)
        onehot = (labels.reshape(b, -1, 1) == columns).to(scores.dtype)
        return boxes, onehot * top.values.reshape(b, -1, 1)


def torchvision_two_stage(model: FasterRCNN, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """torchvision's own RPN and RoI heads on the same normalised tensors (the parity oracle)."""
    size = tuple(images.shape[-2:])
    image_list = ImageList(images, [size] * images.shape[0])
    feats = model.backbone(images)
    proposals, _ = model.rpn(image_list, feats)
    detections, _ = model.roi_heads(feats, proposals, image_list.image_sizes)
    return detections


def as_contract(detections: list[dict[str, torch.Tensor]], k: int) -> dict[str, np.ndarray]:
    """torchvision's per-image detection dicts as the padded contract outputs (num_dets [B,1],
    boxes [B,k,4], scores [B,k], labels [B,k]), to compare with an artifact's outputs."""
    b = len(detections)
    out = {"num_dets": np.zeros((b, 1), np.int32), "boxes": np.zeros((b, k, 4), np.float32),
           "scores": np.zeros((b, k), np.float32), "labels": np.zeros((b, k), np.int32)}
    for i, d in enumerate(detections):
        n = len(d["boxes"])
        out["num_dets"][i, 0] = n
        out["boxes"][i, :n], out["scores"][i, :n], out["labels"][i, :n] = d["boxes"], d["scores"], d["labels"]
    return out
