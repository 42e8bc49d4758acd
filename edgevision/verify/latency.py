"""Interleaved latency measurement: models take turns (A B C A B C ...) so machine drift cancels."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Optional

import numpy as np

MIN_ROUNDS = 5  # a duration-bound run still gets this many rounds per model


def interleaved(fns: Dict[str, Callable[[], Any]], rounds: Optional[int] = None, warmup: int = 3,
                duration: Optional[float] = None, progress: Optional[Callable[[], None]] = None,
                block: int = 1) -> Dict[str, np.ndarray]:
    """Call every function `warmup` times, then all of them in turn, round after round; return the
    milliseconds of each timed call per function.

    block > 1: in each round a function is called `block` times in a row and all but the first call
    are timed: steady-state latency, as in a camera loop running one model, rather than the latency
    of a call whose caches and thread pools were just taken over by another model.

    The run ends after `rounds` rounds, or once `duration` seconds of rounds have passed (at least
    MIN_ROUNDS, and at most `rounds` if both are given). `progress()` is called after each round.
    """
    if rounds is None and duration is None:
        raise ValueError("interleaved: give rounds or duration")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: Dict[str, list] = {name: [] for name in fns}
    start = time.perf_counter()
    done = 0
    while True:
        if rounds is not None and done >= rounds:
            break
        if duration is not None and done >= MIN_ROUNDS and time.perf_counter() - start >= duration:
            break
        for name, fn in fns.items():
            if block > 1:
                fn()
            for _ in range(max(1, block - 1)):
                t0 = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t0) * 1e3)
        done += 1
        if progress is not None:
            progress()
    return {name: np.asarray(t) for name, t in times.items()}


def summarize(ms: np.ndarray) -> Dict[str, float]:
    """n, p50 / p90 / p99 (linear interpolation), mean, std, min, max of a sample of timings (ms)."""
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "n": int(ms.size), "p50": round(float(p50), 3), "p90": round(float(p90), 3), "p99": round(float(p99), 3),
        "mean": round(float(ms.mean()), 3), "std": round(float(ms.std()), 3),
        "min": round(float(ms.min()), 3), "max": round(float(ms.max()), 3),
    }
