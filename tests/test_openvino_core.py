"""OpenVINO models opened and closed in any order leave Ctrl-C working (backends/openvino.shared_core).

OpenVINO 2026.4 gives each ov.Core an alternate signal stack on the thread that compiles with it
and puts back the previous one when the Core is destroyed, even if that one was freed already.
Python runs its SIGINT handler on the alternate stack: with a Core per model, opening two models
and closing the first, then the second, left the thread's alternate stack in freed memory, and the
next Ctrl-C crashed the process (exit 139). Linux: the stack is read with sigaltstack(2) and
checked against /proc/self/maps."""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import edgevision

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sigaltstack and /proc/self/maps: Linux")


class _Stack(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


def _alternate_stack() -> tuple[int, int]:
    """This thread's alternate signal stack: (address, size); (0, 0) when there is none."""
    current = _Stack()
    assert ctypes.CDLL(None, use_errno=True).sigaltstack(None, ctypes.byref(current)) == 0
    disabled = current.ss_flags & 2  # SS_DISABLE
    return (0, 0) if disabled or not current.ss_sp else (current.ss_sp, current.ss_size)


def _mapped(address: int, size: int) -> bool:
    for line in Path("/proc/self/maps").read_text().splitlines():
        low, high = (int(x, 16) for x in line.split()[0].split("-"))
        if low <= address and address + size <= high and line.split()[1].startswith("rw"):
            return True
    return False


def test_models_closed_out_of_order_leave_a_usable_signal_stack(unet_artifact) -> None:  # noqa: ANN001
    _, root = unet_artifact
    image = np.zeros((64, 64, 3), np.uint8)
    first = edgevision.load(root / "openvino-fp32")
    first.predict(image)
    second = edgevision.load(root / "openvino-bf16")
    second.predict(image)
    assert _alternate_stack() != (0, 0)  # OpenVINO set one on this thread (the test would check nothing otherwise)
    first.close()
    del first
    gc.collect()
    second.close()
    del second
    gc.collect()  # with a Core per model, this put back the first Core's stack, freed a moment before
    address, size = _alternate_stack()
    assert address == 0 or _mapped(address, size), f"alternate signal stack {address:#x} is not mapped memory"
    with pytest.raises(KeyboardInterrupt):  # and a Ctrl-C is an exception, not a crash
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1.0)
