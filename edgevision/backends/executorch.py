"""ExecuTorch: run a variant's model.pte (XNNPACK delegate) on the CPU; builders/executorch.py builds it.

On a phone the .pte runs in ExecuTorch's C++ runtime (Android: org.pytorch.executorch.Module; iOS: the
ExecuTorch framework). Here it runs in ExecuTorch's Python runtime, which takes torch tensors: this runner
is the one place on the runtime side that imports torch (the registry has no torch-free Python runtime for
.pte programs), allowed by name in the layering contract. Batch 1: a batch runs image by image. A
detector's program ends before its NMS, which this runner finishes on the host with the canonical NMS
(ops/nms.py), so the outputs are the contract's num_dets / boxes / scores / labels, as on every backend.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from edgevision.backends.base import RunnerBase, TensorSpec, require
from edgevision.errors import BackendError
from edgevision.ops.nms import NMSParams, nms_reference


class Runner(RunnerBase):
    """One loaded ExecuTorch method; calls are serialised (a method's memory-planned buffers are shared)."""

    def __init__(self, files: Dict[str, Path], settings: Dict[str, Any], threads: Optional[int] = None,
                 streams: int = 1) -> None:
        runtime = require("executorch.runtime", "executorch", "executorch")
        self._torch = require("torch", "executorch", "executorch")
        try:
            program = runtime.Runtime.get().load_program(str(files["model"]))
            self._method = program.load_method("forward")
        except Exception as e:  # the runtime's own errors: an unknown operator, a damaged or foreign file
            raise BackendError(f"executorch could not load {files['model']} ({type(e).__name__}: {e})") from None
        self._program = program
        self._lock = threading.Lock()
        spec = settings["input"]
        self.inputs = [TensorSpec(spec["name"], ("batch", *spec["shape"]), "float32")]
        self._names = list(settings["outputs"])
        self._nms = NMSParams(**settings["nms"]) if settings.get("nms") else None
        names = ["num_dets", "boxes", "scores", "labels"] if self._nms else self._names
        self.outputs = [TensorSpec(n, ("batch",), "float32") for n in names]
        self.host_seconds = 0.0  # time in the host NMS (what the program does not run), for the benchmark

    def infer(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        self.check_feeds(feeds)
        images = feeds[self.inputs[0].name]
        per_image = [self._one(images[b : b + 1]) for b in range(len(images))]
        outputs = {n: np.concatenate([p[n] for p in per_image]) for n in self._names}
        if self._nms is None:
            return outputs
        start = time.perf_counter()
        result = nms_reference(outputs["boxes"], outputs["scores"], self._nms)
        self.host_seconds += time.perf_counter() - start
        return result

    def _one(self, image: np.ndarray) -> Dict[str, np.ndarray]:
        tensor = self._torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        with self._lock:
            if self._method is None:
                raise BackendError("executorch: the runner is closed")
            try:
                out = self._method.execute([tensor])
            except RuntimeError as e:  # the runtime's error code; its log (stderr) names the instruction
                raise BackendError(f"executorch: running the program failed ({e}); ExecuTorch's log above says where") from None
        values = out if isinstance(out, (list, tuple)) else [out]
        if len(values) != len(self._names):
            raise BackendError(f"executorch: the program gave {len(values)} outputs, the variant records {self._names}")
        return {n: v.numpy().copy() for n, v in zip(self._names, values)}

    def close(self) -> None:
        with self._lock:
            self._method = None
            self._program = None
