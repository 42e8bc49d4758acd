"""Sample types shared by every dataset source."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Protocol, Tuple

import numpy as np


@dataclass
class Instance:
    label: int  # 0-based index into the dataset's categories
    box: Tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
    mask: Optional[np.ndarray] = None  # HxW bool, visible part


@dataclass
class Sample:
    image: np.ndarray  # HxWx3 uint8, RGB
    image_id: int
    file_name: str
    instances: List[Instance] = field(default_factory=list)
    semantic: Optional[np.ndarray] = None  # HxW uint8: 0 background, k+1 for category k
    class_label: Optional[int] = None  # classification label, when the source has one

    @property
    def label(self) -> Optional[int]:
        """Image-level class: the source's own label, else the largest instance's category."""
        if self.class_label is not None:
            return self.class_label
        if not self.instances:
            return None
        areas = [(i.mask.sum() if i.mask is not None else (i.box[2] - i.box[0]) * (i.box[3] - i.box[1])) for i in self.instances]
        return self.instances[int(np.argmax(areas))].label


class Dataset(Protocol):
    name: str
    categories: List[str]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...
