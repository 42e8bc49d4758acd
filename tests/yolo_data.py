"""The shapes dataset written in Ultralytics' own format (images/<split>/*.png, labels/<split>/*.txt
with `class cx cy w h` normalised, data.yaml), for training Ultralytics on it: the tests and
benchmarks/ultralytics_peer.py. The same seeds give edgevision's `{source: shapes}` the same images."""

from __future__ import annotations

from pathlib import Path

import yaml
from PIL import Image

from edgevision.data.shapes import ShapesDataset


def write_yolo_dataset(root: Path, size: int, splits: dict[str, tuple[int, int]]) -> Path:
    """splits: name -> (count, seed), e.g. {"train": (1000, 0), "val": (100, 1)}; returns data.yaml."""
    for split, (count, seed) in splits.items():
        data = ShapesDataset(count, seed=seed, size=(size, size))
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            s = data[i]
            Image.fromarray(s.image).save(root / "images" / split / f"{i:05d}.png")
            rows = [f"{t.label} {(t.box[0] + t.box[2]) / 2 / size:.6f} {(t.box[1] + t.box[3]) / 2 / size:.6f} "
                    f"{(t.box[2] - t.box[0]) / size:.6f} {(t.box[3] - t.box[1]) / size:.6f}" for t in s.instances]
            (root / "labels" / split / f"{i:05d}.txt").write_text("\n".join(rows) + "\n")
    config = root / "data.yaml"
    names = dict(enumerate(ShapesDataset(1).categories))
    config.write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val", "names": names}))
    return config
