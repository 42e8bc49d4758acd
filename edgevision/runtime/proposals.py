"""Proposals for external-proposal artifacts (recipe export.proposals), in numpy.

The graph input is proposals [B,K,4] xyxy in network-input pixels, padded with zero rows. Users
give boxes in original image pixels, per image; they are mapped through the letterbox, clipped to
the image (out-of-image coordinates are clipped, not rejected), and degenerate boxes dropped.
Without proposals, a fixed multi-scale grid of boxes over the network input is used.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from edgevision.errors import InputError
from edgevision.runtime.preprocess import Transform

PROPOSALS = "proposals"  # the second graph input of external-proposal artifacts


def grid_proposals(size: Tuple[int, int], k: int) -> np.ndarray:
    """At most k boxes [n,4] tiling the network input at 4 scales and 3 aspect ratios, half-overlapping."""
    h, w = size
    boxes = []
    for frac in (0.8, 0.5, 0.3, 0.15):
        for aspect in (1.0, 0.5, 2.0):
            bw, bh = frac * min(h, w) * np.sqrt(aspect), frac * min(h, w) / np.sqrt(aspect)
            xs = np.arange(0, max(w - bw, 0) + 1e-6, max(bw / 2, 1))
            ys = np.arange(0, max(h - bh, 0) + 1e-6, max(bh / 2, 1))
            gx, gy = np.meshgrid(xs, ys)
            boxes.append(np.stack([gx.ravel(), gy.ravel(), gx.ravel() + bw, gy.ravel() + bh], axis=1))
    out = np.concatenate(boxes).astype(np.float32)
    out[:, 0::2], out[:, 1::2] = out[:, 0::2].clip(0, w), out[:, 1::2].clip(0, h)
    if len(out) > k:  # coarse scales first, then an even sample of the rest
        out = out[np.linspace(0, len(out) - 1, k).round().astype(np.int64)]
    return out


def proposal_batch(proposals: Optional[Sequence[Optional[np.ndarray]]], transforms: List[Transform], k: int,
                   size: Tuple[int, int]) -> np.ndarray:
    """The graph input [B,K,4] for a batch: each image's boxes (original pixels, [n,4]), or the grid
    when none are given for the whole call. More than K boxes for one image is an error."""
    out = np.zeros((len(transforms), k, 4), np.float32)
    h, w = size
    for i, t in enumerate(transforms):
        given = None if proposals is None else proposals[i]
        if given is None:
            boxes = grid_proposals(size, k)
        else:
            arr = np.asarray(given, dtype=np.float32)
            if arr.size == 0:
                continue  # no proposals: no detections
            if arr.ndim != 2 or arr.shape[1] != 4:
                raise InputError(f"proposals[{i}]: expected an array of shape [N, 4] (x0, y0, x1, y1 in image pixels), "
                                 f"got shape {list(arr.shape)}")
            if not np.isfinite(arr).all():
                raise InputError(f"proposals[{i}]: coordinates must be finite numbers")
            if len(arr) > k:
                raise InputError(f"proposals[{i}]: {len(arr)} boxes, but this artifact takes at most {k} per image "
                                 "(recipe export.proposals.max); keep the best ones or recompile with a larger max")
            boxes = t.to_network(np.concatenate([np.minimum(arr[:, :2], arr[:, 2:]), np.maximum(arr[:, :2], arr[:, 2:])], 1))
            boxes[:, 0::2], boxes[:, 1::2] = boxes[:, 0::2].clip(0, w), boxes[:, 1::2].clip(0, h)
        out[i, : len(boxes)] = boxes
    return out
