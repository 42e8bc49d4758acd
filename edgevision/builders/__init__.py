"""Compile time: turn the verified ONNX into each backend's files (edgevision.backends.* run them).

One module per backend, each with `build(onnx_path, out_dir, precision, device, options, context)`
returning the variant's runtime settings; `build_variant` picks it from the backend table
(backends/base.BACKENDS), and `open_runner` opens a built variant here for verification and the
benchmark. The runtime never imports this package (import-linter contract).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

from edgevision.backends.base import BACKENDS, create_runner
from edgevision.records import VariantRecord

if TYPE_CHECKING:
    from edgevision.ops.nms import NMSParams
    from edgevision.quantize.accuracy import AccuracyProbe
    from edgevision.quantize.calibration import CalibrationSet
    from edgevision.recipe import TargetSpec


@dataclass(frozen=True)
class BuildContext:
    """What a target needs beyond model.onnx."""

    pre_nms: Optional[Path] = None  # detection: the graph before the NMS (TensorRT appends its own form)
    nms: Optional["NMSParams"] = None  # detection: the NMS parameters of the graph
    calibration: Optional["CalibrationSet"] = None  # int8: the calibration images, pre-processed
    cache: bool = True  # int8: reuse cached calibration statistics
    accuracy: Optional["AccuracyProbe"] = None  # int8 with calibration.accuracy_control
    module: Any = None  # the PyTorch export wrapper, for targets that convert from PyTorch (ExecuTorch)
    log: Callable[[str], None] = print


def build_variant(target: "TargetSpec", onnx_path: Path, out_dir: Path, context: BuildContext) -> Dict[str, Any]:
    """Write a recipe target's files into out_dir with its backend's builder; return its runtime settings."""
    module = importlib.import_module(BACKENDS[target.backend].builder)
    return module.build(onnx_path, out_dir, target.precision, target.device, target.options, context)


def open_runner(variant: VariantRecord, vdir: Path, threads: Optional[int]) -> Tuple[Any, Optional[str]]:
    """A built variant's runner on this machine, and a note when it is not the real engine: a
    TensorRT variant without an engine here runs as CPU emulation."""
    settings = variant.settings or {}
    files = {k: vdir / v for k, v in settings["files"].items()}
    info = BACKENDS[variant.backend]
    if info.emulation is not None and "engine" not in settings["files"]:
        emulate = getattr(importlib.import_module(info.builder), info.emulation)
        return emulate(files, settings, threads), "CPU emulation: onnxruntime, EfficientNMS_TRT lowered to standard ONNX; engine not built here"
    return create_runner(variant.backend, files, settings, threads), None
