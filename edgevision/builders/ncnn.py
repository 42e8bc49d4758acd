"""ncnn variants: the verified ONNX converted by pnnx into ncnn's .param / .bin (fp32, or fp16 weights).

Why pnnx from the ONNX, and not onnx2ncnn or pnnx from TorchScript: onnx2ncnn is deprecated upstream
(pnnx replaces it); pnnx traced from TorchScript would convert a different graph than the one every other
backend verified (our adapters export with the dynamo exporter). pnnx's ONNX front end converts
the graph that model.onnx holds, with the same post-processing split: for detectors the graph before the
NMS (ncnn has no NonMaxSuppression), which the runner finishes on the host (backends/ncnn.py), and before a
best-class selection (ncnn has no comparison). A pnnx fault (one-axis reductions) is worked around here,
before it runs: see _sums_as_matmuls.

A graph op ncnn cannot run is refused here, naming the op, before pnnx is started.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from edgevision.backends.base import unknown_options
from edgevision.builders import BuildContext
from edgevision.errors import BackendError

# ONNX ops of our graphs that ncnn has no layer for (pnnx would write them as layers ncnn cannot load).
UNSUPPORTED = {
    "NonMaxSuppression": "ncnn has no NMS layer (a detector's graph must end before its NMS: one-stage detectors do)",
    "RoiAlign": "ncnn's ROIAlign takes one image's RoIs, not an R-CNN's batched, per-level ones",
    "TopK": "ncnn has no TopK layer (torchvision's SSD, RetinaNet and FCOS select their candidates with it)",
    "NonZero": "ncnn has no data-dependent shapes",
    "Loop": "ncnn runs no ONNX control flow",
    "If": "ncnn runs no ONNX control flow",
    "ScatterND": "ncnn has no scatter",
    "GatherND": "ncnn has no GatherND",
}


def build(onnx_path: Path, out_dir: Path, precision: str, device: str, options: Dict[str, Any],
          context: BuildContext) -> Dict[str, Any]:
    """Write model.ncnn.param / model.ncnn.bin into out_dir; return the runner's settings (blob names,
    per-image output shapes, and for detectors the NMS the runner finishes with)."""
    import ncnn
    import onnx
    import pnnx

    problem = unknown_options("ncnn", options)
    if problem:
        raise BackendError(problem)
    if precision not in ("fp32", "fp16"):
        raise BackendError(f"ncnn: precision '{precision}' is not built by this version (fp32, fp16)")
    if device != "cpu":
        raise BackendError(f"ncnn: device must be cpu, got '{device}'")
    detection = context.pre_nms is not None
    model = onnx.load(str(context.pre_nms if detection else onnx_path))
    model, argmax = _host_argmax(model)
    model, best_class = _host_best_class(model) if detection else (model, False)
    _check_ops(model)
    inputs, outputs = _tensors(model)
    _convert(pnnx.EXEC_PATH, model, inputs, out_dir, fp16=precision == "fp16")
    _check_layers(out_dir / "model.ncnn.param")
    blobs = _blob_names(out_dir / "model.ncnn.param")
    if len(blobs["in"]) != len(inputs) or len(blobs["out"]) != len(outputs):
        raise BackendError(f"ncnn: pnnx wrote {len(blobs['in'])} inputs / {len(blobs['out'])} outputs for a graph with "
                           f"{len(inputs)} / {len(outputs)}")
    return {
        "files": {"param": "model.ncnn.param", "weights": "model.ncnn.bin"},
        "device": "cpu",
        "precision": precision,
        "ncnn": ncnn.__version__,
        "pnnx": getattr(pnnx, "__version__", None),
        "inputs": [{**spec, "blob": blob} for spec, blob in zip(inputs, blobs["in"])],
        "outputs": [{**spec, "blob": blob} for spec, blob in zip(outputs, blobs["out"])],
        "nms": context.nms.to_dict() if detection and context.nms is not None else None,
        "best_class": best_class,
        "argmax": argmax,
        "host_postprocessing": (("best class per box, " if best_class else "") + "canonical NMS (numpy)" if detection
                                else ("argmax (numpy)" if argmax else None)),
    }


def _host_argmax(model: Any) -> tuple[Any, List[Dict[str, Any]]]:
    """A segmenter's in-graph argmax output (labels = ArgMax(logits) [+ Cast]) is left to the runner:
    ncnn has no ArgMax layer. Returns the graph without it and what the runner computes instead."""
    import onnx

    producer = {o: n for n in model.graph.node for o in n.output}
    outputs = [o.name for o in model.graph.output]
    host = []
    for name in outputs:
        node = producer.get(name)
        if node is not None and node.op_type == "Cast":
            node = producer.get(node.input[0])
        if node is None or node.op_type != "ArgMax" or node.input[0] not in outputs:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("keepdims", 1) or attrs.get("select_last_index", 0) or attrs.get("axis", 0) != 1:
            raise BackendError(f"ncnn: output '{name}' is an ArgMax this runner does not finish on the host ({attrs})")
        host.append({"name": name, "of": node.input[0], "dtype": "int32"})
    if not host:
        return model, []
    kept = [o for o in outputs if o not in {h["name"] for h in host}]
    pruned = onnx.utils.Extractor(model).extract_model([i.name for i in model.graph.input], kept)
    return pruned, host


def _host_best_class(model: Any) -> tuple[Any, bool]:
    """Ultralytics' NMS lets each box compete for its best class only: its graph zeroes the other classes'
    scores, Where(scores >= ReduceMax(scores), scores, 0), and pnnx has no ncnn layer for that (ncnn has no
    comparison). The runner does it on the host instead: returns the graph ending at the scores before it,
    and whether it was cut there."""
    import onnx

    producer = {o: n for n in model.graph.node for o in n.output}
    where = producer.get("scores")
    if where is None or where.op_type != "Where":
        return model, False
    compare, raw = producer.get(where.input[0]), where.input[1]
    best = producer.get(compare.input[1]) if compare is not None and compare.op_type == "GreaterOrEqual" \
        and compare.input[0] == raw else None
    if best is None or best.op_type != "ReduceMax" or best.input[0] != raw:
        raise BackendError("ncnn: the detector's 'scores' output is a Where that is not a best-class selection; "
                           "this runner cannot finish it on the host")
    pruned = onnx.utils.Extractor(model).extract_model([i.name for i in model.graph.input], ["boxes", raw])
    for node in pruned.graph.node:
        node.input[:] = ["scores" if x == raw else x for x in node.input]
        node.output[:] = ["scores" if x == raw else x for x in node.output]
    for value in pruned.graph.output:
        if value.name == raw:
            value.name = "scores"
    return pruned, True


def _check_ops(model: Any) -> None:
    found = sorted({n.op_type for n in model.graph.node} & set(UNSUPPORTED))
    if found:
        raise BackendError(f"ncnn cannot run this graph: op {found[0]} ({UNSUPPORTED[found[0]]}); "
                           "compile this model for onnxruntime or openvino instead")


def _check_layers(param: Path) -> None:
    """pnnx writes an op it has no ncnn layer for under its PyTorch name (torch.where, Tensor.index, F.xxx):
    ncnn would refuse the file at load with a bare 'layer not exists'. Name them here instead."""
    foreign = sorted({line.split()[0] for line in param.read_text().splitlines()[2:] if "." in line.split()[0]})
    if foreign:
        param.unlink()
        raise BackendError(f"ncnn cannot run this graph: pnnx found no ncnn layer for {', '.join(foreign)}")


def _tensors(model: Any) -> tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """Inputs and outputs with their per-image shapes (the batch dimension dropped: ncnn has none)."""
    def one(value: Any) -> Dict[str, Any]:
        dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
        if any(d is None for d in dims[1:]):
            raise BackendError(f"ncnn: '{value.name}' has a dynamic dimension other than the batch ({dims}); "
                               "ncnn variants need a fixed input size")
        elem = value.type.tensor_type.elem_type
        return {"name": value.name, "shape": dims[1:], "dtype": "int32" if elem == 6 else "float32"}

    return [one(v) for v in model.graph.input], [one(v) for v in model.graph.output]


def _convert(exe: str, model: Any, inputs: List[Dict[str, Any]], out_dir: Path, fp16: bool) -> None:
    """Run pnnx on a batch-1 copy of the graph (pnnx writes its by-products beside its input: a scratch folder)."""
    import onnx

    for value in model.graph.input:  # ncnn has no batch: pin it to 1
        value.type.tensor_type.shape.dim[0].dim_value = 1
    model = _sums_as_matmuls(model)
    shapes = ",".join("[1," + ",".join(map(str, i["shape"])) + "]" for i in inputs)
    with tempfile.TemporaryDirectory(prefix="pnnx-") as scratch:
        source = Path(scratch) / "model.onnx"
        onnx.save_model(model, str(source))
        command = [exe, str(source), f"inputshape={shapes}", f"fp16={int(fp16)}",
                   f"ncnnparam={out_dir / 'model.ncnn.param'}", f"ncnnbin={out_dir / 'model.ncnn.bin'}",
                   *(f"{k}={Path(scratch) / v}" for k, v in (("pnnxparam", "m.pnnx.param"), ("pnnxbin", "m.pnnx.bin"),
                                                             ("pnnxpy", "m_pnnx.py"), ("pnnxonnx", "m.pnnx.onnx"),
                                                             ("ncnnpy", "m_ncnn.py")))]
        done = subprocess.run(command, capture_output=True, text=True, cwd=scratch, stdin=subprocess.DEVNULL)
    if done.returncode != 0 or not (out_dir / "model.ncnn.param").is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise BackendError(f"ncnn: pnnx failed to convert the graph (exit {done.returncode}): {' | '.join(tail)}")


def _sums_as_matmuls(model: Any) -> Any:
    """pnnx (20261020) drops the axis of an opset-13+ reduction over one axis (the axes come as an input): the
    ncnn Reduction it writes reduces nothing (Ultralytics' DFL came out [4,16,N] instead of [4,N]; over two or
    more axes, as a MobileNetV3's squeeze-excite means, it keeps them). Each ReduceSum / ReduceMean over one
    constant axis becomes what pnnx converts faithfully: the axis moved last, a MatMul with a column of ones
    (or 1/n for a mean), and a Reshape to the reduced shape (the batch is pinned to 1 here, so every shape is
    static). Any other reduction over one axis is refused, naming it."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        axes = constants.get(node.input[1]) if node.op_type.startswith("Reduce") and len(node.input) > 1 else None
        if axes is None or axes.size != 1:
            nodes.append(node)
            continue
        rank, attrs = len(shapes.get(node.input[0], [])), {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type not in ("ReduceSum", "ReduceMean") or not rank or 0 in shapes[node.input[0]]:
            raise BackendError(f"ncnn: pnnx converts {node.op_type} '{node.name}' over one axis without its axis; "
                               "this builder rewrites only ReduceSum and ReduceMean (of a known shape)")
        axis, dims = int(axes.reshape(-1)[0]) % rank, shapes[node.input[0]]
        perm = [i for i in range(rank) if i != axis] + [axis]
        out = ([1 if i == axis else d for i, d in enumerate(dims)] if attrs.get("keepdims", 1)
               else [d for i, d in enumerate(dims) if i != axis])
        column = np.full((dims[axis], 1), 1.0 if node.op_type == "ReduceSum" else 1.0 / dims[axis], np.float32)
        tag = node.output[0]
        model.graph.initializer.extend([numpy_helper.from_array(column, f"{tag}/column"),
                                        numpy_helper.from_array(np.array(out, np.int64), f"{tag}/shape")])
        nodes += [helper.make_node("Transpose", [node.input[0]], [f"{tag}/moved"], perm=perm),
                  helper.make_node("MatMul", [f"{tag}/moved", f"{tag}/column"], [f"{tag}/reduced"]),
                  helper.make_node("Reshape", [f"{tag}/reduced", f"{tag}/shape"], [tag])]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def _blob_names(param: Path) -> Dict[str, List[str]]:
    """ncnn's input and output blob names, in graph order (pnnx names them in0.., out0..)."""
    blobs = set()
    for line in param.read_text().splitlines()[2:]:
        parts = line.split()
        if len(parts) > 4:
            n_in, n_out = int(parts[2]), int(parts[3])
            blobs.update(parts[4 + n_in: 4 + n_in + n_out])
    order = lambda prefix: sorted((b for b in blobs if b.startswith(prefix) and b[len(prefix):].isdigit()),  # noqa: E731
                                  key=lambda b: int(b[len(prefix):]))
    return {"in": order("in"), "out": order("out")}
