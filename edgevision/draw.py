"""Overlay images for `edgevision predict --save` (Pillow)."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np

from edgevision.runtime.images import to_rgb
from edgevision.runtime.results import Classification, Detections, Segmentation

_PALETTE = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                     [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128]],
                    dtype=np.uint8)


def palette(n: int) -> np.ndarray:
    """n distinct colours; class 0 (background) is black."""
    reps = -(-n // len(_PALETTE))
    return np.tile(_PALETTE, (reps, 1))[:n]


def overlay(image: np.ndarray, result: Union[Classification, Segmentation, Detections], alpha: float = 0.5) -> np.ndarray:
    from PIL import Image, ImageDraw

    if isinstance(result, Segmentation):
        colours = palette(int(result.label_map.max()) + 1)[result.label_map]
        fg = (result.label_map > 0)[..., None]
        image = np.where(fg, (image * (1 - alpha) + colours * alpha).astype(np.uint8), image)
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    if isinstance(result, Detections):
        colours = palette(max(len(result.labels), int(result.class_ids.max(initial=0)) + 1) + 1)
        for box, score, cid, name in zip(result.boxes, result.scores, result.class_ids, result.names):
            colour = tuple(int(v) for v in colours[int(cid) + 1])
            draw.rectangle([float(v) for v in box], outline=colour, width=2)
            draw.text((float(box[0]) + 2, max(float(box[1]) - 12, 0)), f"{name} {score:.2f}", fill=colour)
    elif isinstance(result, Classification):
        text = ", ".join(f"{n} {s:.2f}" for n, s in zip(result.names[:3], result.scores[:3]))
        draw.rectangle([0, 0, canvas.width, 14], fill=(0, 0, 0))
        draw.text((3, 2), text, fill=(255, 255, 255))
    else:
        y = 2
        for name, area in result.areas().items():
            draw.text((3, y), f"{name}: {area} px", fill=(255, 255, 255))
            y += 12
    return np.asarray(canvas)


def save_overlay(path: Path, result: Union[Classification, Segmentation, Detections], folder: Path) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = folder / (Path(path).stem + ".overlay.png")
    Image.fromarray(overlay(to_rgb(path), result)).save(out)
    return out
