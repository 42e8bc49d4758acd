"""ExecuTorch variants: the PyTorch graph that was exported to ONNX, exported again with torch.export and
lowered to an ExecuTorch program (.pte) with the XNNPACK delegate (fp32; int8 by PT2E quantization with
XNNPACK's quantizer, calibrated on the recipe's calibration set).

ExecuTorch converts from PyTorch, not from ONNX: the builder gets the export wrapper itself
(BuildContext.module) and the input shape from model.onnx, so the program computes what the verified
graph computes, and is then verified against PyTorch like every variant. For detectors the program ends
before the NMS (torchvision's nms has no ExecuTorch kernel), at the same boxes / scores as the graph that
TensorRT and ncnn start from; the runner finishes with the canonical NMS on the host. Batch 1: a phone
runs one frame at a time, and the runner splits a batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from edgevision.backends.base import unknown_options
from edgevision.builders import BuildContext
from edgevision.errors import BackendError
from edgevision.tasks import DETECTION_TASKS


def build(onnx_path: Path, out_dir: Path, precision: str, device: str, options: Dict[str, Any],
          context: BuildContext) -> Dict[str, Any]:
    """Write model.pte into out_dir; return the runner's settings (input shape, output names, the host NMS)."""
    import torch
    from executorch.exir import to_edge_transform_and_lower

    problem = unknown_options("executorch", options)
    if problem:
        raise BackendError(problem)
    if precision not in ("fp32", "int8") or device != "cpu":
        raise BackendError(f"executorch: builds fp32 and int8 for device cpu, not {precision} on {device}")
    wrapper = context.module
    if wrapper is None:
        raise BackendError("executorch: converts from the PyTorch model, which this build was not given")
    if wrapper.task in DETECTION_TASKS and not wrapper.appends_nms:
        raise BackendError("executorch: this detector keeps its NMS (or top-k selection) inside the network "
                           "(masks / keypoints / rotated boxes follow the kept detections); torchvision's nms has "
                           "no ExecuTorch kernel. One-stage detectors whose NMS edgevision appends are carried")
    if len(wrapper.input_names) != 1:
        raise BackendError("executorch: graphs with external proposals are not carried (one image input only)")
    shape = [1, *_input_shape(onnx_path)[1:]]
    example = (torch.zeros(shape, dtype=torch.float32),)
    try:
        with torch.no_grad():
            program = torch.export.export(wrapper, example, strict=False)
            if precision == "int8":
                program = _quantized(wrapper, example, context)
            lowered = to_edge_transform_and_lower(program, partitioner=[_partitioner(precision)])
            delegated = _delegation(lowered)
            buffer = lowered.to_executorch().buffer
    except BackendError:
        raise
    except Exception as e:  # torch.export / lowering: name what failed, as one line
        raise BackendError(f"executorch: could not convert the model ({type(e).__name__}: {str(e).splitlines()[0][:300]})") from None
    (out_dir / "model.pte").write_bytes(buffer)
    settings: Dict[str, Any] = {"files": {"model": "model.pte"}, "precision": precision, "input": {"name": wrapper.input_names[0],
                                "shape": shape[1:]}, "outputs": list(wrapper.output_names), "delegated": delegated}
    if wrapper.appends_nms and context.nms is not None:
        settings["nms"] = context.nms.to_dict()
        settings["host_postprocessing"] = "nms"
    return settings


def _partitioner(precision: str) -> Any:
    """XNNPACK takes every operator it has for fp32. For int8 it takes the quantized operators only: given the
    float ones too, XNNPACK 1.5.1 fixed a wrong static shape on a permute after a quantized head (the
    quickstart detector's program failed at run time, "Attempted to resize a static tensor"); the float
    reshapes and permutes between them run on ExecuTorch's portable kernels."""
    from executorch.backends.xnnpack.partition.config.xnnpack_config import ConfigPrecisionType
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    return XnnpackPartitioner(config_precisions=ConfigPrecisionType.STATIC_QUANT) if precision == "int8" else XnnpackPartitioner()


def _input_shape(onnx_path: Path) -> List[int]:
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value if d.dim_value > 0 else 1 for d in dims]


def _quantized(wrapper: Any, example: tuple, context: BuildContext) -> Any:
    """PT2E: XNNPACK's symmetric per-channel int8 scheme, observers calibrated on the calibration set."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if context.calibration is None:
        raise BackendError("executorch int8: needs a calibration set (the recipe's calibration section)")
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    graph = torch.export.export(wrapper, example, strict=False).module()
    prepared = prepare_pt2e(graph, quantizer)
    for batch in context.calibration:
        for image in np.asarray(batch, dtype=np.float32):
            prepared(torch.from_numpy(np.ascontiguousarray(image[None])))
    context.log(f"executorch int8: calibrated on {len(context.calibration)} images (PT2E, XNNPACK quantizer)")
    return torch.export.export(convert_pt2e(prepared), example, strict=False)


def _delegation(lowered: Any) -> Dict[str, Any]:
    """What XNNPACK took (its partitions) and which operators run on ExecuTorch's portable kernels instead
    (memory-layout copies counted apart: they move data, they compute nothing)."""
    graph = lowered.exported_program().graph
    targets = [str(n.target) for n in graph.nodes if n.op == "call_function" and "getitem" not in str(n.target)]
    portable = [t.split(":")[0].replace("<EdgeOpOverload", "").strip(" <>:") for t in targets
                if "executorch_call_delegate" not in t and "_to_dim_order_copy" not in t]
    return {"xnnpack_partitions": sum("executorch_call_delegate" in t for t in targets),
            "layout_copies": sum("_to_dim_order_copy" in t for t in targets), "portable_ops": sorted(set(portable))}
