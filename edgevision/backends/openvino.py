"""OpenVINO: build (ONNX -> IR, FP32 weights unless fp16) and run (CPU LATENCY hint by default).

The inference precision is always set explicitly: on CPUs with AMX the default is bf16, which
silently breaks FP32 parity (../shared/TOOLCHAINS.md).
"""

from __future__ import annotations

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

    def close(self) -> None:
        self._request = None
        self._compiled = None


def _keep_onnx_output_names(model: Any, onnx_path: Path) -> None:
    """Give each output exactly its ONNX name (OpenVINO may add others, e.g. 'argmax')."""
    import onnx

    names = [o.name for o in onnx.load(str(onnx_path), load_external_data=False).graph.output]
    for port, name in zip(model.outputs, names):
        port.get_tensor().set_names({name})


def _spec(port: Any, name: Optional[str] = None) -> TensorSpec:
    shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    return TensorSpec(name or port.get_any_name(), shape, str(port.get_element_type()))
