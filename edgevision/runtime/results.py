"""Result types returned by Predictor.predict: numpy only, identical on every backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np


@dataclass
class Classification:
    """Top-k classes of one image, best first."""

    class_ids: np.ndarray  # [k] int
    scores: np.ndarray  # [k] float32 softmax probabilities
    names: List[str] = field(default_factory=list)  # [k] label names

    @property
    def top1(self) -> int:
        return int(self.class_ids[0])

    @property
    def label(self) -> str:
        return self.names[0] if self.names else str(self.top1)

    def __len__(self) -> int:
        return len(self.class_ids)

    def to_dict(self) -> Dict[str, object]:
        return {"top": [{"class_id": int(c), "label": n, "score": float(s)}
                        for c, n, s in zip(self.class_ids, self.names or [str(c) for c in self.class_ids], self.scores)]}

    def __repr__(self) -> str:
        best = ", ".join(f"{n}={s:.3f}" for n, s in zip(self.names or map(str, self.class_ids), self.scores))
        return f"Classification({best})"


@dataclass
class Segmentation:
    """Per-pixel classes at the original image size."""

    label_map: np.ndarray  # [H,W] int32 class ids
    labels: List[str] = field(default_factory=list)  # class names, index order
    scores: Optional[np.ndarray] = None  # [C,H,W] float32 softmax probabilities, when asked for

    @property
    def shape(self) -> tuple:
        return self.label_map.shape

    def areas(self) -> Dict[str, int]:
        """Pixel count per class present in the image, by name."""
        ids, counts = np.unique(self.label_map, return_counts=True)
        return {self._name(int(i)): int(c) for i, c in zip(ids, counts)}

    def mask(self, class_id: int) -> np.ndarray:
        return self.label_map == class_id

    def _name(self, i: int) -> str:
        return self.labels[i] if 0 <= i < len(self.labels) else str(i)

    def to_dict(self) -> Dict[str, object]:
        return {"height": int(self.shape[0]), "width": int(self.shape[1]), "areas": self.areas()}

    def __repr__(self) -> str:
        return f"Segmentation({self.shape[1]}x{self.shape[0]}, areas={self.areas()})"
