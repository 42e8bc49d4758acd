"""Interleaved latency measurement: variants take turns (A B C A B C ...) so drift cancels."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict

import numpy as np


def interleaved(fns: Dict[str, Callable[[], Any]], rounds: int, warmup: int = 3) -> Dict[str, np.ndarray]:
    """Call every function `warmup` times, then `rounds` times in turn; return ms per call."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: Dict[str, list] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: np.asarray(t) for name, t in times.items()}


def summarize(ms: np.ndarray) -> Dict[str, float]:
    """p50 / p90 / p99 / mean / std / min / max of a sample of timings (ms)."""
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "n": int(ms.size), "p50": round(float(p50), 3), "p90": round(float(p90), 3), "p99": round(float(p99), 3),
        "mean": round(float(ms.mean()), 3), "std": round(float(ms.std()), 3),
        "min": round(float(ms.min()), 3), "max": round(float(ms.max()), 3),
    }
