"""Float fallback per channel: the few channels that carry most of a layer's INT8 noise stay in float.

Whole-layer fallback is coarse on a narrow network: in FSRCNN ×2 each layer's activation rounding noise
is 8–16 % of the total, but within a layer one channel carries 37–89 % of it (its downstream gain is
large). Keeping such a channel in float costs 1/12 of a mapping layer's MACs instead of all of them.

The rewrite is exact in float, for a private chain ``conv P → Relu/PRelu → conv N`` (the chains
activation equalization uses, ``int8_equalization.equalization_chains``): the channels are permuted so that the float
ones come last (P's output channels, bias and slopes; N's input channels), a ``Split`` cuts the tensor
in two, and N becomes two convolutions, one per part, added. The convolution reading the float part is
a layer of its own (``float_keys``): the Q/DQ pass leaves it float and the INT8 share of MACs counts it
as float. In TensorRT the Split is a channel slice, the halves are ordinary convolutions and the Add
fuses into one of them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper
from tqdm import tqdm

from .int8_graph import QMAX, Layer, layers, place_nodes
from .int8_equalization import equalization_chains
from ..onnx.graph_rewrite import walk
from .int8_centre import centre, centred_keys
from ..onnx.onnx_export import cpu_session

FLOAT = ".float_channels"
INT8 = ".int8_channels"


def chain_tensors(proto: onnx.ModelProto) -> list[str]:
    """Activations of the main graph's private conv → activation → conv chains (splittable)."""
    main = {o for n in proto.graph.node for o in n.output}
    return [tensor for _, tensor, _ in equalization_chains(proto) if tensor in main]


def split_channels(proto: onnx.ModelProto, float_channels: dict[str, list[int]]) -> tuple[onnx.ModelProto, set[str]]:
    """Copy of ``proto`` with the channels ``float_channels[tensor]`` of each chain tensor read in float,
    and the layer keys (``weight@activation``) of the convolutions that read them."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    weights = {w.name: numpy_helper.to_array(w) for w in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}  # main graph only: chains in If branches stay whole
    chains = {tensor: (conv, nxt) for conv, tensor, nxt in equalization_chains(out) if tensor in producer}
    split = {t: sorted(set(c)) for t, c in float_channels.items() if c}
    for tensor, floats in split.items():  # permute first: a conv can be one chain's N and the next one's P
        if tensor not in chains:
            raise ValueError(f"{tensor} is not a private conv → activation → conv chain of the main graph")
        conv, nxt = chains[tensor]
        count = weights[conv.input[1]].shape[0]
        order = [c for c in range(count) if c not in floats] + floats
        for name in conv.input[1:]:
            if name:
                weights[name] = weights[name][order]
        slope = producer[tensor].input[1:]
        if slope and weights[slope[0]].size == count:
            axis = weights[slope[0]].shape.index(count)
            weights[slope[0]] = np.take(weights[slope[0]], order, axis=axis)
        axis = 1 if nxt.op_type == "Conv" else 0  # Conv weights are out×in×k×k, ConvTranspose in×out×k×k
        weights[nxt.input[1]] = np.take(weights[nxt.input[1]], order, axis=axis)
    replaced: dict[str, list[onnx.NodeProto]] = {}  # by the output of the node they replace
    float_keys: set[str] = set()
    for tensor, floats in split.items():
        _, nxt = chains[tensor]
        count = weights[nxt.input[1]].shape[1 if nxt.op_type == "Conv" else 0]
        parts = {INT8: count - len(floats), FLOAT: len(floats)}
        sizes = f"{tensor}.split_sizes"
        weights[sizes] = np.array(list(parts.values()), np.int64)
        nodes = [helper.make_node("Split", [tensor, sizes], [f"{tensor}{s}" for s in parts], name=f"{tensor}.split", axis=1)]
        start = 0
        for suffix, size in parts.items():
            name = f"{nxt.input[1]}{suffix}"
            weights[name] = np.take(weights[nxt.input[1]], range(start, start + size), axis=1 if nxt.op_type == "Conv" else 0)
            start += size
            inputs = [f"{tensor}{suffix}", name] + (list(nxt.input[2:]) if suffix == INT8 else [])
            nodes.append(helper.make_node(nxt.op_type, inputs, [f"{nxt.output[0]}{suffix}"], name=f"{nxt.name}{suffix}"))
            nodes[-1].attribute.extend(nxt.attribute)
        nodes.append(helper.make_node("Add", [f"{nxt.output[0]}{INT8}", f"{nxt.output[0]}{FLOAT}"], [nxt.output[0]],
                                      name=f"{nxt.name}.sum"))
        replaced[nxt.output[0]] = nodes
        float_keys.add(f"{nxt.input[1]}{FLOAT}@{tensor}{FLOAT}")
    nodes = [new for node in graph.node for new in replaced.get(node.output[0], [node])]
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for _, n, _ in walk(graph) for i in n.input}
    del graph.initializer[:]
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in weights.items() if name in used)
    return out, float_keys


def channel_noise(full: onnx.ModelProto, amax: dict[str, float], layer: Layer, batch: np.ndarray, whole: bool = False) -> np.ndarray:
    """Per input channel of ``layer`` (a layer of ``full``, the graph whose layers read their centred
    inputs): the mean squared output error, against ``full``'s float output, of rounding that one
    channel of the layer's input to its int8 grid (``amax``), everything else in float; ``whole``: of
    rounding all its channels (one number)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(full)
    graph = probe.graph
    x, name = layer.activation, f"{layer.activation}.probe"
    scale = np.float32(max(amax[x], 1e-12) / QMAX)
    graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), f"{name}.scale"),
                              numpy_helper.from_array(np.array(0, np.int8), f"{name}.zero")])
    graph.input.append(helper.make_tensor_value_info(f"{name}.mask", onnx.TensorProto.FLOAT, [1, None, 1, 1]))
    nodes = [helper.make_node("QuantizeLinear", [x, f"{name}.scale", f"{name}.zero"], [f"{name}.int8"]),
             helper.make_node("DequantizeLinear", [f"{name}.int8", f"{name}.scale", f"{name}.zero"], [f"{name}.dq"]),
             helper.make_node("Sub", [f"{name}.dq", x], [f"{name}.error"]),
             helper.make_node("Mul", [f"{name}.error", f"{name}.mask"], [f"{name}.masked"]),
             helper.make_node("Add", [x, f"{name}.masked"], [name])]
    for _, node, _ in walk(graph):
        if node.input[0] == x and len(node.input) > 1 and node.input[1] == layer.weight:
            node.input[0] = name
    produced = {o for _, n, _ in walk(graph) for o in n.output}
    place_nodes(graph, [] if x in produced else nodes, {x: nodes} if x in produced else {})
    session = cpu_session(probe)
    inputs = [i.name for i in session.get_inputs()]
    reference = cpu_session(full).run(None, {inputs[0]: batch})[0]
    count = layer_channels(full, layer)
    masks = [np.ones((1, count, 1, 1), np.float32)] if whole else np.eye(count, dtype=np.float32).reshape(count, 1, count, 1, 1)
    return np.array([np.mean((session.run(None, {inputs[0]: batch, inputs[1]: mask})[0] - reference) ** 2) for mask in masks])


def layer_channels(proto: onnx.ModelProto, layer: Layer) -> int:
    """Input channels of a layer (from its weight: out×in×k×k for Conv, in×out×k×k for ConvTranspose)."""
    dims = next(w.dims for w in proto.graph.initializer if w.name == layer.weight)
    return dims[1] if layer.op == "Conv" else dims[0]


@dataclass(frozen=True)
class Unit:
    """What can go to float: one channel of a chain tensor (``channel`` ≥ 0) or a whole layer (−1)."""

    key: str  # the layer reading it, in the uncentred graph
    tensor: str
    channel: int
    noise: float  # mean squared output error its int8 rounding alone causes
    macs: float


def noise_ranking(variant, batch: np.ndarray, progress: bool = True) -> list[Unit]:
    """The units of ``variant`` (an ``int8_search.Variant``), most output noise per MAC first: the
    channels of its main-graph chains, and each other on-path layer as a whole."""
    full = centre(variant.graph, variant.centres)
    renamed = centred_keys(variant.graph, variant.centres)
    probes = {s.key: s for s in layers(full)}
    chains = set(chain_tensors(variant.graph))
    units = []
    sites = [s for s in layers(variant.graph) if s.on_path]
    for site in tqdm(sites, desc="INT8 channel noise", unit="layer", disable=None if progress else True, leave=False):
        split = site.activation in chains
        noise = channel_noise(full, variant.amax, probes[renamed.get(site.key, site.key)], batch, whole=not split)
        macs = variant.macs[site.key]
        if split:
            units += [Unit(site.key, site.activation, c, float(n), macs / len(noise)) for c, n in enumerate(noise)]
        else:
            units.append(Unit(site.key, site.activation, -1, float(noise[0]), macs))
    return sorted(units, key=lambda u: u.noise / max(u.macs, 1), reverse=True)


def choose(units: list[Unit], macs: float) -> tuple[dict[str, list[int]], set[str]]:
    """Units of a ranking that fit in ``macs`` and remove the most noise: the leading ones, or one whole
    layer first and then the leading ones (a whole layer can carry much noise at a low noise per MAC:
    FSRCNN ×2's image input is 16 % of its noise and 11 % of its MACs). Returns channels per tensor,
    and whole-layer keys."""
    def fill(first: list[Unit]) -> list[Unit]:
        chosen, used = list(first), sum(u.macs for u in first)
        for unit in units:
            if unit not in first and used + unit.macs <= macs:
                chosen.append(unit)
                used += unit.macs
        return chosen

    options = [fill([])] + [fill([u]) for u in units if u.channel < 0 and u.macs <= macs]
    best = max(options, key=lambda chosen: sum(u.noise for u in chosen))
    channels: dict[str, list[int]] = {}
    for unit in best:
        if unit.channel >= 0:
            channels.setdefault(unit.tensor, []).append(unit.channel)
    return channels, {u.key for u in best if u.channel < 0}
