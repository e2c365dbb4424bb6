"""Multiply-accumulates of an exported ONNX graph, from ONNX shape inference (no PyTorch).

The graph can compute less than the architecture it came from (``export.onnx.graph_rewrite`` merges LESRCNN's
two upsampler passes into one), so ``to_onnx`` records the graph's own count in the artifact's metadata
(``macs_per_output_pixel``; precision variants and TensorRT sidecars inherit it) and ``bench`` computes an
artifact's achieved GFLOP/s from it.
"""
from __future__ import annotations

import numpy as np
import onnx

PROBE = 24  # LR side of the counting probe: every layer is 'same'-padded, MACs grow with the pixel count


def onnx_macs_per_output_pixel(proto: onnx.ModelProto, scale: int) -> float:
    """MACs per output pixel of an exported graph (after its rewrites; Q/DQ and FP16 change nothing), from
    ONNX shape inference at one probe size. An ``If`` counts its then-branch
    (one image takes one gate branch; the PyTorch count takes one too)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    for dim, value in zip(probe.graph.input[0].type.tensor_type.shape.dim[2:], (PROBE, PROBE)):
        dim.dim_value = value
    probe.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    graphs = [probe.graph]
    for graph in graphs:  # the exporter's symbolic value_info would survive inference: infer afresh
        del graph.value_info[:]
        graphs += [a.g for n in graph.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH]
    probe = onnx.shape_inference.infer_shapes(probe, data_prop=True, strict_mode=True)

    def dims(graph: onnx.GraphProto) -> dict[str, list[int]]:
        typed = [*graph.value_info, *graph.input, *graph.output]
        found = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in typed}
        found.update({w.name: list(w.dims) for w in graph.initializer})
        return found

    def graph_macs(graph: onnx.GraphProto, shapes: dict[str, list[int]]) -> int:
        shapes = {**shapes, **dims(graph)}
        total = 0
        for node in graph.node:
            if node.op_type in ("Conv", "ConvTranspose"):  # weight[1:]: Cin/g (Conv) or Cout/g (ConvTranspose), k, k
                # the probe is one image; a per-image selection (DSRNet's gate) leaves its batch size open
                pixels = [1, *shapes[node.output[0] if node.op_type == "Conv" else node.input[0]][1:]]
                if not all(pixels):
                    raise ValueError(f"shape inference left {node.name}'s shape unknown: {pixels}")
                total += int(np.prod(pixels)) * int(np.prod(shapes[node.input[1]][1:]))
            total += sum(graph_macs(a.g, shapes) for a in node.attribute if a.name == "then_branch")
        return total

    return graph_macs(probe.graph, {}) / (PROBE * scale) ** 2
