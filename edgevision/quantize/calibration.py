"""Calibration sets: images from a folder, a COCO-format dataset or the shapes generator,
pre-processed exactly as the runtime does, with a content hash for the statistics cache.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

from edgevision.errors import DataError, InputError
from edgevision.records import InputSpec

from edgevision.runtime.preprocess import preprocess

MIN_RECOMMENDED = 100
CACHE_DIR = Path("build/.cache/calibration")


@dataclass
class CalibrationSet:
    """Pre-processed network inputs (each [1, ...] float32) and where they came from."""

    inputs: list[np.ndarray]
    source: str
    method: str
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.inputs)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.inputs)

    @cached_property
    def digest(self) -> str:
        """sha256 of the exact tensors (so a change of images or pre-processing invalidates caches)."""
        h = hashlib.sha256()
        for x in self.inputs:
            h.update(str(x.shape).encode())
            h.update(np.ascontiguousarray(x).tobytes())
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "images": len(self), "skipped": len(self.skipped), "method": self.method,
                "sha256": self.digest, "seconds": round(self.seconds, 2)}


def load_calibration(spec: Any, input_spec: InputSpec, log: Callable[[str], None] = print) -> CalibrationSet:
    """Read `spec.count` images (a seeded sample when the source has more), skip unreadable ones."""
    from edgevision.data import CocoDataset, FolderDataset, ShapesDataset

    start = time.perf_counter()
    if spec.source == "shapes":
        dataset: Any = ShapesDataset(count=spec.count, seed=spec.seed, size=input_spec.size, max_objects=spec.max_objects)
        where = dataset.name
    else:
        path = Path(spec.path)
        if not path.exists():
            raise DataError(f"calibration.path: {path} does not exist (a folder of images or a COCO annotation json)")
        dataset = FolderDataset(path) if spec.source == "folder" else CocoDataset(path, spec.images)
        where = f"{spec.source}:{path}"
    order = np.arange(len(dataset))
    if len(dataset) > spec.count:
        order = np.sort(np.random.default_rng(spec.seed).choice(len(dataset), spec.count, replace=False))
    inputs, skipped = [], []
    for i in order:
        try:
            image = dataset[int(i)].image
        except (InputError, DataError) as e:
            skipped.append(str(e))
            continue
        inputs.append(preprocess([image], input_spec)[0])
    if skipped:
        log(f"calibration: skipped {len(skipped)} unreadable image(s) in {where}, e.g. {skipped[0]}")
    if not inputs:
        raise DataError(f"calibration: no readable images in {where}")
    if len(inputs) < MIN_RECOMMENDED:
        log(f"warning: calibrating on {len(inputs)} images (< {MIN_RECOMMENDED}): activation ranges from so few "
            "images miss rare large values and INT8 accuracy can collapse; use 300 or more")
    return CalibrationSet(inputs, where, spec.method, skipped, time.perf_counter() - start)


def require_calibration(calib: Optional[CalibrationSet], backend: str) -> CalibrationSet:
    """The calibration set an int8 build was given, or a clear error."""
    if calib is None:
        raise DataError(f"{backend}: int8 needs calibration images (recipe 'calibration' section)")
    return calib


def cache_path(kind: str, *parts: str, enabled: bool = True, root: Optional[Path] = None) -> Optional[Path]:
    """Where statistics keyed by sha256(parts) live (None when caching is off)."""
    if not enabled:
        return None
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]
    folder = (root or CACHE_DIR) / kind
    folder.mkdir(parents=True, exist_ok=True)
    return folder / key


def make_calibration_set(out: Path, source: str, count: int, *, seed: int = 0, size: int = 320,
                         images: Optional[Path] = None, force: bool = False) -> dict[str, Any]:
    """Write a calibration folder: `count` images sampled (seeded) from a COCO dataset, a folder of
    frames (recursive) or the shapes generator, copied byte for byte (shapes: JPEG, quality 92), and
    calibration.json recording where each came from. Written to a temporary folder, then renamed."""
    import json
    import shutil

    out = Path(out)
    if out.exists() and not force:
        raise DataError(f"{out} already exists (use --force to replace it)")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "calibration.json").is_file())):
        raise DataError(f"{out} exists and is not a calibration set made by edgevision (no calibration.json); "
                        "--force replaces only those: choose another folder")
    files = _sampled_files(source, count, seed, images)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        written, skipped = _write_images(tmp, source, files, seed, size)
        if not written:
            raise DataError(f"--from {source}: none of the sampled images could be read")
        info = {"source": source, "seed": seed, "images": len(written), "skipped": len(skipped), "files": written}
        (tmp / "calibration.json").write_text(json.dumps(info, indent=1) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info


def _sampled_files(source: str, count: int, seed: int, images: Optional[Path]) -> list[Any]:
    """The images to copy (seeded sample of `count`), or shape indices for the generator."""
    from edgevision.data import CocoDataset
    from edgevision.data.readers import IMAGE_SUFFIXES

    if source == "shapes":
        return list(range(count))
    path = Path(source)
    if path.is_file() and path.suffix == ".json":
        coco = CocoDataset(path, images)
        files = [coco.root / im["file_name"] for im in coco.coco_gt["images"]]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        raise DataError(f"--from {source}: not a COCO .json, an image folder or 'shapes'")
    if not files:
        raise DataError(f"--from {source}: no images found")
    if len(files) > count:
        files = [files[i] for i in sorted(np.random.default_rng(seed).choice(len(files), count, replace=False))]
    return files


def _write_images(folder: Path, source: str, files: list[Any], seed: int, size: int) -> tuple[list[dict], list[str]]:
    """Copy the readable images into folder (shapes: generate them): (written entries, skipped reasons)."""
    import shutil

    written, skipped = [], []
    if source == "shapes":
        from PIL import Image

        from edgevision.data import ShapesDataset

        shapes = ShapesDataset(count=len(files), seed=seed, size=(size, size))
        for i in files:
            name = f"shapes_{seed}_{i:05d}.jpg"
            Image.fromarray(shapes[i].image).save(folder / name, quality=92)
            written.append({"file": name, "from": f"shapes(seed={seed}, index={i})"})
        return written, skipped
    from edgevision.runtime.images import read_image

    for k, f in enumerate(files):
        try:
            read_image(f)  # only readable images go in
        except InputError as e:
            skipped.append(str(e))
            continue
        name = f"{k:05d}_{f.name}"
        shutil.copyfile(f, folder / name)
        written.append({"file": name, "from": str(f)})
    return written, skipped
