"""OpenVINO: run a variant's IR (CPU LATENCY hint by default); builders/openvino.py builds it.

The inference precision is always set explicitly (by the builder, in the variant's settings): on
CPUs with AMX the default is bf16, which silently breaks FP32 parity (README, "Facts this is built on").
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from edgevision.backends.base import RunnerBase, TensorSpec, require
from edgevision.errors import BackendError

_CORE: Any = None
_CORE_LOCK = threading.Lock()


def shared_core() -> Any:
    """The process's one ov.Core (thread-safe; every compile passes its own config).

    Why one: OpenVINO 2026.4 gives each Core an alternate signal stack on the thread that compiles
    with it, and puts back the one it replaced when the Core is destroyed, even if that one was
    freed already (Cores destroyed out of order: open two models, close the first, then the second).
    Python runs its SIGINT handler on that stack, so Ctrl-C then crashed the process (exit 139, no
    cleanup) in 2 to 4 runs of 12 (tests/test_openvino_core.py). A Core that lives as long as the
    process never puts back a freed stack; it is also what OpenVINO recommends."""
    global _CORE
    with _CORE_LOCK:
        if _CORE is None:
            _CORE = require("openvino", "openvino", "openvino").Core()
        return _CORE


class Runner(RunnerBase):
    """One OpenVINO model, safe to call from several threads.

    Shapes: the IR keeps the dynamic batch it was exported with, but a CPU runs a dynamic-shape
    model on a slower path (SSDlite-320: 27.9 ms dynamic vs 9.5 ms static, benchmarks/results/e2e.md), so the
    model is compiled for the exact input shapes of each call, one compiled model per shape set
    (at most MAX_SHAPES, least recently used dropped), unless settings["dynamic_shapes"] is true.

    Threads: an InferRequest serves one call at a time (shared, it raised "Infer Request is busy"
    and returned other callers' outputs). Each compiled model keeps a pool of idle requests; a call
    takes one, or creates one when all are busy, so there is one request per concurrent caller and
    none is ever shared. Outputs are copies (share_outputs=False): a result never aliases a buffer
    that the next call overwrites. Calls run their inferences one at a time (pre- and post-processing
    of other frames still overlap them): two infer() calls at once on one compiled model deadlocked
    about once in 40 runs of `edgevision run` on a loaded 2-core host (OpenVINO 2026.4's Python data
    dispatch, both callers stuck copying inputs, every Python thread waiting for the GIL).
    """

    MAX_SHAPES = 4

    def __init__(self, files: Dict[str, Path], settings: Dict[str, Any], threads: Optional[int] = None,
                 streams: int = 1) -> None:
        ov = require("openvino", "openvino", "openvino")
        core = shared_core()
        config = dict(settings.get("config", {}))
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(threads)
        if streams > 1:  # one CPU stream per concurrent call (else they queue on one), the threads split between them
            config["NUM_STREAMS"] = str(streams)
        device = settings.get("device", "CPU")
        try:
            model = core.read_model(str(files["model"]))
        except Exception as e:
            raise BackendError(f"openvino could not read {files['model']}: {e}") from None
        # names as saved (compiling may attach extra names to a port, e.g. 'argmax')
        names = [p.get_any_name() for p in model.outputs]
        self._ov, self._core, self._model, self._device, self._config = ov, core, model, device, config
        # as saved: when asked (options.dynamic_shapes), or when the IR is static already
        self._as_saved = bool(settings.get("dynamic_shapes", False)) or not model.is_dynamic()
        self._lock = threading.Lock()
        self._infer_lock = threading.Lock()
        self._compiled: "OrderedDict[Any, Tuple[Any, queue.SimpleQueue]]" = OrderedDict()
        first = self._compiled_for(None if self._as_saved else _batch_one(model))  # fails here, not at the first call
        self.inputs: List[TensorSpec] = [_spec(p) for p in model.inputs]
        self.outputs: List[TensorSpec] = [_spec(p, n) for p, n in zip(first[0].outputs, names)]
        self._names = names

    def _compiled_for(self, shapes: Optional[Tuple[Tuple[str, Tuple[int, ...]], ...]]) -> Tuple[Any, "queue.SimpleQueue"]:
        """The compiled model (and its idle requests) for these input shapes; None: as saved."""
        with self._lock:
            entry = self._compiled.get(shapes)
            if entry is not None:
                self._compiled.move_to_end(shapes)
                return entry
            try:
                compiled = self._core.compile_model(self._shaped(shapes), self._device, self._config)
            except Exception as e:
                raise BackendError(f"openvino could not compile {self._model.get_friendly_name()} for {self._device}"
                                   f"{'' if shapes is None else ' at ' + str(dict(shapes))}: {e}") from None
            entry = self._compiled[shapes] = (compiled, queue.SimpleQueue())
            if len(self._compiled) > self.MAX_SHAPES:
                self._compiled.popitem(last=False)
            return entry

    def _shaped(self, shapes: Optional[Tuple[Tuple[str, Tuple[int, ...]], ...]]) -> Any:
        if shapes is None:
            return self._model
        model = self._model.clone()
        model.reshape(dict(shapes))
        return model

    @property
    def compiled_shapes(self) -> List[Any]:
        """The input shapes compiled so far (None: the model as saved, dynamic)."""
        with self._lock:
            return [None if k is None else dict(k) for k in self._compiled]

    def _key(self, feeds: Dict[str, np.ndarray]) -> Optional[Tuple[Tuple[str, Tuple[int, ...]], ...]]:
        return None if self._as_saved else tuple(sorted((k, tuple(np.shape(v))) for k, v in feeds.items()))

    @property
    def execution_precision(self) -> str:
        """What the device really runs (a hint it cannot honour falls back silently)."""
        compiled, _ = self._compiled_for(None if self._as_saved else _batch_one(self._model))
        value = compiled.get_property("INFERENCE_PRECISION_HINT")
        return value.to_string() if hasattr(value, "to_string") else str(value)

    def infer(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        self.check_feeds(feeds)
        compiled, idle = self._compiled_for(self._key(feeds))
        try:
            request = idle.get_nowait()
        except queue.Empty:
            request = compiled.create_infer_request()
        try:
            with self._infer_lock:  # one inference at a time: see the class docstring
                result = request.infer(feeds, share_inputs=False, share_outputs=False)
                return {name: result[port] for name, port in zip(self._names, compiled.outputs)}
        finally:
            idle.put(request)

    def async_throughput(self, feeds: Dict[str, np.ndarray], seconds: float) -> Dict[str, Any]:
        """Inferences per second with many requests in flight: the model compiled again with the
        THROUGHPUT hint (several streams, same threads and precision), fed by an AsyncInferQueue
        with the device's optimal number of requests, for `seconds` after one warm-up round."""
        config = {**self._config, "PERFORMANCE_HINT": "THROUGHPUT"}
        compiled = self._core.compile_model(self._shaped(self._key(feeds)), self._device, config)
        jobs = self._ov.AsyncInferQueue(compiled, 0)  # 0: the device's optimal number of requests
        for _ in range(len(jobs)):
            jobs.start_async(feeds)
        jobs.wait_all()
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            jobs.start_async(feeds)  # blocks while every request is busy
            count += 1
        jobs.wait_all()
        elapsed = time.perf_counter() - start
        batch = int(next(iter(feeds.values())).shape[0])
        return {"fps": round(count * batch / elapsed, 2), "requests": len(jobs), "batch": batch,
                "streams": int(compiled.get_property("NUM_STREAMS")), "hint": "THROUGHPUT", "seconds": round(elapsed, 2)}

    def close(self) -> None:
        with self._lock:
            self._compiled.clear()


def _spec(port: Any, name: Optional[str] = None) -> TensorSpec:
    shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    return TensorSpec(name or port.get_any_name(), shape, str(port.get_element_type()))


def _batch_one(model: Any) -> Optional[Tuple[Tuple[str, Tuple[int, ...]], ...]]:
    """Every input at batch 1 with its other dimensions as saved, if they are all static."""
    shapes = []
    for port in model.inputs:
        dims = list(port.get_partial_shape())
        if any(not d.is_static for d in dims[1:]):
            return None
        shapes.append((port.get_any_name(), (1, *(d.get_length() for d in dims[1:]))))
    return tuple(sorted(shapes))
