"""Image -> network input: resize (stretch or letterbox), normalise, layout, in OpenCV.

The same code feeds every backend and the PyTorch reference, so parity measures the engines,
not the pre-processing. Downscaling averages over each output pixel's footprint (INTER_AREA) so
camera frames do not alias; upscaling is bilinear with half-pixel centres. It ran as float64
numpy before (28 ms for a 427x640 photo into 320x320, three times the SSDlite engine); in OpenCV
on uint8 pixels it is about a millisecond (benchmarks/preprocess.py).
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
    """HxWxC -> height x width x C in OpenCV (same dtype; uint8 stays uint8): area averaging when
    shrinking (INTER_AREA, no aliasing from camera frames), bilinear with half-pixel centres when
    growing (INTER_LINEAR, as torch's bilinear with align_corners=False)."""
    if image.shape[0] == height and image.shape[1] == width:
        return image
    cv2 = opencv()
    shrink = height <= image.shape[0] and width <= image.shape[1]
    out = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out.reshape(height, width, *image.shape[2:])  # OpenCV drops a trailing axis of 1


def resize_nearest(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """HxW label map -> height x width by nearest neighbour at pixel centres (torch's
    'nearest-exact'), in OpenCV."""
    cv2 = opencv()
    src = labels if labels.dtype in (np.uint8, np.int16, np.uint16, np.int32, np.float32) else labels.astype(np.int32)
    out = cv2.resize(src, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
    return out.astype(labels.dtype, copy=False)


def preprocess(images: Sequence[np.ndarray], spec: InputSpec) -> Tuple[np.ndarray, List[Transform]]:
    """RGB uint8 images -> float32 batch in the network's layout, and one Transform per image.

    Every step runs in OpenCV's C code on uint8 pixels: resize into a (letterboxed) canvas, then
    one blobFromImagesWithParams pass for scale, mean, channel order and layout. The PyTorch
    reference, calibration and training read this same tensor, so parity is unaffected."""
    cv2 = opencv()
    oh, ow = spec.size
    canvases, transforms = [], []
    for img in images:
        t = plan(img.shape[0], img.shape[1], spec)
        x0, y0, x1, y1 = t.content
        pixels = resize(np.ascontiguousarray(img, dtype=np.uint8), y1 - y0, x1 - x0)
        if (x0, y0, x1, y1) != (0, 0, ow, oh):
            canvas = np.full((oh, ow, 3), spec.pad_value, dtype=np.uint8)
            canvas[y0:y1, x0:x1] = pixels
            pixels = canvas
        canvases.append(pixels)
        transforms.append(t)
    mean = np.asarray(spec.mean, dtype=np.float64) * 255.0
    std = np.asarray(spec.std, dtype=np.float64) * 255.0
    params = cv2.dnn.Image2BlobParams()
    params.scalefactor = (*(1.0 / std).tolist(), 0.0)
    params.mean = (*mean[::-1].tolist(), 0.0) if spec.channel_order == "bgr" else (*mean.tolist(), 0.0)
    params.scalefactor = (*(1.0 / std[::-1]).tolist(), 0.0) if spec.channel_order == "bgr" else params.scalefactor
    params.size = (ow, oh)
    params.swapRB = spec.channel_order == "bgr"
    params.ddepth = cv2.CV_32F
    params.datalayout = cv2.dnn.DNN_LAYOUT_NHWC if spec.layout == "nhwc" else cv2.dnn.DNN_LAYOUT_NCHW
    return cv2.dnn.blobFromImagesWithParams(canvases, params), transforms
