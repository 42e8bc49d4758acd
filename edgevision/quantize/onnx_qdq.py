"""ONNX Q/DQ quantization (onnxruntime.quantization) for ONNX Runtime and TensorRT, FP16 ONNX for
TensorRT, the TensorRT Q/DQ rule checker, and accuracy control by keeping layers in float.

Profiles:
- onnxruntime: QDQ, per-channel symmetric int8 weights, asymmetric uint8 activations (the u8s8
  path ONNX Runtime runs fastest on x86), every supported op type.
- tensorrt: QDQ, per-channel symmetric int8 weights, symmetric int8 activations (zero zero-points),
  Q/DQ only in front of weighted layers; what TensorRT 10.x/11.x builds in strongly typed mode.
Both leave the post-processing tail (decoding, NMS, final resize/argmax; quantize/graph.py) in float.
"""

from __future__ import annotations

import io
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from edgevision.records import INPUT_NAME
from edgevision.errors import BackendError
from edgevision.quantize.calibration import CalibrationSet, cache_path, require_calibration
from edgevision.quantize.graph import WEIGHTED_OPS, consumers, name_nodes, tail_nodes

if TYPE_CHECKING:
    from edgevision.builders import BuildContext

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
PROFILES = ("onnxruntime", "tensorrt")
# ONNX Runtime: every op type, conv outputs quantized too (measured in benchmarks/int8_ort.py: without
# output Q/DQ a third of the convs stayed float behind dequantized weights and INT8 ran 1.6x slower than
# FP32 on SSDlite; with it, 1.3x). TensorRT: Q/DQ only in front of weighted layers (its rules).
PROFILE_RECIPE = {"onnxruntime": {"weighted_only": False, "output_quantization": True},
                  "tensorrt": {"weighted_only": True, "output_quantization": False}}


def quantize_qdq(model: onnx.ModelProto, calib: CalibrationSet, profile: str, *, exclude: Sequence[str] = (),
                 cache: bool = True, weighted_only: Optional[bool] = None,
                 output_quantization: Optional[bool] = None) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Calibrate (or reuse cached ranges) and insert Q/DQ; returns the model and what was done.
    weighted_only: Q/DQ only around weighted layers; output_quantization: Q/DQ after weighted
    layers too, so ONNX Runtime fuses DQ -> Conv -> Q into QLinearConv (the tail still reads float
    tensors). None: the profile's choice (PROFILE_RECIPE)."""
    from onnxruntime.quantization import CalibrationMethod, QuantType

    if profile not in PROFILES:
        raise ValueError(profile)
    model = name_nodes(onnx.ModelProto.FromString(model.SerializeToString()))
    tail = tail_nodes(model)
    trt = profile == "tensorrt"
    weighted_only = PROFILE_RECIPE[profile]["weighted_only"] if weighted_only is None else weighted_only
    output_quantization = PROFILE_RECIPE[profile]["output_quantization"] if output_quantization is None else output_quantization
    options: dict[str, Any] = {"WeightSymmetric": True, "ActivationSymmetric": trt, "CalibPercentile": 99.999,
                               "QuantizeBias": not trt,  # TensorRT keeps biases in float
                               # a layer's output is quantized only where its consumer is (never into the tail)
                               "OpTypesToExcludeOutputQuantization": [] if output_quantization else list(WEIGHTED_OPS)}
    stats = cache_path("onnx", _sha(model.SerializeToString()), calib.digest, calib.method, profile, enabled=cache)
    hit = stats is not None and stats.is_file()
    start = time.perf_counter()
    out = _quantize_static(model, calib, profile, op_types_to_quantize=list(WEIGHTED_OPS) if weighted_only else None,
                           per_channel=True, activation_type=QuantType.QInt8 if trt else QuantType.QUInt8,
                           weight_type=QuantType.QInt8, nodes_to_exclude=[*tail, *exclude],
                           calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                                             "percentile": CalibrationMethod.Percentile}[calib.method],
                           extra_options=options, calibration_cache_path=str(stats) if stats is not None else None)
    out = name_nodes(_float_into_tail(out, tail) if output_quantization else out)
    return out, {
        "tool": "onnxruntime.quantization.quantize_static (QDQ)",
        "profile": profile,
        "calibration_method": calib.method,
        "calibration_cached": hit,
        "quantize_seconds": round(time.perf_counter() - start, 2),
        "quantized_nodes": quantized_nodes(out),
        "float_tail_nodes": len(tail),
        "kept_float": list(exclude),
    }


def _quantize_static(model: onnx.ModelProto, calib: CalibrationSet, profile: str, **options: Any) -> onnx.ModelProto:
    """onnxruntime.quantization.quantize_static (QDQ) on the calibration images, quietly (it logs
    every node at INFO on the root logger and prints progress)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(calib.inputs)

        def get_next(self) -> Optional[dict[str, np.ndarray]]:
            x = next(self._it, None)
            return None if x is None else {INPUT_NAME: x}

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        onnx.save_model(model, str(src))
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            with redirect_stdout(io.StringIO()):
                quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, **options)
        except Exception as e:  # onnxruntime.quantization raises plain exceptions
            raise BackendError(f"{profile}: INT8 quantization (onnxruntime.quantization) failed: {e}") from None
        finally:
            root.setLevel(level)
        return onnx.load(str(dst))


def _float_into_tail(model: onnx.ModelProto, tail: Sequence[str]) -> onnx.ModelProto:
    """Undo the Q -> DQ pairs whose values the tail (or a graph output) reads, so post-processing
    sees the float tensor; a pair read only there is removed and the tensor keeps its name. In
    place; returns model."""
    producer = {o: n for n in model.graph.node for o in n.output}
    readers = consumers(model)
    outputs = {o.name for o in model.graph.output}
    tail_set = set(tail)
    drop = []
    for dq in list(model.graph.node):
        q = producer.get(dq.input[0]) if dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear":
            continue
        name, source = dq.output[0], q.input[0]
        tail_readers = [n for n in readers[name] if n.name in tail_set]
        if not tail_readers and name not in outputs:
            continue
        if len(tail_readers) == len(readers[name]) and len(readers[q.output[0]]) == 1 and source in producer \
                and len(readers[source]) == 1:  # read only by the tail: the pair goes, the name stays
            origin = producer[source]
            origin.output[list(origin.output).index(source)] = name
            drop += [q, dq]
            continue
        for n in tail_readers:
            n.input[list(n.input).index(name)] = source
    for n in drop:
        model.graph.node.remove(n)
    return model


def quantize_onnx(model: onnx.ModelProto, profile: str, context: "BuildContext",
                  finish: Optional[Callable[[onnx.ModelProto], onnx.ModelProto]] = None) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """What a backend's int8 build calls: calibrate + Q/DQ (the context's calibration set and cache
    switch), with accuracy control when the context has an accuracy probe. `finish` turns a
    candidate into the graph that is scored (TensorRT: NMS appended and lowered)."""
    calib = require_calibration(context.calibration, profile)
    probe = context.accuracy
    if probe is None:
        model, info = quantize_qdq(model, calib, profile, cache=context.cache)
    else:
        float_model = model
        score = (lambda m: probe.score_onnx(finish(m))) if finish else probe.score_onnx
        model, info = control_accuracy(
            float_model, calib, lambda exclude: quantize_qdq(float_model, calib, profile, exclude=exclude, cache=context.cache),
            score, probe, context.log)
    if profile == "tensorrt":
        problems = check_tensorrt_qdq(model)
        if problems:
            raise BackendError(f"tensorrt: the Q/DQ graph breaks TensorRT's rules: {'; '.join(problems[:5])}")
    return model, {**info, "calibration": calib.describe()}


def quantized_nodes(model: onnx.ModelProto) -> int:
    """Nodes (other than Q/DQ) that read at least one dequantized tensor."""
    dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return sum(1 for n in model.graph.node if n.op_type not in QDQ_OPS and any(i in dq for i in n.input))


def to_fp16(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """An ONNX whose network tensors are fp16 (TensorRT strongly typed FP16); the tail and the
    graph inputs/outputs stay fp32."""
    import onnxslim
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = name_nodes(onnx.ModelProto.FromString(model.SerializeToString()))
    tail = tail_nodes(model)
    half = name_nodes(_drop_duplicate_casts(convert_float_to_float16(model, keep_io_types=True, node_block_list=tail)))
    with redirect_stdout(io.StringIO()):
        half = onnxslim.slim(half)  # topological order and merged casts
    count = sum(1 for n in half.graph.node for v in n.output if v in _fp16_values(half))
    return half, {"tool": "onnxruntime.transformers.float16", "fp16_nodes": count, "float_tail_nodes": len(tail)}


def _drop_duplicate_casts(model: onnx.ModelProto) -> onnx.ModelProto:
    """The converter can insert the same Cast twice (one value feeding two blocked nodes): keep one."""
    seen: dict[str, bytes] = {}
    keep = []
    for node in model.graph.node:
        key = node.SerializeToString(deterministic=True) if node.op_type == "Cast" else b""
        if node.op_type == "Cast" and node.output[0] in seen:
            other = onnx.NodeProto.FromString(seen[node.output[0]])
            if other.input == node.input and other.attribute == node.attribute:
                continue
        for o in node.output:
            seen[o] = key or seen.get(o, b"")
        keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return model


def _fp16_values(model: onnx.ModelProto) -> set[str]:
    inferred = onnx.shape_inference.infer_shapes(model)
    return {v.name for v in inferred.graph.value_info if v.type.tensor_type.elem_type == TensorProto.FLOAT16}


def check_tensorrt_qdq(model: onnx.ModelProto) -> list[str]:
    """TensorRT's rules for explicit (Q/DQ) INT8 networks; one message per violation."""
    problems: list[str] = []
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute:
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    tail = set(tail_nodes(model))
    producer = {o: n for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        if n.op_type not in QDQ_OPS:
            continue
        where = f"{n.op_type} '{n.name}'"
        if n.name in tail:
            problems.append(f"{where} is in the post-processing tail (decode/NMS must stay in float)")
        scale = consts.get(n.input[1]) if len(n.input) > 1 else None
        if scale is None:
            problems.append(f"{where}: scale '{n.input[1] if len(n.input) > 1 else ''}' must be a constant")
            continue
        if scale.dtype not in (np.float32, np.float16) or not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            problems.append(f"{where}: scale must be finite, positive float32/float16")
        zp = consts.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if len(n.input) > 2 and n.input[2] and zp is None:
            problems.append(f"{where}: zero point '{n.input[2]}' must be a constant")
        elif zp is not None:
            if zp.dtype != np.int8:
                problems.append(f"{where}: zero point is {zp.dtype}, TensorRT needs int8 (symmetric, signed)")
            if np.any(zp != 0):
                problems.append(f"{where}: zero point {zp.ravel()[:4].tolist()} is not 0: TensorRT needs symmetric quantization")
        if scale.size > 1:
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            data = n.input[0]
            source = producer.get(data)  # a DequantizeLinear of a QuantizeLinear of a constant is a weight too
            weight_like = data in consts or (source is not None and source.op_type == "QuantizeLinear" and source.input[0] in consts)
            if not weight_like:
                problems.append(f"{where}: per-channel scales on an activation; TensorRT quantizes activations per tensor")
            if opset < 13:
                problems.append(f"{where}: per-channel Q/DQ needs opset >= 13 (axis {axis})")
    return problems


def sensitivity(float_model: onnx.ModelProto, quant_model: onnx.ModelProto, inputs: Sequence[np.ndarray]) -> list[tuple[str, float]]:
    """Weighted layers ranked by the quantization error they add (relative MSE at their output minus
    the largest of the weighted layers feeding them), most sensitive first."""
    import onnxruntime as ort

    float_model = name_nodes(onnx.ModelProto.FromString(float_model.SerializeToString()))
    consts = {i.name for i in float_model.graph.initializer}
    layers = [n for n in float_model.graph.node if n.op_type in WEIGHTED_OPS and len(n.input) > 1 and n.input[1] in consts]
    quant_out = _quantized_outputs(quant_model)  # node name -> the (dequantized) tensor it writes
    layers = [n for n in layers if n.name in quant_out]
    tensors = [n.output[0] for n in layers]
    outs = {}
    for key, m, names in (("float", float_model, tensors), ("quant", quant_model, [quant_out[n.name] for n in layers])):
        m = onnx.ModelProto.FromString(m.SerializeToString())
        del m.graph.output[:]
        m.graph.output.extend(onnx.helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in names)
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        outs[key] = [sess.run(names, {INPUT_NAME: x}) for x in inputs]
    err = {}
    for j, t in enumerate(tensors):
        num = sum(float(np.sum((q[j] - f[j]) ** 2)) for q, f in zip(outs["quant"], outs["float"]))
        den = sum(float(np.sum(f[j] ** 2)) for f in outs["float"]) or 1.0
        err[t] = num / den
    producer = {o: n for n in float_model.graph.node for o in n.output}
    by_output = {n.output[0]: n for n in layers}
    ranked = []
    for n in layers:
        upstream, stack, seen = [], list(n.input[:1]), set()
        while stack:  # nearest weighted layers above n
            t = stack.pop()
            if t in seen or t not in producer:
                continue
            seen.add(t)
            if t in by_output:
                upstream.append(err[t])
            else:
                stack.extend(producer[t].input)
        ranked.append((n.name, err[n.output[0]] - max(upstream, default=0.0)))
    return sorted(ranked, key=lambda kv: -kv[1])


def _quantized_outputs(model: onnx.ModelProto) -> dict[str, str]:
    """For each node of a Q/DQ graph, the float tensor its consumers see: its output, or the
    output of the Q -> DQ pair that follows it (output quantization renames the tensor)."""
    readers = consumers(model)
    out = {}
    for node in model.graph.node:
        name = node.output[0] if node.output else ""
        q = next((r for r in readers[name] if r.op_type == "QuantizeLinear"), None)
        dq = next((r for r in readers[q.output[0]] if r.op_type == "DequantizeLinear"), None) if q is not None else None
        out[node.name] = dq.output[0] if dq is not None else name
    return out


def control_accuracy(float_model: onnx.ModelProto, calib: CalibrationSet,
                     quantize: Callable[[Sequence[str]], tuple[onnx.ModelProto, dict[str, Any]]],
                     score: Callable[[onnx.ModelProto], float], probe: Any,
                     log: Callable[[str], None]) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Quantize (quantize: layers kept in float -> model, info); while the metric drop (score:
    model -> metric) exceeds probe.max_drop below probe.baseline, keep the 1, 2, 4, ... most
    sensitive weighted layers in float. Returns the best model found and what was kept."""
    baseline, max_drop = probe.baseline, probe.max_drop
    model, info = quantize(())
    value = score(model)
    trials = [{"kept_float": 0, "metric": round(value, 5)}]
    if baseline - value <= max_drop:
        return model, {**info, "accuracy_control": {"trials": trials, "recovered": True}}
    ranked = [name for name, _ in sensitivity(float_model, model, calib.inputs[:8])]
    best = (value, model, info)
    k = 1
    while k <= max(1, len(ranked) // 2):
        candidate, cinfo = quantize(ranked[:k])
        value = score(candidate)
        trials.append({"kept_float": k, "metric": round(value, 5)})
        log(f"accuracy control: {k} layer(s) in float -> metric {value:.4f} (baseline {baseline:.4f})")
        if value > best[0]:
            best = (value, candidate, cinfo)
        if baseline - value <= max_drop:
            break
        k *= 2
    value, model, info = best
    return model, {**info, "accuracy_control": {"trials": trials, "recovered": baseline - value <= max_drop}}


def _sha(blob: bytes) -> str:
    import hashlib

    return hashlib.sha256(blob).hexdigest()


def tail_consumers_of_qdq(model: onnx.ModelProto) -> list[str]:
    """Tail nodes that read a dequantized tensor's values (should be empty: the tail stays in
    float); Shape/Size read only the shape and do not count."""
    tail = {n.name for n in model.graph.node if n.op_type not in ("Shape", "Size")} & set(tail_nodes(model))
    cons = consumers(model)
    dq = [o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output]
    return sorted({c.name for t in dq for c in cons[t] if c.name in tail})
