"""Export adapter for Ultralytics YOLO detect / segment / pose models (YOLOv8, YOLO11, YOLOv10, YOLO26
and the other families whose head is Ultralytics' Detect, Segment or Pose, or their v10 / 26 forms).

Heads with two branches (YOLO26, YOLOv10): a one-to-many branch, decoded and NMS'd as below, and a
one-to-one (NMS-free) branch, whose detections are a top-k over (anchor, class) scores. Which one is
exported is `export.end2end`: unset, the branch Ultralytics' own predictor runs by default (`nms=None`:
the one-to-many branch with NMS, unless fusion removed it); true, the one-to-one branch, as Ultralytics'
`nms=False` (its `Detect.postprocess`: the best max_det anchors by their best class score, then the
best max_det (anchor, class) pairs among them; `export.nms.class_agnostic: true` is its agnostic_nms:
one best class per anchor); false, the one-to-many branch. `branch` names the choice (manifest and
compile summary). The one-to-one outputs are padded to the same contract as the NMS's.

The adapter runs the network layer by layer (Ultralytics' own `_predict_once`), then the head's
convolutions, and decodes in the graph with anchors precomputed for the fixed input size:
DFL -> distances -> xyxy boxes in network-input pixels, sigmoid class scores (all of it in float
under INT8: see `dfl`); for pose,
keypoints (x, y in network-input pixels, sigmoid visibility) as the head's export path does.

Candidates are those of Ultralytics' `non_max_suppression` with its predict defaults
(conf 0.25, IoU 0.7, max_det 300, class-aware): each box competes for its best class only
(`multi_label: false`), so the other class scores are zeroed. `export.nms.multi_label: true`
keeps every class above the threshold, as Ultralytics' validator does.

  detection             boxes [B,N,4], scores [B,N,C]; the canonical NMS is appended after export.
  keypoints             the NMS in the graph (as Mask / Keypoint R-CNN's), then the kept boxes'
                        keypoints [B,D,K,3]
  instance_segmentation the NMS in the graph, then the kept boxes' mask_coefficients [B,D,M] and the
                        image's protos [B,M,H/4,W/4]: masks are finished on the host
                        (runtime/instances.proto_masks), as Ultralytics' process_mask.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgevision.errors import ExportError
from edgevision.export.rcnn_ops import nms_keep_mask
from edgevision.ops.nms import NMSParams

HEADS = {"Detect": "detection", "v10Detect": "detection", "Segment": "instance_segmentation",
         "Segment26": "instance_segmentation", "Pose": "keypoints", "Pose26": "keypoints", "OBB": "oriented_detection",
         "OBB26": "oriented_detection"}
BRANCHES = {False: "one-to-many (NMS)", True: "one-to-one (NMS-free top-k)"}
OUTPUTS = {"detection": ["boxes", "scores"],
           "keypoints": ["num_dets", "boxes", "scores", "labels", "keypoints"],
           "instance_segmentation": ["num_dets", "boxes", "scores", "labels", "mask_coefficients", "protos"],
           "oriented_detection": ["num_dets", "boxes", "scores", "labels", "rboxes"]}


def is_ultralytics(model: nn.Module) -> bool:
    return type(model).__module__.startswith("ultralytics.") and hasattr(model, "model") and hasattr(model, "save")


class UltralyticsAdapter(nn.Module):
    """images [B,3,H,W] (RGB, 0..1, letterboxed) -> the outputs of `output_names`."""

    def __init__(self, model: nn.Module, size: tuple[int, int], task: str, end2end: bool | None = None) -> None:
        super().__init__()
        self.model = model.eval()
        self.head = model.model[-1]
        kind = type(self.head).__name__
        if HEADS.get(kind) is None:
            raise ExportError(f"this Ultralytics model has a {kind} head; edgevision compiles the {', '.join(HEADS)} "
                              "heads (YOLOv8, YOLO11, YOLOv10, YOLO26, ...)")
        self.end2end = _branch(self.head, end2end)
        self.branch = BRANCHES[self.end2end]
        if HEADS[kind] != task:
            raise ExportError(f"the Ultralytics model has a {kind} head, which is task '{HEADS[kind]}', not '{task}'")
        self.task, self.size, self.multi_label = task, (int(size[0]), int(size[1])), False
        stride = int(max(self.head.stride))
        if self.size[0] % stride or self.size[1] % stride:
            raise ExportError(f"input.size {list(self.size)} must be a multiple of the model's largest stride, {stride} "
                              f"(e.g. {[max(stride, round(v / stride) * stride) for v in self.size]})")
        from ultralytics.utils.tal import make_anchors

        with torch.no_grad():
            feats = self.features(torch.zeros(1, 3, *self.size))
        anchors, strides = make_anchors(feats, self.head.stride, 0.5)
        self.register_buffer("anchors", anchors.transpose(0, 1).unsqueeze(0), persistent=False)  # [1,2,N]
        self.register_buffer("strides", strides.transpose(0, 1), persistent=False)  # [1,N]
        top_k = 1000 if task == "oriented_detection" else 30000  # the rotated NMS is a top_k x top_k matrix
        self.nms = NMSParams(score_threshold=0.25, iou_threshold=0.7, max_detections=300,
                             pre_nms_top_k=min(top_k, anchors.shape[0]))
        self.eval()

    @property
    def output_names(self) -> list[str]:
        if self.task == "detection" and self.end2end:
            return list(OUTPUTS["keypoints"][:4])
        return list(OUTPUTS[self.task])

    def nms_params(self, multi_label: bool | None = None, **overrides: Any) -> NMSParams:
        """Ultralytics' predict defaults, with the recipe's overrides (export.nms)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if self.end2end and multi_label is not None:
            raise ValueError("multi_label is for the one-to-many head's NMS; the one-to-one head's top-k already "
                             "ranks every (anchor, class) pair (class_agnostic: true keeps one class per anchor)")
        if self.task != "detection" and not self.end2end and multi_label:
            raise ValueError("multi_label is for task detection (the pose / segment / OBB NMS runs in the graph, per "
                             "best class); remove it")
        if self.task in ("keypoints", "instance_segmentation") and not self.end2end and given.get("class_agnostic"):
            raise ValueError("class_agnostic is for tasks detection and oriented_detection (the pose / segment NMS "
                             "runs in the graph, per best class); remove it")
        self.multi_label = bool(multi_label)
        self.nms = NMSParams(**{**self.nms.to_dict(), **given})
        return self.nms

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The head's inputs: Ultralytics' BaseModel._predict_once up to the last layer."""
        saved: list[Any] = []
        for m in self.model.model[:-1]:
            if m.f != -1:
                x = saved[m.f] if isinstance(m.f, int) else [x if j == -1 else saved[j] for j in m.f]
            x = m(x)
            saved.append(x if m.i in self.model.save else None)
        return [x if j == -1 else saved[j] for j in self.head.f]

    def forward(self, images: torch.Tensor) -> Any:
        if self.training:  # BatchNorm re-estimation: the network's own forward is enough
            return self.model(images)
        feats = self.features(images)
        raw = self.head.forward_head(feats, **(self.head.one2one if self.end2end else self.head.one2many))
        b = images.shape[0]
        dist = self.dfl(raw["boxes"]) * self.strides  # [B,4,N]: left, top, right, bottom in pixels
        centre = self.anchors * self.strides
        if self.task == "oriented_detection":
            return self.oriented(dist, centre, raw["angle"], raw["scores"].sigmoid().transpose(1, 2))
        boxes = torch.cat([centre - dist[:, :2], centre + dist[:, 2:]], dim=1).transpose(1, 2)  # [B,N,4] xyxy
        scores = raw["scores"].sigmoid().transpose(1, 2)  # [B,N,C]
        if self.task == "detection" and not self.end2end:
            if self.multi_label:
                return boxes, scores
            best = scores.amax(dim=2, keepdim=True)
            return boxes, torch.where(scores >= best, scores, torch.zeros_like(scores))
        num, boxes, best, labels, index = self.top_k(boxes, scores) if self.end2end else self.final_nms(boxes, scores)
        if self.task == "detection":
            return num, boxes, best, labels
        if self.task == "keypoints":
            k, ndim = (int(v) for v in self.head.kpt_shape)
            y = raw["kpts"].view(b, k, ndim, -1)
            offset = y[:, :, :2] if _is(self.head, "Pose26") else y[:, :, :2] * 2.0 - 0.5  # Pose26.kpts_decode
            xy = (offset + self.anchors.unsqueeze(1)) * self.strides.unsqueeze(1)
            points = torch.cat([xy, y[:, :, 2:3].sigmoid()], dim=2) if ndim == 3 else xy  # [B,K,ndim,N]
            points = points.permute(0, 3, 1, 2).flatten(2)  # [B,N,K*ndim]
            return num, boxes, best, labels, self.gather(points, index, num).view(b, -1, k, ndim)
        coefficients = self.gather(raw["mask_coefficient"].transpose(1, 2), index, num)
        protos = self.head.proto(feats if _is(self.head.proto, "Proto26") else feats[0])  # Proto26 fuses every level
        return num, boxes, best, labels, coefficients, protos

    def oriented(self, dist: torch.Tensor, centre: torch.Tensor, angle: torch.Tensor, scores: torch.Tensor) -> Any:
        """OBB heads: Ultralytics' dist2rbox in pixels (the distances rotated by the head's angle, radians:
        OBB's sigmoid-mapped [-pi/4, 3pi/4], OBB26's raw), then its rotated NMS (export/obb.py) or the
        one-to-one top-k -> num_dets, boxes (the axis-aligned boxes around them), scores, labels, rboxes [B,D,5]
        (cx, cy, w, h, angle in network pixels)."""
        from edgevision.export.obb import enclosing, rotated_nms

        lt, rb = dist[:, :2], dist[:, 2:]
        cos, sin = angle.cos(), angle.sin()
        half_x, half_y = ((rb - lt) / 2).split(1, dim=1)
        xy = torch.cat([half_x * cos - half_y * sin, half_x * sin + half_y * cos], dim=1) + centre
        rboxes = torch.cat([xy, lt + rb, angle], dim=1).transpose(1, 2)  # [B,N,5]
        if self.end2end:
            num, found, best, labels, _ = self.top_k(rboxes, scores)
        else:
            p = self.nms
            top, classes = scores.max(dim=2)
            num, best, labels, index = rotated_nms(rboxes, top, classes, p.score_threshold, p.iou_threshold,
                                                   p.pre_nms_top_k, p.max_detections, bool(p.class_agnostic))
            found = self.gather(rboxes, index, num)
        valid = (torch.arange(found.shape[1]).unsqueeze(0) < num).unsqueeze(-1).to(found.dtype)
        return num, enclosing(found) * valid, best, labels, found

    def dfl(self, x: torch.Tensor) -> torch.Tensor:
        """Ultralytics' DFL (the expectation of a softmax over reg_max distance bins) as Mul + ReduceSum,
        not its fixed-weight 1x1 Conv: so it is not a weighted layer, and INT8 quantization leaves it in
        float with the rest of the decoding (quantize/graph.py) — quantizing it costs box accuracy."""
        bins = int(self.head.reg_max)
        if bins <= 1:
            return x
        b, _, n = x.shape
        weights = torch.arange(bins, dtype=x.dtype).view(1, 1, bins, 1)
        return (x.view(b, 4, bins, n).softmax(dim=2) * weights).sum(dim=2)

    def final_nms(self, boxes: torch.Tensor, all_scores: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Ultralytics' non_max_suppression (best class per box) in the graph: score > conf, NMS per
        class, the best max_det -> num_dets [B,1], boxes [B,D,4], scores [B,D], labels [B,D], and the
        kept boxes' indices [B,D] (for their keypoints / mask coefficients)."""
        p = self.nms
        scores, labels = all_scores.max(dim=2)
        candidates = torch.where(scores > p.score_threshold, scores, torch.full_like(scores, -1.0))
        keep = nms_keep_mask(boxes, candidates, labels, int(self.head.nc), p.iou_threshold)
        kept = torch.where(keep > 0, candidates, torch.full_like(candidates, -1.0))
        top = kept.topk(min(p.max_detections, kept.shape[1]), dim=1)
        valid = top.values >= 0
        num = valid.to(torch.int32).sum(dim=1, keepdim=True)
        det_boxes = self.gather(boxes, top.indices, num)
        det_scores = torch.where(valid, top.values, torch.zeros_like(top.values))
        det_labels = torch.where(valid, torch.gather(labels, 1, top.indices), torch.zeros_like(top.indices))
        return num, det_boxes, det_scores, det_labels.to(torch.int32), top.indices

    def top_k(self, boxes: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The one-to-one head's selection (Ultralytics' Detect.get_topk_index, then its end-to-end filter
        score > conf): the same five outputs as final_nms, rows in descending score."""
        p, classes = self.nms, scores.shape[2]
        k = min(p.max_detections, scores.shape[1])
        if p.class_agnostic:
            best, labels = scores.max(dim=2)
            values, index = best.topk(k, dim=1)
            labels = torch.gather(labels, 1, index)
        else:
            anchors = scores.amax(dim=2).topk(k, dim=1).indices  # [B,k]
            pairs = torch.gather(scores, 1, anchors.unsqueeze(-1).expand(-1, -1, classes)).flatten(1)  # [B,k*C]
            values, flat = pairs.topk(k, dim=1)
            labels, index = flat % classes, torch.gather(anchors, 1, flat // classes)
        valid = values > p.score_threshold
        num = valid.to(torch.int32).sum(dim=1, keepdim=True)
        det_scores = torch.where(valid, values, torch.zeros_like(values))
        det_labels = torch.where(valid, labels, torch.zeros_like(labels)).to(torch.int32)
        return num, self.gather(boxes, index, num), det_scores, det_labels, index

    @staticmethod
    def gather(values: torch.Tensor, index: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        """values [B,N,F] at index [B,D] -> [B,D,F], rows past num zero."""
        rows = torch.gather(values, 1, index.unsqueeze(-1).expand(-1, -1, values.shape[-1]))
        valid = torch.arange(index.shape[1]).unsqueeze(0) < num
        return rows * valid.unsqueeze(-1).to(rows.dtype)


def _is(module: Any, name: str) -> bool:
    """Whether module is an instance of the Ultralytics class `name` (by name: Ultralytics is optional)."""
    return any(cls.__name__ == name for cls in type(module).__mro__)


def _branch(head: nn.Module, end2end: bool | None) -> bool:
    """export.end2end -> whether to export the one-to-one branch (see the module docstring)."""
    one2one = getattr(head, "one2one_cv2", None) is not None
    one2many = getattr(head, "cv2", None) is not None
    if end2end is None:  # Ultralytics' predictor default (nms=None): one-to-many unless fusion removed it
        return not one2many
    if end2end and not one2one:
        raise ExportError("export.end2end: true, but this Ultralytics model has no one-to-one (NMS-free) head "
                          "(YOLO26 and YOLOv10 have one); remove export.end2end")
    if not end2end and not one2many:
        raise ExportError("export.end2end: false, but this checkpoint's one-to-many head was removed when it was "
                          "fused; only its one-to-one head is left: remove export.end2end")
    return bool(end2end)
