"""Where quantization stops: the post-processing tail of an ONNX graph.

One rule for every task and backend: the *network* is every weighted layer (Conv, ConvTranspose,
Gemm, MatMul with a constant weight) and everything that feeds one; the *tail* is what comes after
the last weighted layers: box decoding, sigmoid/softmax of scores, the NMS, a final resize or
argmax. The tail stays in float (ignored scope for NNCF, nodes_to_exclude for ONNX Runtime, and the
TensorRT Q/DQ checker rejects a quantized tail).
"""

from __future__ import annotations

from collections import defaultdict

import onnx

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def name_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every node a unique name (quantizers address nodes by name). In place; returns model."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)
    return model


def tail_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes after the last weighted layers (post-processing), in graph order."""
    consts = {i.name for i in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    producer = {o: n for n in model.graph.node for o in n.output}
    network: set[str] = set()
    stack = [n for n in model.graph.node if _weighted(n, consts, producer)]
    while stack:  # the weighted layers and all their ancestors
        node = stack.pop()
        if node.name in network:
            continue
        network.add(node.name)
        stack.extend(producer[i] for i in node.input if i in producer)
    if not network:
        return []
    return [n.name for n in model.graph.node if n.name not in network and n.op_type != "Constant"]


def _weighted(node: onnx.NodeProto, consts: set[str], producer: dict[str, onnx.NodeProto]) -> bool:
    """A weighted layer: its weight is a constant, or a constant behind Q/DQ (quantized graphs)."""
    if node.op_type not in WEIGHTED_OPS or len(node.input) < 2:
        return False
    weight = node.input[1]
    while weight in producer and producer[weight].op_type in ("DequantizeLinear", "QuantizeLinear"):
        weight = producer[weight].input[0]
    return weight in consts


def consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in model.graph.node:
        for i in n.input:
            out[i].append(n)
    return out
