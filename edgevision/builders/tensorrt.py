"""TensorRT variants (10.x and 11.x): a TensorRT-bound ONNX and its builder settings.

Build writes `model.onnx` (for detection: the NMS as an `EfficientNMS_TRT` node or as standard
ONNX NonMaxSuppression, which the parser maps to INMSLayer) and `build.json` (strongly typed,
optimisation profile, optimisation level, timing cache). Where TensorRT and a GPU are present
the engine is built too; otherwise the runner builds it on the target device at first load.

Verification without TensorRT runs the same graph in ONNX Runtime with plugin nodes lowered to
standard ONNX (`emulation_runner`), so what ships is what was checked, up to the engine build.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from edgevision.backends.base import unknown_options
from edgevision.backends.tensorrt import build_engine, installed_version
from edgevision.builders import BuildContext
from edgevision.errors import BackendError

NMS_FORMS = ("efficient_nms", "onnx")


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
          context: BuildContext) -> Dict[str, Any]:
    """Detection reads the context's pre_nms graph and NMS parameters."""
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
    detection = context.pre_nms is not None
    finish: Any = None
    if detection:
        form, reason = choose_nms_form(options.get("nms"), version)
        settings["nms_form"], settings["nms_form_reason"] = form, reason
        finish = lambda m: append_nms(m, context.nms, form)  # noqa: E731
    if precision == "fp32" and not detection:
        shutil.copyfile(onnx_path, out_dir / "model.onnx")
    else:
        model = onnx.load(str(context.pre_nms if detection else onnx_path))
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


def _convert(model: Any, precision: str, context: BuildContext, finish: Any) -> Tuple[Any, Optional[Dict[str, Any]]]:
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
