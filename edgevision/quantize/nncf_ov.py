"""OpenVINO INT8 with NNCF post-training quantization; the post-processing tail stays in float.

The tail is found on the OpenVINO graph itself with the same rule as quantize/graph.py: every op
after the last weighted layers (Convolution, GroupConvolution, their backprop forms, MatMul with a
constant weight) goes into NNCF's ignored scope.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from typing import Any, Optional

from edgevision.errors import BackendError
from edgevision.quantize.calibration import CalibrationSet

WEIGHTED = {"Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData", "MatMul"}
_PASS_THROUGH = {"Convert", "Reshape", "Unsqueeze", "Transpose", "FakeQuantize", "Multiply", "Subtract"}
_IO = {"Constant", "Parameter", "Result"}
MAX_REVERTED = 8  # accuracy control: at most this many quantizer groups go back to float
RANKING_SUBSET = 50  # val images used to rank the groups


def _weighted(op: Any) -> bool:
    if op.get_type_name() not in WEIGHTED:
        return False
    src = op.input_value(1).get_node()
    while src.get_type_name() in _PASS_THROUGH:
        src = src.input_value(0).get_node()
    return src.get_type_name() == "Constant"


def tail_ops(model: Any) -> list[str]:
    """Friendly names of the ops after the last weighted layers."""
    ops = model.get_ordered_ops()
    network: set[str] = set()
    stack = [op for op in ops if _weighted(op)]
    while stack:
        op = stack.pop()
        name = op.get_friendly_name()
        if name in network:
            continue
        network.add(name)
        stack.extend(v.get_node() for v in op.input_values())
    if not network:
        return []
    return [op.get_friendly_name() for op in ops if op.get_friendly_name() not in network and op.get_type_name() not in _IO]


def float_layers(model: Any) -> list[str]:
    """Weighted layers whose activation input is not fake-quantized (kept in float)."""
    return [op.get_friendly_name() for op in model.get_ordered_ops()
            if _weighted(op) and op.input_value(0).get_node().get_type_name() != "FakeQuantize"]


def quantize_openvino(model: Any, calib: CalibrationSet, log: Callable[[str], None],
                      accuracy: Optional[Any] = None) -> tuple[Any, dict[str, Any]]:
    """NNCF PTQ (or, with `accuracy`, quantize_with_accuracy_control). Returns model and facts."""
    import nncf

    nncf.set_log_level(logging.ERROR)
    preset = nncf.QuantizationPreset.MIXED
    tail = tail_ops(model)
    scope = nncf.IgnoredScope(names=tail, validate=False) if tail else None
    dataset = nncf.Dataset(calib.inputs)
    start = time.perf_counter()
    info: dict[str, Any] = {"tool": f"nncf {nncf.__version__} post-training quantization", "calibration_method": "nncf mixed",
                            "float_tail_nodes": len(tail)}
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            # MIXED: symmetric weights, asymmetric activations; on the quickstart YOLO (SiLU) it loses
            # 0.10 mAP points where the default PERFORMANCE preset loses 0.67
            plain = nncf.quantize(model, dataset, subset_size=len(calib), ignored_scope=scope, preset=preset)
            quantized = plain
            if accuracy is not None and accuracy.drop(accuracy.score_openvino(plain)) > accuracy.max_drop:
                val = nncf.Dataset(list(range(accuracy.size)))
                restorer = nncf.AdvancedAccuracyRestorerParameters(
                    max_num_iterations=MAX_REVERTED, ranking_subset_size=min(RANKING_SUBSET, accuracy.size))
                quantized = nncf.quantize_with_accuracy_control(
                    model, dataset, val, validation_fn=lambda compiled, items: (accuracy.score_compiled(compiled, list(items)), None),
                    max_drop=accuracy.max_drop, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calib), preset=preset,
                    ignored_scope=scope, advanced_accuracy_restorer_parameters=restorer)
    except Exception as e:  # NNCF raises many types; name the step
        raise BackendError(f"openvino: NNCF INT8 quantization failed: {type(e).__name__}: {str(e)[:400]}") from None
    info["quantize_seconds"] = round(time.perf_counter() - start, 2)
    fq = [op for op in quantized.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]
    info["quantized_nodes"] = sum(1 for op in quantized.get_ordered_ops() if op.get_type_name() != "FakeQuantize"
                                  and any(v.get_node().get_type_name() == "FakeQuantize" for v in op.input_values()))
    info["fake_quantize_ops"] = len(fq)
    kept = float_layers(quantized)
    already_float = set(float_layers(plain))
    info["kept_float"] = [k for k in kept if k not in already_float] if quantized is not plain else []
    if quantized is not plain:
        info["accuracy_control"] = {"tool": "nncf.quantize_with_accuracy_control"}
        log(f"accuracy control kept {len(info['kept_float'])} layer(s) in float: {', '.join(info['kept_float'][:6])}")
    return quantized, info
