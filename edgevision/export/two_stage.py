"""Export adapter for torchvision's R-CNNs (Faster, Mask, Keypoint): one graph, static shapes, batch > 1.

images [B,3,H,W] (normalised, network size) ->
  backbone + FPN -> RPN head -> anchor decode (anchors precomputed for the input size)
  -> per-level pre-NMS top-k -> sigmoid, clip, small boxes dropped
  -> NMS per level (torchvision's batched_nms over levels), as a keep mask  [rcnn_ops.nms_keep_mask]
  -> the post-NMS top-k proposals [B,K,4] (padding rows marked invalid)
  -> multi-level RoI Align (ONNX RoiAlign, torchvision's level mapping) -> box head  [rcnn_ops.Pooler]
  -> per-class box decode, clip, softmax
  -> every proposal's m best classes: boxes [B,K*m,4], scores [B,K*m]

m = min(C-1, ceil(1/score_thresh)-1): softmax scores sum to 1, so at most m classes of a proposal
can pass score_thresh; keeping m per proposal loses nothing torchvision would keep.

Then, by head:
  boxes (Faster R-CNN, or any R-CNN compiled for task 'detection'): outputs boxes [B,K*m,4] and
    one-hot scores [B,K*m,C]; the canonical per-class NMS is appended after export
    (export/nms.py), which is torchvision's batched_nms over labels.
  masks (Mask R-CNN): the final NMS in the graph (nms_keep_mask grouped by label, the best
    detections_per_img) -> the contract num_dets, boxes, scores, labels, then RoI Align of the
    kept boxes -> mask head -> masks [B,D,28,28]: the probabilities of each detection's own class
    (the runtime pastes them into the image, runtime/instances.py).
  keypoints (Keypoint R-CNN): as masks, with keypoint_heatmaps [B,D,17,56,56] (decoded on the
    host as torchvision's heatmaps_to_keypoints, runtime/keypoints.py).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torchvision.models.detection.faster_rcnn import FasterRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import concat_box_prediction_layers
from torchvision.ops import boxes as box_ops
from torchvision.ops.poolers import MultiScaleRoIAlign

from edgevision.errors import ExportError
from edgevision.export.rcnn_ops import Pooler, nms_keep_mask
from edgevision.ops.nms import NMSParams

SUPPORTED = ("fasterrcnn_mobilenet_v3_large_320_fpn, fasterrcnn_mobilenet_v3_large_fpn, fasterrcnn_resnet50_fpn[_v2] "
             "(task detection); maskrcnn_resnet50_fpn[_v2] (task instance_segmentation or detection); "
             "keypointrcnn_resnet50_fpn (task keypoints or detection)")
HEAD_OUTPUT = {"masks": "masks", "keypoints": "keypoint_heatmaps"}


def is_two_stage(model: nn.Module) -> bool:
    return isinstance(model, FasterRCNN)


def _head_for(model: FasterRCNN, task: str) -> str:
    roi = model.roi_heads
    if task == "detection":
        return "boxes"
    has = {"instance_segmentation": roi.has_mask(), "keypoints": roi.has_keypoint()}
    if task not in has:
        raise ExportError(f"task '{task}': two-stage detectors compile for detection, instance_segmentation or keypoints")
    if not has[task]:
        raise ExportError(f"task '{task}' needs a model with a {'mask' if task == 'instance_segmentation' else 'keypoint'} "
                          f"head; {type(model).__name__} has none (supported: {SUPPORTED})")
    return "masks" if task == "instance_segmentation" else "keypoints"


class TwoStageAdapter(nn.Module):
    """images [B,3,H,W] -> the outputs of `output_names` (see the module docstring)."""

    def __init__(self, model: FasterRCNN, size: tuple[int, int], task: str = "detection") -> None:
        super().__init__()
        self.head = _head_for(model, task)
        roi = model.roi_heads
        pools = {"box_roi_pool": roi.box_roi_pool, "mask_roi_pool": roi.mask_roi_pool, "keypoint_roi_pool": roi.keypoint_roi_pool}
        for name, pool in pools.items():
            if pool is not None and not isinstance(pool, MultiScaleRoIAlign):
                raise ExportError(f"roi_heads.{name} is {type(pool).__name__}; only MultiScaleRoIAlign exports")
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
        self.register_buffer("levels", torch.cat([torch.full((k,), i, dtype=torch.int64) for i, k in enumerate(self.pre_nms)]),
                             persistent=False)
        self.proposals = min(int(rpn.post_nms_top_n()), sum(self.pre_nms))
        self.rpn_nms, self.rpn_min_size, self.rpn_score = float(rpn.nms_thresh), float(rpn.min_size), float(rpn.score_thresh)
        self.box_pool = Pooler(roi.box_roi_pool, feats, self.size)
        self.scales = self.box_pool.scales
        if self.head != "boxes":
            self.head_pool = Pooler(roi.mask_roi_pool if self.head == "masks" else roi.keypoint_roi_pool, feats, self.size)
        self.num_classes = int(roi.box_predictor.cls_score.out_features)
        self.box_nms = NMSParams(score_threshold=float(roi.score_thresh), iou_threshold=float(roi.nms_thresh),
                                 max_detections=int(roi.detections_per_img))

    @property
    def per_proposal(self) -> int:
        """m: the classes kept per proposal (softmax: at most ceil(1/score_threshold)-1 can pass it)."""
        return max(1, min(self.num_classes - 1, math.ceil(1.0 / max(self.box_nms.score_threshold, 1e-6)) - 1))

    @property
    def output_names(self) -> list[str]:
        if self.head == "boxes":
            return ["boxes", "scores"]
        return ["num_dets", "boxes", "scores", "labels", HEAD_OUTPUT[self.head]]

    def nms_params(self, **overrides: Any) -> NMSParams:
        """The box head's NMS: roi_heads.score_thresh, nms_thresh and detections_per_img, with the
        recipe's overrides (export.nms). Masks and keypoints apply it in the graph (final_nms)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if self.head != "boxes" and given.get("class_agnostic"):
            raise ValueError("class_agnostic is not supported for Mask / Keypoint R-CNN (their NMS runs per label in "
                             "the graph, as torchvision's); remove it")
        self.box_nms = NMSParams(**{**self.box_nms.to_dict(), **given})  # m follows the score threshold
        return NMSParams(**{**self.box_nms.to_dict(), "pre_nms_top_k": self.proposals * self.per_proposal, **given})

    def rpn(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """proposals [B,K,4] and valid [B,K] (bool): torchvision's RPN.filter_proposals, static."""
        rpn = self.model.rpn
        b = feats[0].shape[0]
        objectness, deltas = rpn.head(feats)
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        n = self.anchors.shape[0]
        boxes = rpn.box_coder.decode_single(deltas.reshape(b * n, 4), self.anchors.repeat(b, 1)).reshape(b, n, 4)
        objectness = objectness.reshape(b, n)
        picked, start = [], 0
        for size, k in zip(self.level_sizes, self.pre_nms):
            picked.append(objectness[:, start:start + size].topk(k, dim=1).indices + start)
            start += size
        idx = torch.cat(picked, dim=1)
        scores = torch.sigmoid(torch.gather(objectness, 1, idx))
        boxes = box_ops.clip_boxes_to_image(torch.gather(boxes, 1, idx.unsqueeze(-1).expand(-1, -1, 4)), self.size)
        wh = boxes[..., 2:] - boxes[..., :2]
        ok = (wh >= self.rpn_min_size).all(dim=-1) & (scores >= self.rpn_score)
        scores = torch.where(ok, scores, torch.full_like(scores, -1.0))
        keep = nms_keep_mask(boxes, scores, self.levels.expand(b, -1), len(self.pre_nms), self.rpn_nms)
        kept = torch.where(keep > 0, scores, torch.full_like(scores, -1.0))
        top = kept.topk(self.proposals, dim=1)
        proposals = torch.gather(boxes, 1, top.indices.unsqueeze(-1).expand(-1, -1, 4))
        return proposals, top.values >= 0

    def box_stage(self, feats: dict[str, torch.Tensor], proposals: torch.Tensor,
                  valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Box head on proposals [B,K,4] -> each proposal's m best classes: boxes [B,K*m,4],
        scores [B,K*m] (0 where invalid), labels [B,K*m] (torchvision's label ids)."""
        roi = self.model.roi_heads
        b, k = proposals.shape[:2]
        logits, deltas = roi.box_predictor(roi.box_head(self.box_pool(feats, proposals)))
        c = self.num_classes
        boxes = roi.box_coder.decode_single(deltas.reshape(b * k, c * 4),
                                            proposals.reshape(b * k, 4)).reshape(b, k, c, 4)
        boxes = box_ops.clip_boxes_to_image(boxes, self.size)[:, :, 1:]  # class 0 is background
        scores = torch.softmax(logits, dim=-1).reshape(b, k, c)[:, :, 1:]
        wh = boxes[..., 2:] - boxes[..., :2]
        ok = (wh >= 1e-2).all(dim=-1) & valid.unsqueeze(-1)  # torchvision: remove_small_boxes(min_size=1e-2)
        scores = torch.where(ok, scores, torch.zeros_like(scores))
        top = scores.topk(self.per_proposal, dim=2)  # [B,K,m]
        boxes = torch.gather(boxes, 2, top.indices.unsqueeze(-1).expand(-1, -1, -1, 4)).reshape(b, k * self.per_proposal, 4)
        return boxes, top.values.reshape(b, -1), (top.indices + 1).reshape(b, -1)

    def final_nms(self, boxes: torch.Tensor, scores: torch.Tensor,
                  labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """torchvision's postprocess_detections tail in the graph: score > score_thresh, NMS per
        label, the best detections_per_img -> num_dets [B,1], boxes [B,D,4], scores [B,D], labels [B,D]."""
        p = self.box_nms
        candidates = torch.where(scores > p.score_threshold, scores, torch.full_like(scores, -1.0))
        keep = nms_keep_mask(boxes, candidates, labels, self.num_classes, p.iou_threshold)
        kept = torch.where(keep > 0, candidates, torch.full_like(candidates, -1.0))
        top = kept.topk(min(p.max_detections, kept.shape[1]), dim=1)
        valid = top.values >= 0
        det_boxes = torch.gather(boxes, 1, top.indices.unsqueeze(-1).expand(-1, -1, 4)) * valid.unsqueeze(-1).to(boxes.dtype)
        det_scores = torch.where(valid, top.values, torch.zeros_like(top.values))
        det_labels = torch.where(valid, torch.gather(labels, 1, top.indices), torch.zeros_like(top.indices)).to(torch.int32)
        return valid.to(torch.int32).sum(dim=1, keepdim=True), det_boxes, det_scores, det_labels

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        roi = self.model.roi_heads
        feats = self.model.backbone(images)
        proposals, valid = self.rpn(list(feats.values()))
        boxes, scores, labels = self.box_stage(feats, proposals, valid)
        if self.head == "boxes":
            onehot = (labels.unsqueeze(-1) == torch.arange(self.num_classes, dtype=labels.dtype)).to(scores.dtype)
            return boxes, onehot * scores.unsqueeze(-1)
        num, boxes, scores, labels = self.final_nms(boxes, scores, labels)
        b, d = boxes.shape[:2]
        # The mask / keypoint head runs on the kept detections only (a data-dependent count, as in
        # torchvision): on all D slots it would cost D heads per image (~1 GFLOP each for masks).
        kept = torch.nonzero((torch.arange(d) < num).reshape(b * d)).squeeze(1)  # kept slots lead each image
        # One more RoI than kept (slot 0's box; its output is dropped): the head never sees an empty
        # batch, so a head whose ops check for one (BatchNorm in the _v2 builders: a guard on N == 0
        # that the exporter cannot decide for a data-dependent N) exports, and runs with 0 detections.
        rows = torch.cat([kept, kept.new_zeros(1)])
        pooled = self.head_pool.pool(feats, boxes.reshape(b * d, 4)[rows], torch.div(rows, d, rounding_mode="floor"))
        if self.head == "masks":
            logits = roi.mask_predictor(roi.mask_head(pooled))  # [N+1, C, 28, 28]
            own = torch.gather(logits, 1, labels.reshape(b * d)[rows].to(torch.int64).reshape(-1, 1, 1, 1)
                               .expand(-1, 1, *logits.shape[2:]))
            heads = torch.sigmoid(own).squeeze(1)
        else:
            heads = roi.keypoint_predictor(roi.keypoint_head(pooled))  # [N+1, 17, 56, 56]
        heads = heads[:-1]
        out = torch.zeros((b * d, *heads.shape[1:]), dtype=heads.dtype).index_put((kept,), heads)
        return num, boxes, scores, labels, out.reshape(b, d, *heads.shape[1:])
