"""TensorRT (10.x and 11.x): a TensorRT-bound ONNX, its builder settings, and the engine.

Build writes `model.onnx` (for detection: the NMS as an `EfficientNMS_TRT` node or as standard
ONNX NonMaxSuppression, which the parser maps to INMSLayer) and `build.json` (strongly typed,
optimisation profile, optimisation level, timing cache). Where TensorRT and a GPU are present
the engine is built too; otherwise the runner builds it on the target device at first load and
caches it next to the ONNX (engines are specific to GPU model and TensorRT version).

Verification without TensorRT runs the same graph in ONNX Runtime with plugin nodes lowered to
standard ONNX (`emulation_runner`), so what ships is what was checked, up to the engine build.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from edgevision.backends.base import RunnerBase, TensorSpec, require, unknown_options
from edgevision.errors import BackendError

NMS_FORMS = ("efficient_nms", "onnx")
def installed_version() -> Optional[Tuple[int, int]]:
    try:
        import tensorrt as trt
    except ImportError:
        return None
    major, minor = (int(x) for x in trt.__version__.split(".")[:2])
    return major, minor


def choose_nms_form(requested: Optional[str], version: Optional[Tuple[int, int]]) -> Tuple[str, str]:
    """The NMS form for the engine, and why. EfficientNMS_TRT runs on TensorRT 8.6 to 11.x
    (JetPack 6 ships 10.3); it is deprecated since 10.12, so 11+ defaults to INMSLayer."""
    if requested is not None:
        if requested not in NMS_FORMS:
            raise BackendError(f"tensorrt: options.nms must be one of {', '.join(NMS_FORMS)}, got {requested!r}")
        return requested, "set in the recipe (targets[].options.nms)"
    if version is not None and version >= (11, 0):
        return "onnx", f"TensorRT {version[0]}.{version[1]} here: EfficientNMS_TRT is deprecated, use INMSLayer"
    where = f"TensorRT {version[0]}.{version[1]} here" if version else "TensorRT not installed here"
    return "efficient_nms", f"{where}: EfficientNMS_TRT runs on TensorRT 8.6-11.x (JetPack 6 has 10.3)"


def build(onnx_path: Path, out_dir: Path, precision: str, device: str, options: Dict[str, Any],
          context: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """context: {"pre_nms": path of the graph before NMS, "nms": NMSParams} for detection."""
    import onnx

    from edgevision.export.nms import append_nms

    problem = unknown_options("tensorrt", options)
    if problem:
        raise BackendError(problem)
    if precision not in ("fp32", "fp16", "int8"):
        raise BackendError(f"tensorrt: precision '{precision}' is not built by this version (fp32, fp16, int8)")
    if not device.startswith(("cuda", "gpu", "dla")):
        raise BackendError(f"tensorrt: device must be cuda[:N] (or dla:N), got '{device}'")
    version = installed_version()
    settings: Dict[str, Any] = {"files": {"model": "model.onnx"}, "device": device}
    context = context or {}
    detection = context.get("pre_nms") is not None
    finish: Any = None
    if detection:
        form, reason = choose_nms_form(options.get("nms"), version)
        settings["nms_form"], settings["nms_form_reason"] = form, reason
        finish = lambda m: append_nms(m, context["nms"], form)  # noqa: E731
    if precision == "fp32" and not detection:
        shutil.copyfile(onnx_path, out_dir / "model.onnx")
    else:
        model = onnx.load(str(context["pre_nms"] if detection else onnx_path))
        model, conversion = _convert(model, precision, context, finish)
        if conversion:
            settings["quantization"] = conversion
        onnx.save_model(finish(model) if finish else model, str(out_dir / "model.onnx"))
    settings["build"] = builder_settings(onnx.load(str(out_dir / "model.onnx"), load_external_data=False), options)
    # the engine's profile bounds the batch: the variant records it, and predict() splits lists to fit
    settings["max_batch"] = min(p["max"][0] for p in settings["build"]["profile"].values())
    (out_dir / "build.json").write_text(json.dumps(settings["build"], indent=2) + "\n")
    settings["files"]["build"] = "build.json"
    if version is not None and _has_gpu():
        build_engine(out_dir / "model.onnx", settings["build"], out_dir / "model.engine")
        settings["files"]["engine"] = "model.engine"
    return settings


def _convert(model: Any, precision: str, context: Dict[str, Any], finish: Any) -> Tuple[Any, Optional[Dict[str, Any]]]:
    """Strongly typed precision lives in the ONNX: fp16 tensors, or Q/DQ nodes for int8."""
    import onnx

    from edgevision.export.nms import lower_efficient_nms
    from edgevision.quantize.onnx_qdq import quantize_onnx, to_fp16

    if precision == "fp16":
        return to_fp16(model)
    if precision == "int8":
        scored = (lambda m: lower_efficient_nms(finish(onnx.ModelProto.FromString(m.SerializeToString())))) if finish else None
        return quantize_onnx(model, "tensorrt", context, scored)
    return model, None


def builder_settings(model: Any, options: Dict[str, Any]) -> Dict[str, Any]:
    """Everything needed to (re)build the engine on the device: strongly typed, one profile over
    every graph input (images, and proposals in external-proposal mode)."""
    profile = {}
    for inp in model.graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
        if any(d is None for d in dims[1:]):
            raise BackendError(f"tensorrt: input '{inp.name}': only the batch dimension may be dynamic (fixed input size)")
        max_batch = int(options.get("max_batch", 8)) if dims[0] is None else dims[0]
        rest = [int(d) for d in dims[1:]]
        profile[inp.name] = {"min": [1, *rest], "opt": [1, *rest], "max": [max_batch, *rest]}
    return {
        "strongly_typed": True,  # TensorRT 11 has no other mode; 10.x: precision comes from the ONNX
        "workspace_mb": int(options.get("workspace_mb", 1024)),
        "optimization_level": int(options.get("optimization_level", 3)),
        "timing_cache": "timing.cache",
        "profile": profile,
    }


def _has_gpu() -> bool:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return False
    err, count = cudart.cudaGetDeviceCount()
    return int(err) == 0 and count > 0


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


def emulation_runner(files: Dict[str, Path], settings: Dict[str, Any], threads: Optional[int] = None) -> Any:
    """ONNX Runtime on the TensorRT-bound graph with EfficientNMS_TRT lowered to standard ONNX."""
    import onnx

    from edgevision.backends.onnxruntime import Runner as OrtRunner
    from edgevision.export.nms import lower_efficient_nms

    lowered = files["model"].with_name(".model.lowered.onnx")
    onnx.save_model(lower_efficient_nms(onnx.load(str(files["model"]))), str(lowered))
    try:
        return OrtRunner({"model": lowered}, {"device": "cpu"}, threads)
    finally:
        lowered.unlink()


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
