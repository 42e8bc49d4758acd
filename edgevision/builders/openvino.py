"""OpenVINO variants: ONNX -> IR (FP32 weights unless fp16; NNCF post-training quantization for int8)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from edgevision.backends.base import require, unknown_options
from edgevision.builders import BuildContext
from edgevision.errors import BackendError

_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}  # int8: the float remainder in f32
_DEVICES = {"cpu": "CPU", "gpu": "GPU", "npu": "NPU", "auto": "AUTO"}


def build(onnx_path: Path, out_dir: Path, precision: str, device: str, options: Dict[str, Any],
          context: BuildContext) -> Dict[str, Any]:
    ov = require("openvino", "openvino", "openvino")
    if device.lower() not in _DEVICES:
        raise BackendError(f"openvino: unknown device '{device}' (known: {', '.join(_DEVICES)})")
    if precision not in _HINTS:
        raise BackendError(f"openvino: precision '{precision}' is not built by this version ({', '.join(_HINTS)})")
    problem = unknown_options("openvino", options)
    if problem:
        raise BackendError(problem)
    try:
        # convert_model, not Core.read_model: it runs OpenVINO's offline transformations (ovc's), which fold
        # the ONNX frontend's ShapeOf/Split/Reshape weight subgraph of every depthwise Conv into a constant.
        # Left unfolded, NNCF quantizes the weights before that subgraph and the CPU plugin runs every
        # depthwise conv in f32 between Reorders: INT8 MobileNetV3 as slow as FP32 (3.43 vs 3.47 ms),
        # against 2.35 ms converted (README, "Facts this is built on")
        model = ov.convert_model(str(onnx_path))
    except Exception as e:
        raise BackendError(f"openvino could not read {onnx_path.name}: {e}") from None
    _keep_onnx_output_names(model, onnx_path)
    quantization = None
    if precision == "int8":
        from edgevision.quantize.calibration import require_calibration
        from edgevision.quantize.nncf_ov import quantize_openvino

        calib = require_calibration(context.calibration, "openvino")
        model, quantization = quantize_openvino(model, calib, context.log, context.accuracy)
        quantization["calibration"] = calib.describe()
    # FP32, BF16 and INT8 keep FP32 weights (FP16 compression changes detections: README, "Facts this is built on").
    ov.save_model(model, str(out_dir / "model.xml"), compress_to_fp16=(precision == "fp16"))
    hint = options.get("performance_hint", "LATENCY")
    config = {"INFERENCE_PRECISION_HINT": _HINTS[precision], "PERFORMANCE_HINT": hint}
    if "num_streams" in options:
        config["NUM_STREAMS"] = str(options["num_streams"])
    settings = {"files": {"model": "model.xml", "weights": "model.bin"}, "device": _DEVICES[device.lower()], "config": config,
                # False: the runner compiles for the input shapes of each call (static shapes run faster)
                "dynamic_shapes": bool(options.get("dynamic_shapes", False))}
    if quantization is not None:
        settings["quantization"] = quantization
    return settings


def _keep_onnx_output_names(model: Any, onnx_path: Path) -> None:
    """Give each output exactly its ONNX name (OpenVINO may add others, e.g. 'argmax')."""
    import onnx

    names = [o.name for o in onnx.load(str(onnx_path), load_external_data=False).graph.output]
    for port, name in zip(model.outputs, names):
        port.get_tensor().set_names({name})
