"""Re-estimate BatchNorm statistics: for parity checks and benchmarks on random weights.

With random initialisation, BatchNorm running statistics (mean 0, var 1) do not fit the
activations: MobileNetV3 features collapse to ~1e-8 and every detection score ties, so
comparisons measure tie-breaking, not the backends (BatchNorm statistics on random weights, README's Facts).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

import torch
from torch import nn


def reestimate_batchnorm(model: nn.Module, batches: Iterable[Any], forward: Optional[Callable[[Any], Any]] = None) -> nn.Module:
    """Reset every BatchNorm's statistics and average them over `batches` (train mode, no grad).

    forward(batch) runs the part of the model to calibrate (default: model(batch)). Returns the
    model in eval mode.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over all batches
    model.train()
    with torch.no_grad():
        for batch in batches:
            (forward or model)(batch)
    return model.eval()
