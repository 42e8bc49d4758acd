"""A small YOLO-style detector: the seeds' idea (each grid cell predicts classes and a box) in a
modern anchor-free, multi-scale form (strides 8/16/32, FPN neck, decoupled heads, box as
distances to the cell centre). Sizes: n and s via width/depth multipliers. Trains on the
shapes dataset on CPU in minutes.

train mode: forward -> raw per-level outputs for `loss`;
eval mode / export: forward -> boxes [B,N,4] xyxy (input pixels), scores [B,N,C] (sigmoid).
Targets are assigned FCOS-style (centre sampling, one scale range per level); the loss is
sigmoid focal loss + GIoU loss from torchvision.ops.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from edgevision.ops.nms import NMSParams

SIZES = {"n": (0.25, 0.34), "s": (0.5, 0.34)}  # width, depth multipliers (of 64..512 channels, 3 blocks)
STRIDES = (8, 16, 32)


def conv(cin: int, cout: int, k: int = 3, s: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), nn.SiLU(inplace=True))


class Block(nn.Module):
    """CSP-style stage: split, a few residual 3x3 pairs on one half, concatenate, fuse."""

    def __init__(self, cin: int, cout: int, n: int) -> None:
        super().__init__()
        half = cout // 2
        self.a, self.b = conv(cin, half, 1), conv(cin, half, 1)
        self.m = nn.ModuleList(nn.Sequential(conv(half, half), conv(half, half)) for _ in range(n))
        self.out = conv(2 * half, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a(x)
        for m in self.m:
            a = a + m(a)
        return self.out(torch.cat([a, self.b(x)], dim=1))


class YOLO(nn.Module):
    def __init__(self, num_classes: int, size: str = "n", width: float | None = None, depth: float | None = None) -> None:
        super().__init__()
        if size not in SIZES:
            raise ValueError(f"YOLO size must be one of {', '.join(SIZES)}, got {size!r}")
        w, d = SIZES[size]
        w, d = width or w, depth or d
        ch = [max(8, int(c * w)) for c in (64, 128, 256, 512)]
        n = max(1, round(3 * d))
        self.num_classes = num_classes
        self.stem = nn.Sequential(conv(3, ch[0] // 2, 3, 2), conv(ch[0] // 2, ch[0], 3, 2))  # stride 4
        self.stages = nn.ModuleList(nn.Sequential(conv(ch[i], ch[i + 1], 3, 2), Block(ch[i + 1], ch[i + 1], n))
                                    for i in range(3))  # strides 8, 16, 32
        self.lateral = nn.ModuleList(conv(c, ch[1], 1) for c in ch[1:])
        self.smooth = nn.ModuleList(Block(ch[1], ch[1], 1) for _ in STRIDES)
        self.cls = nn.ModuleList(nn.Sequential(conv(ch[1], ch[1]), nn.Conv2d(ch[1], num_classes, 1)) for _ in STRIDES)
        self.box = nn.ModuleList(nn.Sequential(conv(ch[1], ch[1]), nn.Conv2d(ch[1], 4, 1)) for _ in STRIDES)
        prior = -math.log((1 - 0.01) / 0.01)  # start every class at probability 0.01 (focal loss)
        for head in self.cls:
            nn.init.constant_(head[-1].bias, prior)

    def raw(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per level (stride 8, 16, 32): class logits [B,C,h,w], box distances [B,4,h,w] in strides."""
        feats, y = [], self.stem(x)
        for stage in self.stages:
            y = stage(y)
            feats.append(y)
        laterals = [lat(f) for lat, f in zip(self.lateral, feats)]
        for i in (1, 0):  # top-down
            laterals[i] = laterals[i] + F.interpolate(laterals[i + 1], size=laterals[i].shape[-2:], mode="nearest")
        outs = []
        for i, f in enumerate(laterals):
            f = self.smooth[i](f)
            outs.append((self.cls[i](f), F.softplus(self.box[i](f))))
        return outs

    def forward(self, x: torch.Tensor) -> Any:
        outs = self.raw(x)
        return outs if self.training else decode(outs, x.shape[-2:])

    def export_adapter(self, size: Sequence[int]) -> "YOLOAdapter":
        return YOLOAdapter(self)

    def loss(self, outs: list[tuple[torch.Tensor, torch.Tensor]], targets: list[dict[str, torch.Tensor]],
             size: Sequence[int]) -> torch.Tensor:
        """targets[i]: boxes [M,4] xyxy in input pixels, labels [M] in 0..C-1."""
        points, strides, _ = grid(size, [o[0].shape[-2:] for o in outs])
        logits = torch.cat([c.flatten(2) for c, _ in outs], dim=2).transpose(1, 2)  # [B,N,C]
        dist = torch.cat([b.flatten(2) for _, b in outs], dim=2).transpose(1, 2) * strides[None, :, None]
        cls_target = torch.zeros_like(logits)
        box_loss, positives = logits.new_zeros(()), 0
        for i, t in enumerate(targets):
            gt_index = assign(points, strides, t["boxes"])
            pos = gt_index >= 0
            if pos.any():
                cls_target[i, pos, t["labels"][gt_index[pos]]] = 1.0
                pred = torch.cat([points[pos] - dist[i, pos, :2], points[pos] + dist[i, pos, 2:]], dim=1)
                box_loss = box_loss + generalized_box_iou_loss(pred, t["boxes"][gt_index[pos]], reduction="sum")
                positives += int(pos.sum())
        norm = max(positives, 1)
        cls_loss = sigmoid_focal_loss(logits, cls_target, reduction="sum")
        return (cls_loss + 2.0 * box_loss) / norm


class YOLOAdapter(nn.Module):
    """Export form: boxes [B,N,4] and sigmoid scores [B,N,C]; NMS is appended in the graph."""

    def __init__(self, model: YOLO) -> None:
        super().__init__()
        self.model = model

    def nms_params(self, **overrides: Any) -> NMSParams:
        base = dict(score_threshold=0.05, iou_threshold=0.5, max_detections=100, pre_nms_top_k=1000)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return NMSParams(**base)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return decode(self.model.raw(images), images.shape[-2:])


def grid(size: Sequence[int], shapes: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Cell centres [N,2] (x, y pixels), their strides [N], and cells per level."""
    points, strides, counts = [], [], []
    for s, (h, w) in zip(STRIDES, shapes):
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
        points.append(torch.stack([(xs.flatten() + 0.5) * s, (ys.flatten() + 0.5) * s], dim=1))
        strides.append(torch.full((h * w,), float(s)))
        counts.append(h * w)
    return torch.cat(points), torch.cat(strides), counts


def decode(outs: list[tuple[torch.Tensor, torch.Tensor]], size: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    points, strides, _ = grid(size, [o[0].shape[-2:] for o in outs])
    scores = torch.cat([c.flatten(2) for c, _ in outs], dim=2).transpose(1, 2).sigmoid()
    dist = torch.cat([b.flatten(2) for _, b in outs], dim=2).transpose(1, 2) * strides[None, :, None]
    boxes = torch.cat([points[None] - dist[..., :2], points[None] + dist[..., 2:]], dim=2)
    h, w = int(size[0]), int(size[1])
    limit = torch.tensor([w, h, w, h], dtype=boxes.dtype)
    return torch.minimum(boxes.clamp(min=0), limit), scores


def assign(points: torch.Tensor, strides: torch.Tensor, boxes: torch.Tensor, radius: float = 2.5) -> torch.Tensor:
    """For each cell, the index of its ground-truth box (-1: background). A cell is positive for a
    box if it lies inside the box and within `radius` strides of its centre, and the box's size
    suits the cell's level (max side in [4, 16] strides, unbounded at the ends); ties go to the
    smallest box."""
    if len(boxes) == 0:
        return torch.full((len(points),), -1, dtype=torch.long)
    x, y = points[:, 0:1], points[:, 1:2]
    inside = (x > boxes[:, 0]) & (x < boxes[:, 2]) & (y > boxes[:, 1]) & (y < boxes[:, 3])
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    near = ((x - cx).abs() < radius * strides[:, None]) & ((y - cy).abs() < radius * strides[:, None])
    side = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])[None]
    s = strides[:, None]
    lo = torch.where(s == STRIDES[0], torch.zeros_like(s), 4 * s)
    hi = torch.where(s == STRIDES[-1], torch.full_like(s, float("inf")), 16 * s)
    ok = inside & near & (side >= lo) & (side <= hi)
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[None].expand_as(ok)
    area = torch.where(ok, area, torch.full_like(area, float("inf")))
    best = area.argmin(dim=1)
    return torch.where(ok.any(dim=1), best, torch.full_like(best, -1))


def yolo(num_classes: int, size: str = "n") -> YOLO:
    return YOLO(num_classes=num_classes, size=size)
