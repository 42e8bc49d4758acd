"""Draw results on images with OpenCV: boxes (rotated ones as polygons) with label, score and track ID, instance masks,
keypoints with the COCO skeleton, segmentation overlays, class labels, and a status line (FPS,
latency). Images are HxWx3 uint8 BGR, as OpenCV reads and writes them; the input is not modified.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np

from edgevision.runtime.preprocess import opencv
from edgevision.runtime.results import Classification, Detections, Segmentation

Result = Union[Classification, Segmentation, Detections]
_PALETTE_RGB = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                         [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128]],
                        dtype=np.uint8)
# COCO person keypoints (torchvision's Keypoint R-CNN order), 1-based pairs as in the COCO annotation file.
COCO_SKELETON = [(16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9), (8, 10),
                 (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7)]
_FONT, _SCALE, _THICK = 0, 0.45, 1  # cv2.FONT_HERSHEY_SIMPLEX


def palette(n: int) -> np.ndarray:
    """n distinct BGR colours; class 0 (background) is black."""
    reps = -(-max(n, 1) // len(_PALETTE_RGB))
    return np.ascontiguousarray(np.tile(_PALETTE_RGB, (reps, 1))[:max(n, 1), ::-1])


def annotate(image: np.ndarray, result: Result, *, alpha: float = 0.5, text: Optional[str] = None) -> np.ndarray:
    """A copy of the BGR image with the result drawn on it (and a status line at the bottom)."""
    out = np.array(image, dtype=np.uint8, copy=True, order="C")
    if isinstance(result, Segmentation):
        _segmentation(out, result, alpha)
    elif isinstance(result, Detections):
        _detections(out, result, alpha)
    elif isinstance(result, Classification):
        text = ", ".join(f"{n} {s:.2f}" for n, s in zip(result.names or map(str, result.class_ids), result.scores[:3]))
        _label(out, text, 4, 4, (0, 0, 0))
    if text:
        status(out, text)
    return out


def status(image: np.ndarray, text: str) -> None:
    """A status line (e.g. FPS and latency) at the bottom left, drawn in place."""
    _label(image, text, 4, image.shape[0] - 22, (0, 0, 0))


def _blend(out: np.ndarray, colours: np.ndarray, where: np.ndarray, alpha: float) -> None:
    """out[where] = (1 - alpha) * out + alpha * colours, in OpenCV (no per-pixel Python)."""
    cv2 = opencv()
    mixed = cv2.addWeighted(out, 1.0 - alpha, colours, alpha, 0.0)
    cv2.copyTo(mixed, where.astype(np.uint8), out)


def _segmentation(out: np.ndarray, result: Segmentation, alpha: float) -> None:
    label_map = result.label_map
    if label_map.shape != out.shape[:2]:
        raise ValueError(f"label map {label_map.shape} does not match the image {out.shape[:2]}")
    colours = palette(int(label_map.max(initial=0)) + 1)[label_map]
    _blend(out, colours, label_map > 0, alpha)
    y = 4
    for name, area in result.areas().items():
        _label(out, f"{name}: {area} px", 4, y, (0, 0, 0))
        y += 18


def _detections(out: np.ndarray, result: Detections, alpha: float) -> None:
    cv2 = opencv()
    colours = palette(max(len(result.labels), int(result.class_ids.max(initial=0)) + 1) + 1)
    if result.has_masks and len(result):
        masks = result.masks
        instance = np.zeros(out.shape[:2], dtype=np.int32)
        for i in range(len(result) - 1, -1, -1):  # best on top
            instance[masks[i]] = i + 1
        ids = np.concatenate([[0], result.class_ids + 1])
        _blend(out, colours[ids[instance]], instance > 0, alpha)
    polygons = result.polygons
    for i, (box, score, cid, name) in enumerate(zip(result.boxes, result.scores, result.class_ids, result.names)):
        colour = tuple(int(v) for v in colours[int(cid) + 1])
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        if polygons is None:
            cv2.rectangle(out, (x0, y0), (x1, y1), colour, 2)
        else:  # the rotated box itself; its label above the box around it
            cv2.polylines(out, [np.round(polygons[i]).astype(np.int32)], True, colour, 2)
        track = f" #{int(result.track_ids[i])}" if result.track_ids is not None and result.track_ids[i] >= 0 else ""
        _label(out, f"{name} {score:.2f}{track}", x0, max(y0 - 18, 0), colour)
        if result.keypoints is not None:
            _keypoints(out, result.keypoints[i], colour)


def _keypoints(out: np.ndarray, points: np.ndarray, colour: tuple) -> None:
    cv2 = opencv()
    xy = [(int(round(float(x))), int(round(float(y)))) for x, y in points[:, :2]]
    if len(xy) == 17:
        for a, b in COCO_SKELETON:
            cv2.line(out, xy[a - 1], xy[b - 1], colour, 2, cv2.LINE_AA)
    for p in xy:
        cv2.circle(out, p, 3, (255, 255, 255), -1, cv2.LINE_AA)


def _label(out: np.ndarray, text: str, x: int, y: int, background: tuple) -> None:
    """Text on a filled box whose top-left corner is (x, y), kept inside the image."""
    cv2 = opencv()
    (w, h), base = cv2.getTextSize(text, _FONT, _SCALE, _THICK)
    x = min(max(x, 0), max(out.shape[1] - w - 4, 0))
    y = min(max(y, 0), max(out.shape[0] - h - base - 4, 0))
    cv2.rectangle(out, (x, y), (x + w + 4, y + h + base + 4), background, -1)
    light = sum(background) > 380
    cv2.putText(out, text, (x + 2, y + h + 2), _FONT, _SCALE, (0, 0, 0) if light else (255, 255, 255), _THICK, cv2.LINE_AA)


def save_overlay(image_rgb: np.ndarray, result: Result, path: Path) -> Path:
    """Write the annotated image (PNG, JPEG ... by suffix); returns the path."""
    cv2 = opencv()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), annotate(image_rgb[..., ::-1], result)):
        raise OSError(f"cannot write {path}")
    return path
