"""Turn whatever the caller has (path, PIL image, numpy array) into HxWx3 uint8 RGB.

Grayscale, RGBA and 16-bit inputs are converted, never crashed on. Files are decoded with Pillow
when installed, else OpenCV. numpy only otherwise; runs on Python 3.10.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import numpy as np

from edgevision.errors import InputError

ImageLike = Union[str, Path, np.ndarray, Any]  # Any: PIL.Image.Image


def to_rgb(image: ImageLike, channel_order: str = "rgb") -> np.ndarray:
    """Return HxWx3 uint8 RGB. `channel_order` describes numpy input ('bgr' as OpenCV gives)."""
    if isinstance(image, (str, Path)):
        return read_image(Path(image))
    if isinstance(image, np.ndarray):
        return array_to_rgb(image, channel_order)
    if hasattr(image, "mode") and hasattr(image, "convert"):  # PIL image, without importing PIL
        return pil_to_rgb(image)
    raise InputError(
        f"cannot use an input of type {type(image).__name__}: pass a file path, a PIL image, "
        "or an HxWx3 uint8 numpy array"
    )


def read_image(path: Path) -> np.ndarray:
    if not path.exists():
        raise InputError(f"image not found: {path}")
    if not path.is_file():
        raise InputError(f"not a file: {path}")
    try:
        from PIL import Image, ImageOps
    except ImportError:
        return _read_with_cv2(path)
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            return pil_to_rgb(img)
    except (OSError, SyntaxError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError
        raise InputError(f"not a readable image file: {path} ({e.__class__.__name__})") from None


def _read_with_cv2(path: Path) -> np.ndarray:
    try:
        import cv2
    except ImportError:
        raise InputError("reading image files needs Pillow or OpenCV: pip install pillow") from None
    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None:
        raise InputError(f"not a readable image file: {path}")
    if data.ndim == 3 and data.shape[2] == 4:
        data = data[:, :, [2, 1, 0, 3]]
    elif data.ndim == 3:
        data = data[:, :, ::-1]
    return array_to_rgb(data, "rgb")


def pil_to_rgb(img: Any) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        return array_to_rgb(np.asarray(img).astype(np.uint16 if img.mode != "I" else np.int64), "rgb")
    if img.mode == "F":
        return array_to_rgb(np.asarray(img), "rgb")
    if img.mode != "RGB":
        img = img.convert("RGB")  # L, LA, P, RGBA, CMYK, YCbCr ...
    return np.asarray(img, dtype=np.uint8)


def array_to_rgb(arr: np.ndarray, channel_order: str = "rgb") -> np.ndarray:
    if channel_order not in ("rgb", "bgr"):
        raise InputError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] not in (1, 3, 4):
        raise InputError(f"array of shape {arr.shape} looks channels-first; pass HxWxC (e.g. arr.transpose(1, 2, 0))")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(f"image array must be HxW, HxWx1, HxWx3 or HxWx4, got shape {arr.shape}")
    arr = _to_uint8(arr)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]  # drop alpha, as PIL's convert('RGB') does
    if channel_order == "bgr":
        arr = arr[:, :, ::-1]
    return np.ascontiguousarray(arr)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise InputError("image array contains NaN or infinite values")
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0  # floats in 0..1, or already 0..255
        return np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.dtype == np.uint16 or arr.max(initial=0) > 255:  # 16-bit data: map 0..65535 onto 0..255
            return np.clip(np.rint(arr.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
        return np.clip(arr, 0, 255).astype(np.uint8)
    raise InputError(f"unsupported image dtype {arr.dtype}")
