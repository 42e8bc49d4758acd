"""Datasets: the synthetic shapes set, COCO-format datasets and image folders."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Tuple

from edgevision.data.readers import CocoDataset, FolderDataset
from edgevision.data.shapes import ShapesDataset
from edgevision.data.types import Dataset, Instance, Sample

if TYPE_CHECKING:
    from edgevision.recipe_sections import DataSource

__all__ = ["CocoDataset", "Dataset", "FolderDataset", "Instance", "Sample", "Selection", "ShapesDataset", "open_dataset"]


def open_dataset(source: "DataSource", default_size: Tuple[int, int]) -> Dataset:
    """Open a recipe data source; `default_size` is the shapes image size (the network input)."""
    if source.source == "shapes":
        return ShapesDataset(count=source.count, seed=source.seed, size=default_size, max_objects=source.max_objects)
    if source.source == "coco":
        return _Subset(CocoDataset(source.path, source.images), source.count)
    return _Subset(FolderDataset(source.path), source.count)


class Selection:
    """The items of a dataset at the given indices (e.g. a ranking subset for accuracy control)."""

    def __init__(self, base: Dataset, indices: "list[int]") -> None:
        self.base, self.indices = base, list(indices)
        self.categories = base.categories
        self.name = f"{base.name}[{len(self.indices)} items]"

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Sample:
        return self.base[self.indices[index]]


class _Subset:
    """The first `count` items of a dataset (all of them when count is None)."""

    def __init__(self, base: Dataset, count: Optional[int]) -> None:
        self.base = base
        self.categories = base.categories
        self.name = base.name
        self._n = len(base) if count is None else min(count, len(base))

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self._n:
            raise IndexError(index)
        return self.base[index]
