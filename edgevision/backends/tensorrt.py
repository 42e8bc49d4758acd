"""TensorRT (10.x and 11.x) at device time: build the engine from the variant's ONNX and
build.json (builders/tensorrt.py writes them) when the artifact has none, cache it, and run it.
Engines are specific to GPU model and TensorRT version."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from edgevision.backends.base import RunnerBase, TensorSpec, require
from edgevision.errors import BackendError


def installed_version() -> Optional[Tuple[int, int]]:
    try:
        import tensorrt as trt
    except ImportError:
        return None
    major, minor = (int(x) for x in trt.__version__.split(".")[:2])
    return major, minor


def build_engine(onnx_path: Path, cfg: Dict[str, Any], engine_path: Path) -> None:
    """Parse the ONNX and build a serialized engine with the TensorRT 10/11 Python API."""
    trt = require("tensorrt", "tensorrt", "tensorrt")
    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")  # EfficientNMS_TRT, ROIAlign_TRT ... for the parser
    builder = trt.Builder(logger)
    flags = 0
    if cfg.get("strongly_typed", True) and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)  # ignored (always on) in 11
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"tensorrt could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg["workspace_mb"] << 20)
    config.builder_optimization_level = cfg["optimization_level"]
    cache_path = engine_path.parent / cfg["timing_cache"]
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    for name, shapes in cfg["profile"].items():
        profile.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"tensorrt could not build an engine from {onnx_path.name} (see the TensorRT log above)")
    engine_path.write_bytes(bytes(serialized))
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))


class Runner(RunnerBase):
    """Runs the engine (built here at first load when the artifact has none) with cuda-python."""

    def __init__(self, files: Dict[str, Path], settings: Dict[str, Any], threads: Optional[int] = None,
                 streams: int = 1) -> None:  # streams: one GPU context serves every call (they are serialised)
        trt = require("tensorrt", "tensorrt", "tensorrt")
        self._cudart = require("cuda.bindings.runtime", "tensorrt", "tensorrt")
        engine_path = files.get("engine") or files["model"].with_name("model.engine")
        if not engine_path.is_file():
            build_engine(files["model"], settings["build"], engine_path)
        logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(logger, "")  # the engine may hold plugin layers
        runtime = trt.Runtime(logger)
        self._engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self._engine is None:
            raise BackendError(f"tensorrt could not load {engine_path} (built for another GPU or TensorRT version?)")
        self._context = self._engine.create_execution_context()
        self._trt = trt
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        spec = {n: TensorSpec(n, tuple(self._engine.get_tensor_shape(n)), str(self._engine.get_tensor_dtype(n))) for n in names}
        self.inputs: List[TensorSpec] = [spec[n] for n in names if is_input[n]]
        self.outputs: List[TensorSpec] = [spec[n] for n in names if not is_input[n]]
        self._stream = self._check(self._cudart.cudaStreamCreate())
        self._buffers: Dict[str, Tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self._lock = threading.Lock()

    def _check(self, result: Any) -> Any:
        err, *values = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise BackendError(f"CUDA error {err}")
        return values[0] if values else None

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                self._check(self._cudart.cudaFree(ptr))
            ptr = self._check(self._cudart.cudaMalloc(nbytes))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def infer(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        self.check_feeds(feeds)
        for spec in self.inputs:  # the optimisation profile's maximum (settings max_batch, variant.json input.max_batch)
            biggest = tuple(self._engine.get_tensor_profile_shape(spec.name, 0)[2])
            if biggest and np.shape(feeds[spec.name])[0] > biggest[0]:
                from edgevision.errors import InputError

                raise InputError(f"graph input '{spec.name}': batch {np.shape(feeds[spec.name])[0]} is over the engine's "
                                 f"maximum {biggest[0]} (predict splits longer lists; rebuild with options.max_batch)")
        # one execution context, its device buffers and its stream serve one call at a time: callers
        # from several threads take turns (a context per thread would hold a copy of the activations)
        with self._lock:
            return self._infer(feeds)

    def _infer(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        cudart, ctx, kind = self._cudart, self._context, self._cudart.cudaMemcpyKind
        for spec in self.inputs:
            x = np.ascontiguousarray(feeds[spec.name])
            ctx.set_input_shape(spec.name, x.shape)
            ptr = self._buffer(spec.name, x.nbytes)
            self._check(cudart.cudaMemcpyAsync(ptr, x.ctypes.data, x.nbytes, kind.cudaMemcpyHostToDevice, self._stream))
            ctx.set_tensor_address(spec.name, ptr)
        outputs = {}
        for spec in self.outputs:
            dtype = self._trt.nptype(self._engine.get_tensor_dtype(spec.name))
            outputs[spec.name] = np.empty(tuple(ctx.get_tensor_shape(spec.name)), dtype=dtype)
            ctx.set_tensor_address(spec.name, self._buffer(spec.name, max(outputs[spec.name].nbytes, 1)))
        if not ctx.execute_async_v3(int(self._stream)):
            raise BackendError("tensorrt: execute_async_v3 failed")
        for name, out in outputs.items():
            ptr = self._buffers[name][0]
            self._check(cudart.cudaMemcpyAsync(out.ctypes.data, ptr, out.nbytes, kind.cudaMemcpyDeviceToHost, self._stream))
        self._check(cudart.cudaStreamSynchronize(self._stream))
        return outputs

    def close(self) -> None:
        for ptr, _ in self._buffers.values():
            self._cudart.cudaFree(ptr)
        self._buffers = {}
        self._context = None
        self._engine = None
