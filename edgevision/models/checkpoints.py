"""Read a checkpoint as a state_dict (weights_only=True: never unpickling code) and load it into a
model with an error that lists what does not match."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgevision.errors import ModelSourceError


_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "ema", "net")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint: a state_dict, or a dict wrapping one under a common key."""
    if not path.is_file():
        raise ModelSourceError(f"model.checkpoint: file not found: {path}")
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, zip errors, unsafe globals
        raise ModelSourceError(
            f"model.checkpoint {path}: cannot be read with torch.load(weights_only=True): {e}. "
            "Save a state_dict: torch.save(model.state_dict(), path)"
        ) from None
    for key in _WRAPPER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelSourceError(
            f"model.checkpoint {path}: no state_dict found (expected a dict of tensors, or one under "
            f"{', '.join(repr(k) for k in _WRAPPER_KEYS)})"
        )
    if obj and all(k.startswith("module.") for k in obj):  # saved from DataParallel / DDP
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def load_state(model: nn.Module, path: Path) -> None:
    state = read_state_dict(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", shapes)):
            if items:
                more = f" ... and {len(items) - 8} more" if len(items) > 8 else ""
                parts.append(f"{title} ({len(items)}): {', '.join(items[:8])}{more}")
        raise ModelSourceError(
            f"model.checkpoint {path} does not match model '{type(model).__name__}': " + "; ".join(parts)
            + ". Check model.source, model.kwargs and model.num_classes."
        )
    model.load_state_dict(state)

