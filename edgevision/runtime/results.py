"""Result types returned by Predictor.predict: numpy only, identical on every backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from edgevision.errors import InputError


@dataclass
class Classification:
    """Top-k classes of one image, best first."""

    class_ids: np.ndarray  # [k] int
    scores: np.ndarray  # [k] float32 softmax probabilities
    names: List[str] = field(default_factory=list)  # [k] label names

    @property
    def top1(self) -> int:
        return int(self.class_ids[0])

    @property
    def label(self) -> str:
        return self.names[0] if self.names else str(self.top1)

    def __len__(self) -> int:
        return len(self.class_ids)

    def to_dict(self) -> Dict[str, object]:
        return {"top": [{"class_id": int(c), "label": n, "score": float(s)}
                        for c, n, s in zip(self.class_ids, self.names or [str(c) for c in self.class_ids], self.scores)]}

    def __repr__(self) -> str:
        best = ", ".join(f"{n}={s:.3f}" for n, s in zip(self.names or map(str, self.class_ids), self.scores))
        return f"Classification({best})"


@dataclass
class Segmentation:
    """Per-pixel classes at the original image size."""

    label_map: np.ndarray  # [H,W] int32 class ids
    labels: List[str] = field(default_factory=list)  # class names, index order
    scores: Optional[np.ndarray] = None  # [C,H,W] float32 softmax probabilities, when asked for

    @property
    def shape(self) -> tuple:
        return self.label_map.shape

    def areas(self) -> Dict[str, int]:
        """Pixel count per class present in the image, by name."""
        ids, counts = np.unique(self.label_map, return_counts=True)
        return {self.name_of(int(i)): int(c) for i, c in zip(ids, counts)}

    def mask(self, class_id: int) -> np.ndarray:
        return self.label_map == class_id

    def name_of(self, i: int) -> str:
        return self.labels[i] if 0 <= i < len(self.labels) else str(i)

    def to_dict(self) -> Dict[str, object]:
        return {"height": int(self.shape[0]), "width": int(self.shape[1]), "areas": self.areas()}

    def __repr__(self) -> str:
        return f"Segmentation(height={self.shape[0]}, width={self.shape[1]}, areas={self.areas()})"


class Detections:
    """Boxes (xyxy, original image pixels), scores and class ids of one image, best first.

    len(d), d[i] / d[mask] / d[1:3] (a Detections), d.filter(min_score=, classes=), d.names.
    Mask R-CNN: d.masks, boolean [N,H,W] at the original size (pasted when first read, so filter
    first to paste fewer), d.mask_probs [N,28,28], d.rle(). YOLO-seg: d.masks and d.rle() the same
    way, made from prototypes (d.mask_source). Keypoint R-CNN and YOLO-pose: d.keypoints [N,K,3]
    (x, y, visibility 1, original pixels) and d.keypoint_scores [N,K]. YOLO-OBB: d.rotated [N,5]
    (cx, cy, w, h, angle in radians, original pixels), d.polygons [N,4,2] (their corners); d.boxes are
    the axis-aligned boxes around them. From a stream with tracking: d.track_ids [N].
    """

    def __init__(self, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, labels: Optional[List[str]] = None,
                 *, mask_probs: Optional[np.ndarray] = None, image_size: Optional[Tuple[int, int]] = None,
                 keypoints: Optional[np.ndarray] = None, keypoint_scores: Optional[np.ndarray] = None,
                 mask_source: Optional[Any] = None, rotated: Optional[np.ndarray] = None) -> None:
        self.boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        self.class_ids = np.asarray(class_ids, dtype=np.int64).reshape(-1)
        if not len(self.boxes) == len(self.scores) == len(self.class_ids):
            raise ValueError("Detections: boxes, scores and class_ids must have the same length")
        if mask_probs is not None and (image_size is None or len(mask_probs) != len(self.boxes)):
            raise ValueError("Detections: mask_probs needs one mask per box and the image_size (height, width)")
        self.labels = list(labels or [])
        self.mask_probs = None if mask_probs is None else np.asarray(mask_probs, dtype=np.float32)
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        if mask_source is not None and len(mask_source) != len(self.boxes):
            raise ValueError("Detections: mask_source needs one mask per box")
        self.mask_source = mask_source  # made when read: .render() -> bool [N,H,W] (runtime.instances.ProtoMasks)
        self.keypoints = keypoints
        self.keypoint_scores = keypoint_scores
        if rotated is not None and len(rotated) != len(self.boxes):
            raise ValueError("Detections: rotated needs one (cx, cy, w, h, angle) per box")
        self.rotated = None if rotated is None else np.asarray(rotated, dtype=np.float32).reshape(-1, 5)
        self.track_ids: Optional[np.ndarray] = None  # [N] int, set by Predictor.stream(track=True)
        self._masks: Optional[np.ndarray] = None

    @classmethod
    def empty(cls, labels: Optional[List[str]] = None) -> "Detections":
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0), labels)

    @property
    def names(self) -> List[str]:
        return [self.labels[c] if 0 <= c < len(self.labels) else str(c) for c in self.class_ids]

    @property
    def has_masks(self) -> bool:
        return self.mask_probs is not None or self.mask_source is not None

    @property
    def masks(self) -> Optional[np.ndarray]:
        """Boolean instance masks [N,H,W] at the original image size (None without a mask head)."""
        if self._masks is None and self.mask_source is not None:
            self._masks = self.mask_source.render()
        elif self._masks is None and self.mask_probs is not None and self.image_size is not None:
            from edgevision.runtime.instances import paste_masks

            self._masks = paste_masks(self.mask_probs, self.boxes, *self.image_size)
        return self._masks

    @property
    def polygons(self) -> Optional[np.ndarray]:
        """The rotated boxes' corners [N,4,2] (x, y, original pixels), as Ultralytics' xywhr2xyxyxyxy
        (None without rotated boxes)."""
        if self.rotated is None:
            return None
        centre, (w, h, angle) = self.rotated[:, None, :2], self.rotated[:, 2:].T
        cos, sin = np.cos(angle), np.sin(angle)
        along = np.stack([w * cos, w * sin], axis=-1)[:, None] / 2  # half the width, along the box
        across = np.stack([-h * sin, h * cos], axis=-1)[:, None] / 2
        signs = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]], dtype=np.float32)[None, :, :, None]
        return (centre + signs[:, :, 0] * along + signs[:, :, 1] * across).astype(np.float32)

    def rle(self) -> List[Dict[str, object]]:
        """The masks as COCO run-length encodings ({"size": [H, W], "counts": [...]}, uncompressed)."""
        from edgevision.runtime.instances import mask_rle

        masks = self.masks
        return [] if masks is None else [mask_rle(m) for m in masks]

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, index: Union[int, slice, np.ndarray, List[int]]) -> "Detections":
        idx = [index] if isinstance(index, (int, np.integer)) else index
        pick = (lambda a: None if a is None else a[idx])  # noqa: E731
        out = Detections(self.boxes[idx], self.scores[idx], self.class_ids[idx], self.labels, mask_probs=pick(self.mask_probs),
                         image_size=self.image_size, keypoints=pick(self.keypoints), keypoint_scores=pick(self.keypoint_scores),
                         mask_source=pick(self.mask_source), rotated=pick(self.rotated))
        out._masks = pick(self._masks)
        out.track_ids = pick(self.track_ids)
        return out

    def filter(self, min_score: Optional[float] = None, classes: Optional[List[Union[int, str]]] = None) -> "Detections":
        keep = np.ones(len(self), dtype=bool)
        if min_score is not None:
            keep &= self.scores >= min_score
        if classes is not None:
            unknown = [c for c in classes if not isinstance(c, int) and c not in self.labels]
            if unknown:
                raise InputError(f"classes: {', '.join(map(str, unknown))} not among the labels ({', '.join(self.labels)})")
            ids = {c if isinstance(c, int) else self.labels.index(c) for c in classes}
            keep &= np.isin(self.class_ids, sorted(ids))
        return self[keep]

    def to_coco(self, image_id: int, category_ids: Dict[str, int]) -> List[Dict[str, object]]:
        """COCO results entries (with "segmentation" RLE for masks, "keypoints" for keypoints);
        labels without a category (e.g. background) are left out."""
        out = []
        rles = self.rle() if self.has_masks else None
        polygons = self.polygons
        for i, (box, score, name) in enumerate(zip(self.boxes, self.scores, self.names)):
            if name in category_ids:
                x0, y0, x1, y1 = (float(v) for v in box)
                entry: Dict[str, object] = {"image_id": image_id, "category_id": category_ids[name],
                                            "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(score)}
                if rles is not None:
                    entry["segmentation"] = rles[i]
                if self.keypoints is not None:
                    entry["keypoints"] = [round(float(v), 2) for v in self.keypoints[i].reshape(-1)]
                if polygons is not None:  # COCO's polygon segmentation, and the rotated box itself
                    entry["segmentation"] = [[round(float(v), 2) for v in polygons[i].reshape(-1)]]
                    entry["rbox"] = [round(float(v), 4) for v in self.rotated[i]]  # type: ignore[index]
                out.append(entry)
        return out

    def to_dict(self) -> Dict[str, object]:
        items, polygons = [], self.polygons  # the corners of every rotated box, made once
        for i, (b, s, c, n) in enumerate(zip(self.boxes, self.scores, self.class_ids, self.names)):
            item: Dict[str, object] = {"label": n, "class_id": int(c), "score": round(float(s), 4),
                                       "box": [round(float(v), 1) for v in b]}
            if self.track_ids is not None:
                item["track_id"] = int(self.track_ids[i])
            if self.has_masks:
                item["mask_area"] = int(self.masks[i].sum())
            if self.keypoints is not None:
                item["keypoints"] = [[round(float(x), 1), round(float(y), 1), round(float(p), 3)]
                                     for (x, y, _), p in zip(self.keypoints[i], self.keypoint_scores[i])]
            if self.rotated is not None:
                cx, cy, w, h, angle = (float(v) for v in self.rotated[i])
                item["rbox"] = [round(cx, 1), round(cy, 1), round(w, 1), round(h, 1), round(angle, 4)]
                item["polygon"] = [[round(float(x), 1), round(float(y), 1)] for x, y in polygons[i]]  # type: ignore[index]
            items.append(item)
        return {"detections": items}

    def __repr__(self) -> str:
        top = ", ".join(f"{n} {s:.2f}" for n, s in zip(self.names[:5], self.scores[:5]))
        more = f", ... {len(self) - 5} more" if len(self) > 5 else ""
        extra = " +masks" if self.has_masks else (" +keypoints" if self.keypoints is not None else
                                                   " +rotated" if self.rotated is not None else "")
        return f"Detections({len(self)}{extra}: {top}{more})"
