"""The Runner protocol shared by every backend, and the backend registry.

This module imports nothing heavy: the runtime and `edgevision --help` load it with no
backend installed. Backend packages are imported only when a runner is created.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Protocol, Tuple

import numpy as np

INPUT_NAME = "images"  # the network input of every exported graph

# What each backend can build today; the recipe validates targets against this table.
BACKEND_PRECISIONS: Dict[str, Tuple[str, ...]] = {
    "onnxruntime": ("fp32", "int8"),
    "openvino": ("fp32", "bf16", "fp16", "int8"),
    "tensorrt": ("fp32", "fp16", "int8"),
}

# backend -> (module with a `Runner` class, python package, pip extra)
_RUNNERS: Dict[str, Tuple[str, str, str]] = {
    "onnxruntime": ("edgevision.backends.onnxruntime", "onnxruntime", "onnxruntime"),
    "openvino": ("edgevision.backends.openvino", "openvino", "openvino"),
    "tensorrt": ("edgevision.backends.tensorrt", "tensorrt", "tensorrt"),
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: Tuple[Any, ...]  # ints, or str/None for dynamic dimensions
    dtype: str


# Every backend module has
#   build(onnx_path, out_dir, precision, device, options, context=None) -> runtime settings
# where context carries what some targets need beyond model.onnx (detection: the graph before
# the NMS, and the NMS parameters), and a `Runner` class.


class Runner(Protocol):
    """One inference session. Use as a context manager; `infer` maps input names to arrays."""

    inputs: List[TensorSpec]
    outputs: List[TensorSpec]

    def infer(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Runner": ...

    def __exit__(self, *exc: object) -> None: ...


class RunnerBase:
    """Context-manager plumbing shared by the concrete runners."""

    inputs: List[TensorSpec]
    outputs: List[TensorSpec]

    def close(self) -> None:
        pass

    def __enter__(self) -> "RunnerBase":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def require(package: str, backend: str, extra: str) -> Any:
    """Import a backend package or raise a clear error naming what to install."""
    from edgevision.errors import BackendNotInstalled

    try:
        return importlib.import_module(package)
    except ImportError:
        raise BackendNotInstalled(backend, package, extra) from None


def create_runner(backend: str, files: Dict[str, Path], settings: Dict[str, Any], threads: Optional[int] = None,
                  streams: int = 1) -> Runner:
    """Open a runner for a built variant: `files` are its model files, `settings` its runtime config.
    threads: CPU threads in all (default: every core); streams: calls expected at once (a stream's
    in_flight): CPU backends split the threads between them instead of each call taking them all."""
    from edgevision.errors import BackendError

    if backend not in _RUNNERS:
        known = ", ".join(sorted(_RUNNERS))
        raise BackendError(f"unknown backend '{backend}' (known: {known})")
    module, package, extra = _RUNNERS[backend]
    require(package, backend, extra)
    cls = importlib.import_module(module).Runner
    return cls(files=files, settings=settings, threads=threads, streams=streams)
