"""The rules TensorRT's explicit quantization holds a Q/DQ graph to, checked independently of the writer."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ..onnx.graph_rewrite import walk
from .int8_graph import QMAX



def check_qdq(proto: onnx.ModelProto) -> list[str]:
    """What breaks TensorRT's explicit-quantization rules in a Q/DQ graph (empty list: none): zero points
    int8 zeros; weights (stored int8, or float behind a QuantizeLinear) one positive scale per output
    channel (a scalar where there is one output channel), codes within ±127; activations one scalar."""
    problems = []
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    weight_q = {n.output[0]: n.input[0] for _, n, _ in walk(proto.graph) if n.op_type == "QuantizeLinear" and n.input[0] in inits}
    for _, node, _ in walk(proto.graph):
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        zero = inits.get(node.input[2]) if len(node.input) > 2 else None
        if zero is None or zero.dtype != np.int8 or np.any(zero != 0):
            problems.append(f"{node.name}: zero point must be an int8 initializer of zeros")
        scale = np.asarray(inits.get(node.input[1], np.zeros(0)))
        weight = inits.get(node.input[0], inits.get(weight_q.get(node.input[0], "")))
        if weight is None:
            if scale.ndim != 0:
                problems.append(f"{node.name}: activation scale must be one scalar")
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), None)
        per_tensor = axis is None and scale.ndim == 0 and any(weight.shape[i] == 1 for i in (0, 1))
        per_channel = axis is not None and scale.ndim == 1 and len(scale) == weight.shape[axis]
        if not (per_tensor or per_channel) or np.any(scale <= 0):
            problems.append(f"{node.name}: weights need one positive scale per output channel")
        if weight.dtype == np.int8 and weight.min(initial=0) < -QMAX:
            problems.append(f"{node.name}: weight code -128 breaks symmetry")
    return problems
