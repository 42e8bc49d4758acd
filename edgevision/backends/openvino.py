"""OpenVINO: build (ONNX -> IR, FP32 weights unless fp16) and run (CPU LATENCY hint by default).

The inference precision is always set explicitly: on CPUs with AMX the default is bf16, which
silently breaks FP32 parity (../shared/TOOLCHAINS.md).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from edgevision.backends.base import RunnerBase, TensorSpec, require
from edgevision.errors import BackendError

_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}  # int8: the float remainder in f32
_DEVICES = {"cpu": "CPU", "gpu": "GPU", "npu": "NPU", "auto": "AUTO"}
_OPTIONS = {"performance_hint", "num_streams"}


def build(onnx_path: Path, out_dir: Path, precision: str, device: str, options: Dict[str, Any],
          context: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    ov = require("openvino", "openvino", "openvino")
    if device.lower() not in _DEVICES:
        raise BackendError(f"openvino: unknown device '{device}' (known: {', '.join(_DEVICES)})")
    if precision not in _HINTS:
        raise BackendError(f"openvino: precision '{precision}' is not built by this version ({', '.join(_HINTS)})")
    unknown = set(options) - _OPTIONS
    if unknown:
        raise BackendError(f"openvino: unknown option(s) {sorted(unknown)} (known: {', '.join(sorted(_OPTIONS))})")
    try:
        model = ov.Core().read_model(str(onnx_path))
    except Exception as e:
        raise BackendError(f"openvino could not read {onnx_path.name}: {e}") from None
    _keep_onnx_output_names(model, onnx_path)
    quantization = None
    if precision == "int8":
        from edgevision.quantize.calibration import require_calibration
        from edgevision.quantize.nncf_ov import quantize_openvino

        context = context or {}
        calib = require_calibration(context, "openvino")
        model, quantization = quantize_openvino(model, calib, context.get("log", print), context.get("accuracy"))
        quantization["calibration"] = calib.describe()
    # FP32, BF16 and INT8 keep FP32 weights (FP16 compression changes detections, TOOLCHAINS.md).
    ov.save_model(model, str(out_dir / "model.xml"), compress_to_fp16=(precision == "fp16"))
    hint = options.get("performance_hint", "LATENCY")
    config = {"INFERENCE_PRECISION_HINT": _HINTS[precision], "PERFORMANCE_HINT": hint}
    if "num_streams" in options:
        config["NUM_STREAMS"] = str(options["num_streams"])
    settings = {"files": {"model": "model.xml", "weights": "model.bin"}, "device": _DEVICES[device.lower()], "config": config}
    if quantization is not None:
        settings["quantization"] = quantization
    return settings


class Runner(RunnerBase):
    def __init__(self, files: Dict[str, Path], settings: Dict[str, Any], threads: Optional[int] = None) -> None:
        ov = require("openvino", "openvino", "openvino")
        core = ov.Core()
        config = dict(settings.get("config", {}))
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(threads)
        device = settings.get("device", "CPU")
        try:
            model = core.read_model(str(files["model"]))
            # names as saved (compiling may attach extra names to a port, e.g. 'argmax')
            names = [p.get_any_name() for p in model.outputs]
            self._compiled = core.compile_model(model, device, config)
        except Exception as e:
            raise BackendError(f"openvino could not compile {files['model']} for {device}: {e}") from None
        self._request = self._compiled.create_infer_request()
        self._ov, self._core, self._model, self._device, self._config = ov, core, model, device, config
        self.inputs: List[TensorSpec] = [_spec(p) for p in self._compiled.inputs]
        self.outputs: List[TensorSpec] = [_spec(p, n) for p, n in zip(self._compiled.outputs, names)]
        self._ports = list(zip(names, self._compiled.outputs))

    @property
    def execution_precision(self) -> str:
        """What the device really runs (a hint it cannot honour falls back silently)."""
        value = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        return value.to_string() if hasattr(value, "to_string") else str(value)

    def infer(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        result = self._request.infer(feeds)
        return {name: np.asarray(result[port]) for name, port in self._ports}

    def async_throughput(self, feeds: Dict[str, np.ndarray], seconds: float) -> Dict[str, Any]:
        """Inferences per second with many requests in flight: the model compiled again with the
        THROUGHPUT hint (several streams, same threads and precision), fed by an AsyncInferQueue
        with the device's optimal number of requests, for `seconds` after one warm-up round."""
        config = {**self._config, "PERFORMANCE_HINT": "THROUGHPUT"}
        compiled = self._core.compile_model(self._model, self._device, config)
        queue = self._ov.AsyncInferQueue(compiled, 0)  # 0: the device's optimal number of requests
        for _ in range(len(queue)):
            queue.start_async(feeds)
        queue.wait_all()
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            queue.start_async(feeds)  # blocks while every request is busy
            count += 1
        queue.wait_all()
        elapsed = time.perf_counter() - start
        batch = int(next(iter(feeds.values())).shape[0])
        return {"fps": round(count * batch / elapsed, 2), "requests": len(queue), "batch": batch,
                "streams": int(compiled.get_property("NUM_STREAMS")), "hint": "THROUGHPUT", "seconds": round(elapsed, 2)}

    def close(self) -> None:
        self._request = None
        self._compiled = None
        self._model = None


def _keep_onnx_output_names(model: Any, onnx_path: Path) -> None:
    """Give each output exactly its ONNX name (OpenVINO may add others, e.g. 'argmax')."""
    import onnx

    names = [o.name for o in onnx.load(str(onnx_path), load_external_data=False).graph.output]
    for port, name in zip(model.outputs, names):
        port.get_tensor().set_names({name})


def _spec(port: Any, name: Optional[str] = None) -> TensorSpec:
    shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    return TensorSpec(name or port.get_any_name(), shape, str(port.get_element_type()))
