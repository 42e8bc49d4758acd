"""Export adapter for Ultralytics RT-DETR (its RTDETRDecoder head: rtdetr-l / -x / -resnet50 / -resnet101).

RT-DETR predicts a set: no NMS. Ultralytics 8.4.190 runs the whole selection in the head
(`RTDETRDecoder.postprocess`, eval mode): sigmoid class scores of the last decoder layer, the best
`num_queries` (query, class) pairs by a top-k over queries x classes, each with its query's box
(cx, cy, w, h, normalised to 0..1). Its predictor (`RTDETRPredictor.postprocess`) then keeps the pairs
scoring above conf (0.25) in that order, up to max_det (300), and scales the boxes by the image size:
its input is the image stretched to the network size (`scale_fill = True`), not letterboxed.

The graph runs the network and the head's own selection (so the multi-scale deformable attention,
with its grid_sample, is the model's code as Ultralytics exports it), then does the predictor's part:
xyxy boxes in network pixels, the score threshold as a count (the pairs are sorted), padded to the
NMS's output contract: num_dets [B,1], boxes [B,D,4], scores [B,D], labels [B,D] int32.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgevision.errors import ExportError
from edgevision.ops.nms import NMSParams

OUTPUTS = ["num_dets", "boxes", "scores", "labels"]
HEAD = "RTDETRDecoder"


def is_rtdetr(model: nn.Module) -> bool:
    layers = getattr(model, "model", None)
    return isinstance(layers, nn.Sequential) and type(layers[-1]).__name__ == HEAD


class RTDETRAdapter(nn.Module):
    """images [B,3,H,W] (RGB, 0..1, stretched) -> num_dets, boxes, scores, labels."""

    branch = "set prediction (NMS-free top-k over queries x classes)"
    multi_label = False  # an Ultralytics model: export.nms.multi_label reaches nms_params, which names why it cannot apply

    def __init__(self, model: nn.Module, size: tuple[int, int], task: str) -> None:
        super().__init__()
        if task != "detection":
            raise ExportError(f"RT-DETR is a detector (task detection), not '{task}'")
        self.model, self.head = model.eval(), model.model[-1]
        self.size = (int(size[0]), int(size[1]))
        stride = 32  # the backbone's deepest level
        if self.size[0] % stride or self.size[1] % stride:
            raise ExportError(f"input.size {list(self.size)} must be a multiple of RT-DETR's largest stride, {stride}")
        self.nms = NMSParams(score_threshold=0.25, iou_threshold=1.0, max_detections=300,
                             pre_nms_top_k=int(self.head.num_queries))

    @property
    def output_names(self) -> list[str]:
        return list(OUTPUTS)

    def nms_params(self, **overrides: Any) -> NMSParams:
        """Ultralytics' predict defaults (conf 0.25, max_det 300), with the recipe's score_threshold and
        max_detections; the NMS fields have nothing to act on in a set predictor."""
        given = {k: v for k, v in overrides.items() if v is not None}
        unused = sorted(set(given) - {"score_threshold", "max_detections"})
        if unused:
            raise ValueError(f"{', '.join(unused)}: RT-DETR predicts a set of boxes without an NMS; only "
                             "score_threshold and max_detections apply")
        self.nms = NMSParams(**{**self.nms.to_dict(), **given})
        return self.nms

    def forward(self, images: torch.Tensor) -> Any:
        if self.training:  # BatchNorm re-estimation: the network's own forward is enough
            return self.model(images)
        # the head caches its anchors per feature shape; an export traces them as fake tensors, so they
        # are made afresh on every call (constants in the exported graph)
        self.head.shapes = []
        pairs = self.model(images)[0]  # [B,k,6]: cx, cy, w, h (0..1), score, class; best first
        p, (h, w) = self.nms, self.size
        pairs = pairs[:, : min(p.max_detections, pairs.shape[1])]
        centre, half = pairs[..., 0:2], pairs[..., 2:4] / 2
        scale = torch.tensor([w, h, w, h], dtype=pairs.dtype)
        boxes = torch.cat([centre - half, centre + half], dim=-1) * scale
        valid = pairs[..., 4] > p.score_threshold
        num = valid.to(torch.int32).sum(dim=1, keepdim=True)
        keep = valid.unsqueeze(-1).to(pairs.dtype)
        scores = torch.where(valid, pairs[..., 4], torch.zeros_like(pairs[..., 4]))
        labels = torch.where(valid, pairs[..., 5], torch.zeros_like(pairs[..., 5])).to(torch.int32)
        return num, boxes * keep, scores, labels
