"""The benchmark's options, declared once: name -> (default, help). The recipe's `benchmark`
section (recipe.BenchmarkSpec: types and limits), the `edgevision benchmark` options and the
overrides `bench.run.settings_for` accepts all read this table. Stdlib only: the CLI builds its
help from it without importing pydantic."""

from __future__ import annotations

from typing import Any, Dict, Tuple

# Latency is timed in blocks: each round calls a model STEADY_BLOCK times in a row and times all but the
# first, the steady state of a camera loop running one model. Timing one call each in turn measured calls
# whose threads and caches another engine had just taken, or whose cores ONNX Runtime's spinning threads
# still held: OpenVINO FP32 SSDlite ran 6.3 ms in blocks, 11.3 ms right after an ONNX Runtime call.
STEADY_BLOCK = 4

BENCH_OPTIONS: Dict[str, Tuple[Any, str]] = {
    "iterations": (200, f"Timed calls per model per latency measurement (interleaved in rounds of {STEADY_BLOCK - 1}, "
                        "each after an untimed call: steady state)."),
    "duration": (None, "Seconds per latency measurement instead of a number of rounds (each model gets at least 5 "
                       "rounds)."),
    "warmup": (10, "Untimed calls per model before timing."),
    "batch_sizes": ([1], "Batch sizes for synchronous throughput (above 1 needs export.dynamic_batch)."),
    "async_seconds": (3.0, "Asynchronous multi-request throughput run per variant, where the backend has one "
                           "(OpenVINO: THROUGHPUT hint, AsyncInferQueue); 0 skips it."),
    "accuracy": (True, "Evaluate every model on data.val."),
    "memory": (True, "Measure each model's peak RSS in a process of its own."),
    "accuracy_images": (None, "Cap on the data.val images evaluated (none: all)."),
}
# --quick: a short run
QUICK: Dict[str, Any] = {"iterations": 30, "warmup": 3, "batch_sizes": [1], "async_seconds": 1.0, "accuracy_images": 50}


def flag(name: str) -> str:
    """The command-line option for an option's name."""
    return "--batch" if name == "batch_sizes" else "--" + name.replace("_", "-")


def default(name: str) -> Any:
    value = BENCH_OPTIONS[name][0]
    return list(value) if isinstance(value, list) else value


def help_text(name: str) -> str:
    return BENCH_OPTIONS[name][1]
