"""The backend table (BACKENDS), and the Runner protocol shared by every backend's runner.

This module imports nothing heavy: the runtime and `edgevision --help` load it with no
backend installed. Backend packages are imported only when a runner is created.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Protocol, Tuple

import numpy as np


@dataclass(frozen=True)
class Backend:
    """One backend, everything the rest of edgevision needs to know about it: the recipe schema
    (precisions, devices, options), `edgevision --help`, the compile (builder, CPU verification) and
    the runtime (runner, the package it needs and the pip extra that installs it)."""

    name: str
    package: str  # the Python package its runner needs
    extra: str  # pip install 'edgevision[<extra>]'
    precisions: Tuple[str, ...]
    devices: Tuple[str, ...]  # device names (a prefix: cuda matches cuda:1)
    options: Tuple[str, ...]  # what targets[].options may set; the recipe rejects others when it loads
    runner: str  # module with the `Runner` class (device time: edgevision.backends.*)
    builder: str  # module with `build(onnx_path, out_dir, precision, device, options, BuildContext)` (edgevision.builders.*)
    emulation: Optional[str] = None  # builder function that verifies a variant on CPU where its engine cannot run
    emulation_package: Optional[str] = None  # the package the emulation needs
    tasks: Optional[Tuple[str, ...]] = None  # the tasks it can carry (None: every task); refused at recipe load
    refusals: Tuple[Tuple[str, str], ...] = ()  # (precision or task, why this backend does not build it)

    def refusal(self, what: str) -> str:
        """Why a precision or task is not built, when the table says; else an empty string."""
        return dict(self.refusals).get(what, "")


BACKENDS: Dict[str, Backend] = {b.name: b for b in (
    Backend("onnxruntime", "onnxruntime", "onnxruntime", ("fp32", "int8"), ("cpu", "cuda", "tensorrt"),
            ("graph_optimization_level",), "edgevision.backends.onnxruntime", "edgevision.builders.onnxruntime"),
    Backend("openvino", "openvino", "openvino", ("fp32", "bf16", "fp16", "int8"), ("cpu", "gpu", "npu", "auto"),
            ("performance_hint", "num_streams", "dynamic_shapes"), "edgevision.backends.openvino",
            "edgevision.builders.openvino"),
    Backend("tensorrt", "tensorrt", "tensorrt", ("fp32", "fp16", "int8"), ("cuda", "gpu", "dla"),
            ("nms", "workspace_mb", "optimization_level", "max_batch"), "edgevision.backends.tensorrt",
            "edgevision.builders.tensorrt", emulation="emulation_runner", emulation_package="onnxruntime"),
    Backend("ncnn", "ncnn", "ncnn", ("fp32", "fp16"), ("cpu",), (), "edgevision.backends.ncnn", "edgevision.builders.ncnn",
            tasks=("classification", "segmentation", "detection"), refusals=(
                ("int8", "ncnn's INT8 needs its ncnn2table / ncnn2int8 tools, which no registry package ships; use "
                         "onnxruntime or openvino int8"),
                ("instance_segmentation", "its graphs keep the NMS inside (masks follow the kept detections; "
                                          "Mask R-CNN also RoI Align), and ncnn has no NMS layer"),
                ("keypoints", "its graphs keep the NMS inside (keypoints follow the kept detections; Keypoint R-CNN "
                              "also RoI Align), and ncnn has no NMS layer"),
                ("oriented_detection", "its rotated NMS is in the graph and ncnn has no comparison layer to run it"))),
    Backend("executorch", "executorch", "executorch", ("fp32", "int8"), ("cpu",), (), "edgevision.backends.executorch",
            "edgevision.builders.executorch", tasks=("classification", "segmentation", "detection"), refusals=(
                ("instance_segmentation", "its graphs keep the NMS inside (masks follow the kept detections), and "
                                          "torchvision's nms has no ExecuTorch kernel"),
                ("keypoints", "its graphs keep the NMS inside (keypoints follow the kept detections), and torchvision's "
                              "nms has no ExecuTorch kernel"),
                ("oriented_detection", "its rotated NMS is inside the graph; not carried by this version"))),
)}


def unknown_options(backend: str, options: Dict[str, Any]) -> Optional[str]:
    """None, or what is wrong with a target's option names, with the nearest known name."""
    import difflib

    known = BACKENDS[backend].options
    unknown = sorted(set(options) - set(known))
    if not unknown:
        return None
    hints = [f"'{u}' (did you mean '{m[0]}'?)" if (m := difflib.get_close_matches(u, known, 1)) else f"'{u}'"
             for u in unknown]
    return f"{backend} has no option {', '.join(hints)}; its options: {', '.join(known)}"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: Tuple[Any, ...]  # ints, or str/None for dynamic dimensions
    dtype: str


class Runner(Protocol):
    """One inference session. Use as a context manager; `infer` maps input names to arrays."""

    inputs: List[TensorSpec]
    outputs: List[TensorSpec]

    def infer(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Runner": ...

    def __exit__(self, *exc: object) -> None: ...


# dtype names as the engines spell them (ORT 'tensor(float)', OpenVINO "<Type: 'float32'>", TensorRT
# 'DataType.FLOAT') -> numpy; checked from the most specific word.
_DTYPES = [("float16", "float16"), ("half", "float16"), ("bfloat16", None), ("float", "float32"), ("f32", "float32"),
           ("int64", "int64"), ("int32", "int32"), ("int8", "int8"), ("uint8", "uint8"), ("bool", "bool")]


def numpy_dtype(name: str) -> Optional[str]:
    """The numpy dtype an engine's input type name means, or None when unknown (not checked)."""
    low = name.lower()
    return next((np_name for token, np_name in _DTYPES if token in low), None)


class RunnerBase:
    """Context-manager plumbing and feed checks shared by the concrete runners."""

    inputs: List[TensorSpec]
    outputs: List[TensorSpec]

    def check_feeds(self, feeds: Dict[str, np.ndarray]) -> None:
        """An InputError naming the graph input when a feed is missing or unknown, or has another
        rank, fixed dimension or dtype than the graph takes (instead of an engine's own message)."""
        from edgevision.errors import InputError

        expected = {s.name: s for s in self.inputs}
        if set(feeds) != set(expected):
            raise InputError(f"graph inputs: got {sorted(feeds)}, the graph takes {sorted(expected)}")
        for name, value in feeds.items():
            spec, shape = expected[name], tuple(np.shape(value))
            fixed = [d if isinstance(d, int) and d > 0 else None for d in spec.shape]
            if len(shape) != len(fixed) or any(f is not None and f != s for f, s in zip(fixed, shape)):
                wanted = "x".join("?" if f is None else str(f) for f in fixed)
                raise InputError(f"graph input '{name}': shape {'x'.join(map(str, shape))}, the graph takes {wanted}")
            dtype = numpy_dtype(spec.dtype)
            if dtype is not None and np.asarray(value).dtype != np.dtype(dtype):
                raise InputError(f"graph input '{name}': dtype {np.asarray(value).dtype}, the graph takes {dtype}")

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

    if backend not in BACKENDS:
        known = ", ".join(sorted(BACKENDS))
        raise BackendError(f"unknown backend '{backend}' (known: {known})")
    info = BACKENDS[backend]
    require(info.package, backend, info.extra)
    cls = importlib.import_module(info.runner).Runner
    return cls(files=files, settings=settings, threads=threads, streams=streams)
