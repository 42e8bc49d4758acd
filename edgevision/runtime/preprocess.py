"""Image -> network input: resize (stretch, letterbox or center_crop), normalise, layout, in OpenCV.

The same code feeds every backend and the PyTorch reference, so parity measures the engines,
not the pre-processing. Resizing is bilinear with half-pixel centres, shrinking in steps of at
most 2x so camera frames do not alias. It ran as float64 numpy before (28 ms for a 427x640 photo
into 320x320, three times the SSDlite engine); in OpenCV on uint8 pixels it is 0.2-0.4 ms
(benchmarks/e2e.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, List, Sequence, Tuple

import numpy as np

from edgevision.records import InputSpec


@dataclass(frozen=True)
class Transform:
    """Maps network-input pixels back to original pixels: x_orig = (x_net - pad_x) / scale_x (a
    center_crop's pad is negative: the cut-off margin)."""

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
    if spec.resize == "center_crop":  # torchvision's Resize(shorter side) then CenterCrop: its sizes and offsets
        if oh * width >= ow * height:
            nh, nw = oh, max(ow, int(oh * width / height))
        else:
            nh, nw = max(oh, int(ow * height / width)), ow
        top, left = int(round((nh - oh) / 2.0)), int(round((nw - ow) / 2.0))
        return Transform(nw / width, nh / height, -left, -top, width, height, (0, 0, ow, oh))
    scale = min(oh / height, ow / width)
    nh, nw = max(1, round(height * scale)), max(1, round(width * scale))
    top, left = (oh - nh) // 2, (ow - nw) // 2
    return Transform(nw / width, nh / height, left, top, width, height, (left, top, left + nw, top + nh))


def opencv() -> Any:
    try:
        import cv2
    except ImportError:
        from edgevision.errors import BackendError

        raise BackendError("the runtime's image pre-processing needs OpenCV, which is not installed: pip install "
                           "opencv-python-headless (it comes with edgevision[onnxruntime] / [openvino]; on Jetson, "
                           "JetPack's python3-opencv serves)") from None
    return cv2


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """HxWxC -> height x width x C in OpenCV (same dtype; uint8 stays uint8), bilinear with
    half-pixel centres (as torch's bilinear with align_corners=False), shrinking in steps of at most
    2x per axis so that every source pixel is averaged in: a 2:1 bilinear step is exactly the mean
    of 2 pixels, so 720p -> 180x320 is a 4x4 box mean, as INTER_AREA gives (a single bilinear step
    would read 4 of every 16 pixels and alias a camera frame's fine texture).

    Pillow's reducing_gap idea in OpenCV's fastest kernels: 0.2 ms for 720p -> 320x180 against
    0.8 ms for INTER_AREA, and 0.12 against 0.68 ms for a 427x640 photo (benchmarks/e2e.py)."""
    if image.shape[0] == height and image.shape[1] == width:
        return image
    cv2 = opencv()
    (h, w), channels = image.shape[:2], image.shape[2:]
    while h >= 2 * height or w >= 2 * width:
        h, w = (h // 2 if h >= 2 * height else h), (w // 2 if w >= 2 * width else w)
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    out = image if (h, w) == (height, width) else cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    return out.reshape(height, width, *channels)  # OpenCV drops a trailing axis of 1


def resize_nearest(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """HxW label map -> height x width by nearest neighbour at pixel centres (torch's
    'nearest-exact'), in OpenCV."""
    cv2 = opencv()
    src = labels if labels.dtype in (np.uint8, np.int16, np.uint16, np.int32, np.float32) else labels.astype(np.int32)
    out = cv2.resize(src, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
    return out.astype(labels.dtype, copy=False)


def preprocess(images: Sequence[np.ndarray], spec: InputSpec, bgr: bool = False) -> Tuple[np.ndarray, List[Transform]]:
    """RGB uint8 images (BGR with bgr=True, as OpenCV decodes them: the planes are read in the other
    order, no copy) -> float32 batch in the network's layout, and one Transform per image.

    Every step runs in OpenCV's C code on uint8 pixels: resize into a (letterboxed) canvas, then
    one lookup table per channel maps a pixel value straight to its normalised float
    ((v / 255 - mean) / std), written into the batch in the network's channel order and layout
    (0.14 ms for 320x320, against 0.8 ms for OpenCV's blobFromImage). The PyTorch reference,
    calibration and training read this same tensor, so parity is unaffected."""
    cv2 = opencv()
    oh, ow = spec.size
    nhwc = spec.layout == "nhwc"
    batch = np.empty((len(images), oh, ow, 3) if nhwc else (len(images), 3, oh, ow), dtype=np.float32)
    luts, order = _tables(spec)
    if bgr:
        order = tuple(2 - c for c in order)
    transforms = []
    for k, img in enumerate(images):
        t = plan(img.shape[0], img.shape[1], spec)
        x0, y0, x1, y1 = t.content
        if t.pad_x < 0 or t.pad_y < 0:  # center_crop: resize beyond the input, keep its centre
            top, left = -t.pad_y, -t.pad_x
            pixels = resize(np.ascontiguousarray(img, dtype=np.uint8), round(t.scale_y * t.height), round(t.scale_x * t.width))
            pixels = np.ascontiguousarray(pixels[top:top + oh, left:left + ow])
        else:
            pixels = resize(np.ascontiguousarray(img, dtype=np.uint8), y1 - y0, x1 - x0)
        if (x0, y0, x1, y1) != (0, 0, ow, oh):
            canvas = np.full((oh, ow, 3), spec.pad_value, dtype=np.uint8)
            canvas[y0:y1, x0:x1] = pixels
            pixels = canvas
        planes = cv2.split(pixels)
        if nhwc:
            cv2.LUT(cv2.merge([planes[c] for c in order]), luts.reshape(3, 1, 256).transpose(1, 2, 0), dst=batch[k])
        else:
            for j, c in enumerate(order):
                cv2.LUT(planes[c], luts[j].reshape(1, 256), dst=batch[k, j])
        transforms.append(t)
    return batch, transforms


@lru_cache(maxsize=16)
def _tables(spec: InputSpec) -> Tuple[np.ndarray, Tuple[int, ...]]:
    """Per network channel: a 256-entry table uint8 -> normalised float32, and which RGB plane it
    reads (mean and std are given for the image's R, G, B; 'bgr' networks read them reversed)."""
    order = (2, 1, 0) if spec.channel_order == "bgr" else (0, 1, 2)
    values = np.arange(256, dtype=np.float64) / 255.0
    luts = np.stack([(values - spec.mean[c]) / spec.std[c] for c in order]).astype(np.float32)
    return np.ascontiguousarray(luts), order
