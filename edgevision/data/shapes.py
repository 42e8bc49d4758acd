"""Synthetic shapes: circles, squares and triangles on textured or noisy backgrounds.

Deterministic by (seed, index): image i is drawn from its own generator, so any subset is
reproducible on its own. Every sample has instance masks (visible part, after occlusion), tight
boxes, a semantic label map, and exports to COCO format. It serves training, calibration and
evaluation for every task.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image, ImageDraw

from edgevision.data.types import Instance, Sample

CATEGORIES = ("circle", "square", "triangle")
MIN_VISIBLE = 0.5  # a new object may hide at most half of an earlier one


class ShapesDataset:
    """`count` images of `size` (height, width) with 1..max_objects shapes each."""

    def __init__(self, count: int, seed: int = 0, size: tuple[int, int] = (256, 256), max_objects: int = 4) -> None:
        if count < 1 or max_objects < 1:
            raise ValueError("ShapesDataset: count and max_objects must be >= 1")
        self.count, self.seed, self.size, self.max_objects = count, seed, tuple(size), max_objects
        self.categories = list(CATEGORIES)
        self.name = f"shapes(count={count}, seed={seed}, size={list(size)}, max_objects={max_objects})"

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.count:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, index])
        return _render(rng, self.size, self.max_objects, image_id=index + 1)

    def to_coco(self) -> dict[str, Any]:
        return to_coco([self[i] for i in range(len(self))], self.categories)

    def write(self, out_dir: Path) -> Path:
        """Write images/*.png and annotations.json (COCO); return the json path."""
        out_dir = Path(out_dir)
        (out_dir / "images").mkdir(parents=True, exist_ok=True)
        samples = [self[i] for i in range(len(self))]
        for s in samples:
            Image.fromarray(s.image).save(out_dir / "images" / s.file_name)
        path = out_dir / "annotations.json"
        path.write_text(json.dumps(to_coco(samples, self.categories)))
        return path


def to_coco(samples: list[Sample], categories: list[str]) -> dict[str, Any]:
    """COCO ground truth: boxes xywh, RLE masks of the visible part, category ids from 1."""
    from faster_coco_eval.core import mask as mask_util

    images, annotations = [], []
    for s in samples:
        h, w = s.image.shape[:2]
        images.append({"id": s.image_id, "file_name": s.file_name, "height": h, "width": w})
        for inst in s.instances:
            rle = mask_util.encode(np.asfortranarray(inst.mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            x0, y0, x1, y1 = inst.box
            annotations.append({
                "id": len(annotations) + 1, "image_id": s.image_id, "category_id": inst.label + 1,
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float(inst.mask.sum()),
                "segmentation": rle, "iscrowd": 0,
            })
    cats = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(categories)]
    return {"images": images, "annotations": annotations, "categories": cats}


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = rng.integers(0, 256, size=3).astype(np.float32)
    kind = rng.integers(0, 4)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:  # linear gradient
        angle = rng.uniform(0, 2 * math.pi)
        t = (np.cos(angle) * xx / w + np.sin(angle) * yy / h)[..., None]
        other = rng.integers(0, 256, size=3).astype(np.float32)
        img = base + (other - base) * (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    elif kind == 1:  # stripes
        period = rng.uniform(6, 30)
        angle = rng.uniform(0, math.pi)
        s = np.sin((np.cos(angle) * xx + np.sin(angle) * yy) * 2 * math.pi / period)[..., None]
        img = base + s * rng.uniform(10, 40)
    elif kind == 2:  # smooth blotches: a coarse random grid, upsampled
        grid = rng.uniform(-1, 1, size=(max(h // 32, 2), max(w // 32, 2), 3)).astype(np.float32)
        up = np.asarray(Image.fromarray(((grid + 1) * 127.5).astype(np.uint8)).resize((w, h), Image.BILINEAR))
        img = base * 0.5 + up.astype(np.float32) * 0.5
    else:  # flat colour
        img = np.broadcast_to(base, (h, w, 3)).copy()
    return img + rng.normal(0, rng.uniform(0, 12), size=(h, w, 3))


def _shape_mask(rng: np.random.Generator, label: int, h: int, w: int) -> np.ndarray:
    r = rng.uniform(0.07, 0.22) * min(h, w)
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    if CATEGORIES[label] == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
    else:
        sides = 4 if CATEGORIES[label] == "square" else 3
        rot = rng.uniform(0, 2 * math.pi)
        pts = [(cx + r * math.cos(rot + 2 * math.pi * k / sides), cy + r * math.sin(rot + 2 * math.pi * k / sides))
               for k in range(sides)]
        draw.polygon(pts, fill=1)
    return np.asarray(canvas, dtype=bool)


def _contrasting_colour(rng: np.random.Generator, around: np.ndarray) -> np.ndarray:
    for _ in range(20):
        colour = rng.integers(0, 256, size=3).astype(np.float32)
        if np.abs(colour - around).sum() > 150:
            return colour
    return 255.0 - around


def _render(rng: np.random.Generator, size: tuple[int, int], max_objects: int, image_id: int) -> Sample:
    h, w = size
    img = _background(rng, h, w)
    n = int(rng.integers(1, max_objects + 1))
    visible: list[np.ndarray] = []
    labels: list[int] = []
    for _ in range(n):
        for _attempt in range(10):
            label = int(rng.integers(0, len(CATEGORIES)))
            mask = _shape_mask(rng, label, h, w)
            if all((v & ~mask).sum() >= MIN_VISIBLE * v.sum() for v in visible):
                break
        else:
            continue
        visible = [v & ~mask for v in visible]
        visible.append(mask)
        labels.append(label)
        colour = _contrasting_colour(rng, img[mask].mean(axis=0))
        texture = rng.normal(0, rng.uniform(0, 15), size=(int(mask.sum()), 3))
        img[mask] = colour + texture
    img = np.clip(img + rng.normal(0, rng.uniform(0, 6), size=img.shape), 0, 255).astype(np.uint8)
    semantic = np.zeros((h, w), dtype=np.uint8)
    instances = []
    for label, mask in zip(labels, visible):
        semantic[mask] = label + 1
        ys, xs = np.nonzero(mask)
        box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        instances.append(Instance(label=label, box=box, mask=mask))
    return Sample(image=img, image_id=image_id, file_name=f"{image_id:06d}.png", instances=instances, semantic=semantic)


def shapes_labels(task: str) -> Optional[list[str]]:
    """Label names the shapes dataset provides for a task (segmentation adds background)."""
    if task == "segmentation":
        return ["background", *CATEGORIES]
    return list(CATEGORIES)
