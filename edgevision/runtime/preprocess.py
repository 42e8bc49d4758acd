"""Image -> network input, in numpy: resize (stretch or letterbox), normalise, layout.

The same code feeds every backend and the PyTorch reference, so parity measures the engines,
not the pre-processing. Downscaling averages over each output pixel's footprint (like OpenCV's
INTER_AREA) so camera frames do not alias; upscaling is bilinear with half-pixel centres.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np


@dataclass(frozen=True)
class InputSpec:
    size: Tuple[int, int]  # network (height, width)
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    channel_order: str = "rgb"
    resize: str = "stretch"
    pad_value: int = 114
    layout: str = "nchw"

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "InputSpec":
        return cls(
            size=(int(d["size"][0]), int(d["size"][1])),
            mean=tuple(float(v) for v in d["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in d["std"]),  # type: ignore[arg-type]
            channel_order=d.get("channel_order", "rgb"),
            resize=d.get("resize", "stretch"),
            pad_value=int(d.get("pad_value", 114)),
            layout=d.get("layout", "nchw"),
        )


@dataclass(frozen=True)
class Transform:
    """Maps network-input pixels back to original pixels: x_orig = (x_net - pad_x) / scale_x."""

    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int
    width: int  # original image size
    height: int
    content: Tuple[int, int, int, int]  # x0, y0, x1, y1 of the image inside the network input

    def to_network(self, boxes: np.ndarray) -> np.ndarray:
        """[N,4] xyxy in original pixels -> network-input pixels (the inverse of to_original)."""
        out = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
        out[:, 0::2] = out[:, 0::2] * self.scale_x + self.pad_x
        out[:, 1::2] = out[:, 1::2] * self.scale_y + self.pad_y
        return out

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """[N,4] xyxy in network pixels -> original pixels, clipped to the image."""
        out = boxes.astype(np.float32).copy()
        out[:, 0::2] = (out[:, 0::2] - self.pad_x) / self.scale_x
        out[:, 1::2] = (out[:, 1::2] - self.pad_y) / self.scale_y
        out[:, 0::2] = out[:, 0::2].clip(0, self.width)
        out[:, 1::2] = out[:, 1::2].clip(0, self.height)
        return out


def plan(height: int, width: int, spec: InputSpec) -> Transform:
    oh, ow = spec.size
    if spec.resize == "stretch":
        return Transform(ow / width, oh / height, 0, 0, width, height, (0, 0, ow, oh))
    scale = min(oh / height, ow / width)
    nh, nw = max(1, round(height * scale)), max(1, round(width * scale))
    top, left = (oh - nh) // 2, (ow - nw) // 2
    return Transform(nw / width, nh / height, left, top, width, height, (left, top, left + nw, top + nh))


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """HxWxC (any dtype) -> height x width x C float32; area when shrinking, bilinear when growing."""
    out = image.astype(np.float32, copy=False)
    out = _resize_axis(out, height, axis=0)
    return _resize_axis(out, width, axis=1)


def _resize_axis(a: np.ndarray, n: int, axis: int) -> np.ndarray:
    m = a.shape[axis]
    if m == n:
        return a
    if n < m:  # exact box filter: integral of the input over each output cell
        edges = np.arange(n + 1, dtype=np.float64) * (m / n)
        csum = np.concatenate([np.zeros_like(np.take(a, [0], axis=axis)), np.cumsum(a, axis=axis, dtype=np.float64)], axis=axis)
        lo = np.floor(edges).astype(np.int64).clip(0, m - 1)
        frac = (edges - lo)[(...,) + (None,) * (a.ndim - axis - 1)]
        at = np.take(csum, lo, axis=axis) + frac * np.take(np.diff(csum, axis=axis), lo, axis=axis)
        return (np.diff(at, axis=axis) * (n / m)).astype(np.float32)
    return bilinear_axis(a, n, axis)


def bilinear_axis(a: np.ndarray, n: int, axis: int) -> np.ndarray:
    """Linear interpolation of one axis to n samples at pixel centres (align_corners=False, edges
    clamped, no antialiasing): torch's F.interpolate(mode='bilinear') along that axis."""
    m = a.shape[axis]
    pos = ((np.arange(n) + 0.5) * (m / n) - 0.5).clip(0, m - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, m - 1)
    w = (pos - i0).astype(np.float32)[(...,) + (None,) * (a.ndim - axis - 1)]
    return np.take(a, i0, axis=axis) * (1 - w) + np.take(a, i1, axis=axis) * w


def resize_nearest(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """HxW (or HxWxC) -> height x width by nearest neighbour (pixel centres), for label maps."""
    rows = np.minimum(((np.arange(height) + 0.5) * (labels.shape[0] / height)).astype(np.int64), labels.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * (labels.shape[1] / width)).astype(np.int64), labels.shape[1] - 1)
    return labels[rows][:, cols]


def preprocess(images: Sequence[np.ndarray], spec: InputSpec) -> Tuple[np.ndarray, List[Transform]]:
    """RGB uint8 images -> float32 batch in the network's layout, and one Transform per image."""
    oh, ow = spec.size
    scale = (1.0 / (255.0 * np.asarray(spec.std, dtype=np.float32)))
    shift = np.asarray(spec.mean, dtype=np.float32) / np.asarray(spec.std, dtype=np.float32)
    batch = np.empty((len(images), oh, ow, 3), dtype=np.float32)
    transforms = []
    for k, img in enumerate(images):
        t = plan(img.shape[0], img.shape[1], spec)
        x0, y0, x1, y1 = t.content
        if spec.resize == "letterbox":
            batch[k] = spec.pad_value
        batch[k, y0:y1, x0:x1] = resize(img, y1 - y0, x1 - x0)
        transforms.append(t)
    batch = batch * scale - shift
    if spec.channel_order == "bgr":
        batch = batch[..., ::-1]
    if spec.layout == "nchw":
        batch = batch.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch, dtype=np.float32), transforms
