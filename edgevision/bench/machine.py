"""What a measurement ran on: CPU, cores, ISA flags, library versions. Stdlib only."""

from __future__ import annotations

import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Dict, List, Optional

from edgevision.version import __version__

# Instruction-set extensions that change which kernels the backends pick.
_ISA = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
        "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "amx_fp16", "asimd", "asimddp", "sve", "i8mm", "bf16")
_PACKAGES = ("torch", "torchvision", "onnx", "onnxslim", "onnxscript", "onnxruntime", "openvino", "nncf", "tensorrt",
             "ncnn", "pnnx", "executorch", "numpy", "faster-coco-eval", "matplotlib")


def tool_versions() -> Dict[str, Optional[str]]:
    """edgevision, Python and the versions of the libraries that shape results (None: not installed)."""
    out: Dict[str, Optional[str]] = {"edgevision": __version__, "python": sys.version.split()[0]}
    for pkg in _PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _cpuinfo() -> Dict[str, str]:
    fields: Dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_name() -> str:
    info = _cpuinfo()
    return info.get("model name") or info.get("Model") or platform.processor() or "unknown"


def isa_flags() -> List[str]:
    """The extensions of _ISA this CPU has (x86 'flags', ARM 'Features')."""
    info = _cpuinfo()
    have = set((info.get("flags") or info.get("Features") or "").split())
    return [f for f in _ISA if f in have]


def machine(threads: Optional[int] = None) -> Dict[str, Any]:
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "threads": threads,
        "isa": isa_flags(),
        "platform": platform.platform(),
        "libraries": tool_versions(),
    }
