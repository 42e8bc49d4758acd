from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgevision.data import CocoDataset, FolderDataset, ShapesDataset
from edgevision.errors import DataError


def test_shapes_is_deterministic_by_seed_and_index() -> None:
    a, b = ShapesDataset(5, seed=3, size=(48, 64)), ShapesDataset(9, seed=3, size=(48, 64))
    np.testing.assert_array_equal(a[4].image, b[4].image)
    assert not np.array_equal(a[4].image, ShapesDataset(5, seed=4, size=(48, 64))[4].image)
    s = a[2]
    assert s.image.shape == (48, 64, 3) and s.image.dtype == np.uint8
    assert s.semantic.shape == (48, 64) and 1 <= len(s.instances) <= 4


def test_shapes_ground_truth_is_consistent() -> None:
    for s in (ShapesDataset(20, seed=0, size=(64, 64), max_objects=5)[i] for i in range(20)):
        union = np.zeros(s.semantic.shape, bool)
        for inst in s.instances:
            assert not (union & inst.mask).any()  # visible masks do not overlap
            union |= inst.mask
            assert (s.semantic[inst.mask] == inst.label + 1).all()
            ys, xs = np.nonzero(inst.mask)
            assert inst.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert ((s.semantic > 0) == union).all()


def test_coco_roundtrip(tmp_path: Path) -> None:
    ds = ShapesDataset(4, seed=5, size=(40, 56))
    coco = CocoDataset(ds.write(tmp_path))
    assert coco.categories == ds.categories and len(coco) == 4
    for i in range(4):
        a, b = ds[i], coco[i]
        np.testing.assert_array_equal(a.image, b.image)
        assert [x.label for x in a.instances] == [x.label for x in b.instances]
        for x, y in zip(a.instances, b.instances):
            np.testing.assert_array_equal(x.mask, y.mask)
            assert x.box == pytest.approx(y.box)
        np.testing.assert_array_equal(a.semantic, b.semantic)


def test_folder_with_and_without_classes(tmp_path: Path) -> None:
    for cls in ("cat", "dog"):
        (tmp_path / "c" / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "c" / cls / "1.png")
    ds = FolderDataset(tmp_path / "c")
    assert ds.categories == ["cat", "dog"] and [ds[i].label for i in range(2)] == [0, 1]
    (tmp_path / "flat").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "flat" / "a.jpg")
    flat = FolderDataset(tmp_path / "flat")
    assert flat.categories == [] and flat[0].image.shape == (8, 8, 3) and flat[0].label is None


def test_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="image folder not found"):
        FolderDataset(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        FolderDataset(tmp_path / "empty")
    with pytest.raises(DataError, match="COCO annotations not found"):
        CocoDataset(tmp_path / "a.json")
    (tmp_path / "a.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="not a COCO annotation file"):
        CocoDataset(tmp_path / "a.json", tmp_path)
