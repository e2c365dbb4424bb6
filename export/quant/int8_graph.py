"""The convolutions an INT8 graph quantizes, and graph edits shared by the INT8 passes: its layers (call
sites, also inside ``If`` branches), a flattened copy for calibration, node placement, MACs per layer."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from ..onnx.graph_rewrite import subgraphs, walk

WEIGHT_AXIS = {"Conv": 0, "ConvTranspose": 1}
QMAX = 127
# The float ConvTranspose that ``int8_centre`` adds for a centred ConvTranspose: not a layer to quantize.
CENTRING_KERNEL = ".centring_kernel"


@dataclass(frozen=True)
class Layer:
    """One convolution call site: ``key`` = weight@activation (stable across copies in If branches)."""

    key: str
    op: str
    activation: str
    weight: str
    output: str
    on_path: bool  # computed for the images calibration runs (main graph and the then-branches)


def is_layer(node: onnx.NodeProto) -> bool:
    """A convolution of the model (not the float correction ``int8_centre`` adds)."""
    return node.op_type in WEIGHT_AXIS and not node.input[1].endswith(CENTRING_KERNEL)


def layers(proto: onnx.ModelProto) -> list[Layer]:
    """All convolution call sites, in graph order, each once."""
    found: dict[str, Layer] = {}
    for _, node, on_path in walk(proto.graph):
        if is_layer(node):
            key = f"{node.input[1]}@{node.input[0]}"
            if key not in found or (on_path and not found[key].on_path):
                found[key] = Layer(key, node.op_type, node.input[0], node.input[1], node.output[0], on_path)
    return list(found.values())


def flatten(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy without ``If``: every branch is computed and the then-branch feeds the outputs.

    Calibration needs the tensors inside branches, which ONNX Runtime cannot return from a subgraph.
    """
    flat = onnx.ModelProto()
    flat.CopyFrom(proto)

    def inline(graph: onnx.GraphProto, prefix: str = "") -> list[onnx.NodeProto]:
        nodes = []
        for node in graph.node:
            if node.op_type != "If":
                nodes.append(onnx.NodeProto())
                nodes[-1].CopyFrom(node)
                nodes[-1].name = prefix + node.name  # branches reuse node names
                continue
            branches = dict(subgraphs(node))
            for branch, sub in branches.items():
                flat.graph.initializer.extend(sub.initializer)
                nodes.extend(inline(sub, f"{prefix}{node.name}/{branch}/"))
            then_outputs = branches["then_branch"].output
            nodes.extend(helper.make_node("Identity", [o.name], [out]) for o, out in zip(then_outputs, node.output, strict=True))
        return nodes

    nodes = inline(flat.graph)
    del flat.graph.node[:]
    flat.graph.node.extend(nodes)
    return flat


def place_nodes(graph: onnx.GraphProto, head: list[onnx.NodeProto], inserts: dict[str, list[onnx.NodeProto]]) -> None:
    """Insert new nodes in topological order: ``head`` first in the main graph, ``inserts[t]`` right after
    the node producing tensor ``t`` (in whichever graph or ``If`` branch that node is)."""
    # innermost graphs first: re-adding a graph's nodes copies them, subgraphs included
    for g in reversed([graph] + [sub for _, n, _ in walk(graph) for _, sub in subgraphs(n)]):
        nodes = [*(head if g is graph else [])]
        for node in g.node:
            nodes.append(node)
            nodes.extend(q for o in node.output for q in inserts.get(o, []))
        del g.node[:]
        g.node.extend(nodes)


def layer_macs(site: Layer, weight: list[int], x: tuple[int, ...], y: tuple[int, ...]) -> int:
    """Multiply-accumulates per image: every output (Conv) or input (ConvTranspose) pixel × kernel."""
    pixels = y[2] * y[3] if site.op == "Conv" else x[2] * x[3]
    return int(pixels * np.prod(weight))
