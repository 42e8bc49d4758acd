"""The two pieces of R-CNN inference that need more than plain tensor ops to export:

- `nms_keep_mask`: greedy NMS per group (RPN levels, box classes) as a static keep mask; a
  torch.library custom op lowered to ONNX NonMaxSuppression + ScatterND (CUSTOM_OPS, given to
  the dynamo exporter's custom_translation_table). Groups are NMS classes, so the IoU is computed
  on the boxes themselves (no coordinate-offset trick, no float32 precision lost to large offsets).
- `Pooler`: torchvision's MultiScaleRoIAlign on boxes [B,K,4] with static shapes.
"""

from __future__ import annotations

from typing import Any

import torch
import torchvision
from torchvision.ops.poolers import MultiScaleRoIAlign, _setup_scales

_INT64_MAX = 0x7FFFFFFFFFFFFFFF


@torch.library.custom_op("edgevision::nms_keep_mask", mutates_args=())
def nms_keep_mask(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, num_groups: int,
                  iou_threshold: float) -> torch.Tensor:
    """Greedy NMS within each group: boxes [B,N,4] xyxy, scores [B,N] (negative: not a
    candidate), groups [B,N] int64 in [0, num_groups) -> keep [B,N] float32, 1 where the box
    survives. torchvision's batched_nms(boxes, scores, groups) as a mask."""
    out = torch.zeros_like(scores)
    for b in range(boxes.shape[0]):
        for g in torch.unique(groups[b]).tolist():
            idx = torch.nonzero((scores[b] >= 0) & (groups[b] == g)).squeeze(1)
            keep = torchvision.ops.nms(boxes[b, idx], scores[b, idx], iou_threshold)
            out[b, idx[keep]] = 1.0
    return out


@nms_keep_mask.register_fake
def _nms_keep_mask_fake(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, num_groups: int,
                        iou_threshold: float) -> torch.Tensor:
    return torch.empty_like(scores)


def nms_keep_mask_onnx(boxes: Any, scores: Any, groups: Any, num_groups: int, iou_threshold: float) -> Any:
    """ONNX lowering of nms_keep_mask: groups become NonMaxSuppression classes."""
    from onnx import TensorProto, helper
    from onnxscript import opset18 as op

    per_class = op.Unsqueeze(scores, [1])  # [B,1,N]
    if num_groups > 1:
        ids = op.Reshape(op.Range(op.Constant(value_int=0), op.Constant(value_int=num_groups), op.Constant(value_int=1)),
                         op.Constant(value_ints=[1, num_groups, 1]))
        member = op.Equal(op.Unsqueeze(groups, [1]), op.CastLike(ids, groups))  # [B,G,N]
        per_class = op.Where(member, per_class, op.Constant(value_floats=[-1.0]))
    selected = op.NonMaxSuppression(boxes, per_class, op.Constant(value_ints=[_INT64_MAX]),
                                    op.Constant(value_floats=[iou_threshold]), op.Constant(value_floats=[-0.5]))
    where = op.Gather(selected, op.Constant(value_ints=[0, 2]), axis=1)  # [n, 2]: (batch, box)
    ones = op.Expand(op.Constant(value_floats=[1.0]), op.Shape(where, start=0, end=1))
    zeros = op.ConstantOfShape(op.Shape(scores), value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))
    return op.ScatterND(zeros, where, ones)


CUSTOM_OPS = {torch.ops.edgevision.nms_keep_mask.default: nms_keep_mask_onnx}


class Pooler:
    """torchvision's MultiScaleRoIAlign for boxes [B,K,4] -> [B*K, C, h, w], static shapes.

    The level mapping is torchvision's LevelMapper (canonical size 224 at level 4, eps 1e-6,
    clamped to the pooled levels) and RoIAlign runs with aligned=False (ONNX RoiAlign
    'output_half_pixel'): the pooled features equal torchvision's. In the exported graph every
    level is pooled for every RoI and the right one selected by mask: no data-dependent gathers.
    Run eagerly (the PyTorch reference of a compile, BatchNorm re-estimation) each RoI is pooled at
    its own level only, as torchvision does: the same values bit for bit (RoI Align pools each RoI
    on its own, and the graph adds exact zeros for the other levels), at a quarter of the work on
    four levels."""

    def __init__(self, pool: MultiScaleRoIAlign, feats: dict[str, torch.Tensor], size: tuple[int, int]) -> None:
        self.names = [k for k in feats if k in pool.featmap_names]
        scales, self.mapper = _setup_scales([feats[k] for k in self.names], [size], pool.canonical_scale,
                                            pool.canonical_level)
        self.scales = [float(s) for s in scales]
        self.output_size = tuple(pool.output_size)
        self.sampling_ratio = int(pool.sampling_ratio)

    def __call__(self, feats: dict[str, torch.Tensor], boxes: torch.Tensor) -> torch.Tensor:
        b, k = boxes.shape[:2]
        batch = torch.arange(b, dtype=boxes.dtype).repeat_interleave(k)
        return self.pool(feats, boxes.reshape(b * k, 4), batch)

    def pool(self, feats: dict[str, torch.Tensor], rois: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """rois [N,4] of images batch [N] (float) -> [N, C, h, w]."""
        rois5 = torch.cat([batch.to(rois.dtype).unsqueeze(1), rois], dim=1)
        maps = [feats[name] for name in self.names]
        if len(maps) == 1 or self.mapper.k_min == self.mapper.k_max:  # one level (MobileNet FPN: equal strides)
            return torchvision.ops.roi_align(maps[0], rois5, self.output_size, self.scales[0], self.sampling_ratio, False)
        levels = self.mapper([rois])
        if not (torch.compiler.is_exporting() or torch.jit.is_tracing() or torch.jit.is_scripting()):
            pooled = rois.new_zeros((rois.shape[0], maps[0].shape[1], *self.output_size))
            for level, (fmap, scale) in enumerate(zip(maps, self.scales)):
                at = torch.nonzero(levels == level).squeeze(1)
                if at.numel():
                    pooled[at] = torchvision.ops.roi_align(fmap, rois5[at], self.output_size, scale, self.sampling_ratio, False)
            return pooled
        pooled = 0
        for level, (fmap, scale) in enumerate(zip(maps, self.scales)):
            part = torchvision.ops.roi_align(fmap, rois5, self.output_size, scale, self.sampling_ratio, False)
            pooled = pooled + part * (levels == level).to(part.dtype)[:, None, None, None]
        return pooled
