from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgevision.errors import InputError
from edgevision.runtime.images import to_rgb


def test_bgr_array_is_reversed() -> None:
    bgr = np.zeros((2, 2, 3), dtype=np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV order
    assert to_rgb(bgr, "bgr")[0, 0].tolist() == [0, 0, 255]
    assert to_rgb(bgr)[0, 0].tolist() == [255, 0, 0]


def test_gray_rgba_16bit_float_are_converted() -> None:
    assert to_rgb(np.full((3, 4), 7, np.uint8)).shape == (3, 4, 3)
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 3] = 255
    assert to_rgb(rgba).shape == (3, 4, 3)
    assert to_rgb(np.full((2, 2, 3), 65535, np.uint16))[0, 0].tolist() == [255, 255, 255]
    assert to_rgb(np.full((2, 2, 3), 257 * 10, np.uint16))[0, 0].tolist() == [10, 10, 10]
    assert to_rgb(np.full((2, 2, 3), 0.5, np.float32))[0, 0].tolist() == [128, 128, 128]


def test_pil_modes(tmp_path: Path) -> None:
    for mode in ("L", "LA", "P", "RGBA", "CMYK", "I;16"):
        img = Image.new(mode, (5, 3))
        out = to_rgb(img)
        assert out.shape == (3, 5, 3) and out.dtype == np.uint8, mode
    sixteen = tmp_path / "deep.png"
    Image.fromarray(np.full((4, 6), 65535, np.uint16)).save(sixteen)
    assert to_rgb(sixteen)[0, 0].tolist() == [255, 255, 255]


def test_bad_inputs_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="image not found"):
        to_rgb(tmp_path / "missing.jpg")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(InputError, match="not a readable image file"):
        to_rgb(text)
    with pytest.raises(InputError, match="channels-first"):
        to_rgb(np.zeros((3, 32, 32), np.uint8))
    with pytest.raises(InputError, match="HxWx3"):
        to_rgb(np.zeros((2, 3, 4, 5), np.uint8))
    with pytest.raises(InputError, match="cannot use an input of type"):
        to_rgb(42)
