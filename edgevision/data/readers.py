"""Readers for COCO-format datasets and plain image folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edgevision.data.types import Instance, Sample
from edgevision.errors import DataError
from edgevision.runtime.images import read_image  # the runtime's decoder: gray, RGBA, 16-bit -> RGB

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class CocoDataset:
    """COCO-format annotations (boxes, polygon or RLE masks) with their image directory."""

    def __init__(self, annotations: Path, images: Path | None = None) -> None:
        annotations = Path(annotations)
        if not annotations.is_file():
            raise DataError(f"COCO annotations not found: {annotations}")
        try:
            coco = json.loads(annotations.read_text())
            self._images = sorted(coco["images"], key=lambda im: im["id"])
            cats = sorted(coco["categories"], key=lambda c: c["id"])
            anns = coco.get("annotations", [])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise DataError(f"{annotations}: not a COCO annotation file ({e})") from None
        self.root = Path(images) if images is not None else annotations.parent / "images"
        if not self.root.is_dir():
            raise DataError(f"COCO image directory not found: {self.root} (set data.<split>.images)")
        self.categories = [c["name"] for c in cats]
        self._cat_index = {c["id"]: i for i, c in enumerate(cats)}
        self._anns: dict[int, list[dict[str, Any]]] = {}
        for a in anns:
            self._anns.setdefault(a["image_id"], []).append(a)
        self.name = f"coco({annotations})"
        self.coco_gt = coco

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> Sample:
        info = self._images[index]
        path = self.root / info["file_name"]
        image = read_image(path)
        h, w = image.shape[:2]
        instances = [self._instance(a, h, w) for a in self._anns.get(info["id"], []) if not a.get("iscrowd", 0)]
        semantic = np.zeros((h, w), dtype=np.uint8)
        for inst in sorted(instances, key=lambda i: -(i.mask.sum() if i.mask is not None else 0)):
            if inst.mask is not None:
                semantic[inst.mask] = inst.label + 1
        return Sample(image=image, image_id=info["id"], file_name=info["file_name"], instances=instances, semantic=semantic)

    def _instance(self, ann: dict[str, Any], h: int, w: int) -> Instance:
        from faster_coco_eval.core import mask as mask_util

        x, y, bw, bh = ann["bbox"]
        mask = None
        segm = ann.get("segmentation")
        if isinstance(segm, dict) and isinstance(segm.get("counts"), str):  # compressed RLE
            mask = mask_util.decode({"size": segm["size"], "counts": segm["counts"].encode("ascii")}).astype(bool)
        elif segm:  # polygons, or uncompressed RLE
            rles = mask_util.frPyObjects(segm, h, w)
            rle = mask_util.merge(rles) if isinstance(rles, list) else rles
            mask = mask_util.decode(rle).astype(bool)
        return Instance(label=self._cat_index[ann["category_id"]], box=(x, y, x + bw, y + bh), mask=mask)


class FolderDataset:
    """Images in a folder. With one sub-folder per class, the sub-folder names are the labels."""

    def __init__(self, root: Path) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"image folder not found: {root}")
        subdirs = sorted(d for d in root.iterdir() if d.is_dir() and _images_in(d))
        if subdirs:
            self.categories = [d.name for d in subdirs]
            self._items = [(p, i) for i, d in enumerate(subdirs) for p in _images_in(d)]
        else:
            self.categories = []
            self._items = [(p, None) for p in _images_in(root)]
        if not self._items:
            raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder {root}")
        self.name = f"folder({root})"

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> Sample:
        path, label = self._items[index]
        return Sample(image=read_image(path), image_id=index + 1, file_name=str(path), class_label=label)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
