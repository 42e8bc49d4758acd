"""Turn whatever the caller has (path, PIL image, numpy array) into HxWx3 uint8 RGB.

Grayscale, RGBA and 16-bit inputs are converted, never crashed on. Files are decoded with Pillow
when installed, else OpenCV. numpy only otherwise; runs on Python 3.10.

A file is refused before it is decoded when its header declares more than `max_pixels` pixels
(default MAX_PIXELS, 64 megapixels: decoding costs 3 bytes a pixel, so a 100 KB PNG that declares
12000x8000 would take 288 MB and more in conversions). Raise it per call (`predict(...,
max_pixels=N)`, `edgevision predict --max-pixels N`). Pillow reads the header first; with only
OpenCV, the image is decoded under OpenCV's own limit (2^30 pixels) and then checked.
"""

from __future__ import annotations

import errno
import io
import os
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Union

import numpy as np

from edgevision.errors import InputError

ImageLike = Union[str, Path, np.ndarray, Any]  # Any: PIL.Image.Image
MAX_PIXELS = 64_000_000
IMAGE_FILES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")  # what folders of images hold


def to_rgb(image: ImageLike, channel_order: str = "rgb", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Return HxWx3 uint8 RGB. `channel_order` describes numpy input ('bgr' as OpenCV gives)."""
    if isinstance(image, (str, Path)):
        return read_image(Path(image), max_pixels)
    if isinstance(image, np.ndarray):
        return array_to_rgb(image, channel_order)
    if hasattr(image, "mode") and hasattr(image, "convert"):  # PIL image, without importing PIL
        return pil_to_rgb(image)
    raise InputError(
        f"cannot use an input of type {type(image).__name__}: pass a file path, a PIL image, "
        "or an HxWx3 uint8 numpy array"
    )


def read_image(path: Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A file's pixels as HxWx3 uint8 RGB (EXIF orientation applied), or an InputError that says why not."""
    _check_file(path)
    try:
        with open(path, "rb") as f:
            return _decode(f, str(path), max_pixels)
    except PermissionError:
        raise InputError(f"cannot read {path}: permission denied") from None


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS, what: str = "image bytes") -> np.ndarray:
    """An encoded image (JPEG, PNG... as a file holds it) as HxWx3 uint8 RGB, under the same limits as a file."""
    if not data:
        raise InputError(f"{what}: empty, not an encoded image")
    return _decode(io.BytesIO(data), what, max_pixels)


def _decode(stream: BinaryIO, name: str, max_pixels: int) -> np.ndarray:
    try:
        from PIL import Image, ImageOps
    except ImportError:
        return _checked_size(_decode_with_cv2(stream.read(), name), name, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit below is ours
            with Image.open(stream) as img:
                _check_pixels(img.width, img.height, name, max_pixels)
                return pil_to_rgb(ImageOps.exif_transpose(img))
    except Image.DecompressionBombError:  # over Pillow's own hard limit (2 x MAX_IMAGE_PIXELS), checked at open
        hard = 2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6
        raise InputError(f"{name}: declares more than {hard:.0f} megapixels (Pillow's hard limit), over the limit of "
                         f"{min(max_pixels / 1e6, hard):g} (max_pixels); refused before decoding") from None
    except PermissionError:
        raise
    except (OSError, SyntaxError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError
        raise InputError(f"not a readable image file: {name} ({e.__class__.__name__})") from None


def _check_file(path: Path) -> None:
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InputError(f"cannot read {path}: a loop of symbolic links") from None
        if os.path.islink(path):
            raise InputError(f"cannot read {path}: a symbolic link to {os.readlink(path)}, which does not exist") from None
        if e.errno == errno.EACCES:
            raise InputError(f"cannot read {path}: permission denied") from None
        raise InputError(f"image not found: {path}") from None
    if not path.is_file():
        raise InputError(f"not a file: {path}")
    if not os.access(path, os.R_OK):
        raise InputError(f"cannot read {path}: permission denied")


def _check_pixels(width: int, height: int, path: object, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise InputError(f"{path}: {width}x{height} is {width * height / 1e6:.0f} megapixels, over the limit of "
                         f"{max_pixels / 1e6:g} (max_pixels); pass a larger max_pixels (--max-pixels) if it is meant")


def _checked_size(rgb: np.ndarray, path: object, max_pixels: int) -> np.ndarray:
    _check_pixels(rgb.shape[1], rgb.shape[0], path, max_pixels)
    return rgb


def _decode_with_cv2(data: bytes, name: str) -> np.ndarray:
    try:
        import cv2
    except ImportError:
        raise InputError("reading image files needs Pillow or OpenCV: pip install pillow") from None
    try:
        decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:  # e.g. over OpenCV's pixel limit: its assertion text helps nobody
        decoded = None
    if decoded is None:
        raise InputError(f"not a readable image file: {name}")
    if decoded.ndim == 3 and decoded.shape[2] == 4:
        decoded = decoded[:, :, [2, 1, 0, 3]]
    elif decoded.ndim == 3:
        decoded = decoded[:, :, ::-1]
    return array_to_rgb(decoded, "rgb")


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
