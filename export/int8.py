"""FP32 ONNX → INT8 Q/DQ ONNX that TensorRT compiles (explicit quantization).

Placement follows TensorRT's rules: a QuantizeLinear/DequantizeLinear pair on each convolution's
activation input (one pair per tensor, shared by all its quantized consumers), a DequantizeLinear on int8
weights, and residual additions after an INT8 convolution reading the quantized copy of their other
input (so TensorRT can fuse conv + add). Activations are symmetric int8 (zero point 0, one scale per
tensor), weights symmetric int8 per output channel (axis 0 for Conv, 1 for ConvTranspose), biases stay
float (TensorRT's DequantizeLinear takes no int32 bias). Convolutions inside ``If`` branches are
quantized too.

Why not ONNX Runtime's ``quantize_static`` (or ModelOpt): the search (``int8_search``) sets each layer's
precision, each tensor's range and each weight's codes and re-measures, hundreds of times per export;
both tools calibrate and write the graph in one call. The graph edit itself is a few lines; the tools'
results are compared in ``benchmarks/int8_compare.py`` (README).

Also here: activation ranges from |x| histograms on calibration crops (``minmax``, ``percentile``,
``mse``), activation equalization, and GPTQ weight rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from scipy.sparse import csr_array
from scipy.sparse.csgraph import connected_components

from .graph_rewrite import subgraphs, walk
from .onnx_export import cpu_session

WEIGHT_AXIS = {"Conv": 0, "ConvTranspose": 1}
QMAX = 127
BINS = 2048
METHODS = ("minmax", "percentile", "mse")
PERCENTILE = 99.99
# Equalization scales a channel up by at most this: a channel the calibration photos barely light up
# would otherwise be amplified by its full peak ratio, and clip on an image that does light it up
# (LESRCNN ×3 with uncapped α = 1: Set5 "bird" lost 1.7 dB, its channels reaching 2.5× the range).
MAX_EQUALIZATION = 4.0
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


def tensor_runs(proto: onnx.ModelProto, names: list[str], batch: np.ndarray, chunk: int = 8) -> Iterator[dict[str, np.ndarray]]:
    """The values of ``names`` (float tensors of the flattened graph), ``chunk`` images at a time."""
    probe = flatten(proto)
    existing = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names if n not in existing)
    session = cpu_session(probe)
    input_name = session.get_inputs()[0].name
    for start in range(0, len(batch), chunk):
        yield dict(zip(names, session.run(names, {input_name: batch[start : start + chunk]})))


def activation_histograms(proto: onnx.ModelProto, batch: np.ndarray, histograms: bool = True) -> dict[str, dict]:
    """Per conv input tensor: peak |x| and a BINS-bin histogram of |x| over [0, peak] (``histograms=False``:
    None, which saves a second pass over ``batch``: the "minmax" range needs the peak only); MACs per image."""
    sites = layers(proto)
    names = sorted({s.activation for s in sites} | {s.output for s in sites})
    peaks = dict.fromkeys(names, 0.0)
    shapes: dict[str, tuple[int, ...]] = {}
    for values in tensor_runs(proto, names, batch):
        for name, value in values.items():
            peaks[name] = max(peaks[name], float(np.abs(value).max(initial=0.0)))
            shapes[name] = value.shape
    counts = {s.activation: np.zeros(BINS, np.int64) for s in sites}
    for values in tensor_runs(proto, list(counts), batch) if histograms else ():
        for name, value in values.items():
            counts[name] += np.histogram(np.abs(value), BINS, (0.0, max(peaks[name], 1e-12)))[0]
    weights = {w.name: w.dims for w in proto.graph.initializer}
    stats = {name: {"peak": peaks[name], "histogram": counts[name].tolist() if histograms else None} for name in counts}
    stats["macs"] = {s.key: _macs(s, weights[s.weight], shapes[s.activation], shapes[s.output]) for s in sites}
    return stats


def _macs(site: Layer, weight: list[int], x: tuple[int, ...], y: tuple[int, ...]) -> int:
    """Multiply-accumulates per image: every output (Conv) or input (ConvTranspose) pixel × kernel."""
    pixels = y[2] * y[3] if site.op == "Conv" else x[2] * x[3]
    return int(pixels * np.prod(weight))


def activation_amax(histogram: list[int], peak: float, method: str) -> float:
    """The clipping range of one tensor from its |x| histogram."""
    if method == "minmax" or peak == 0.0:
        return peak
    counts = np.asarray(histogram, np.float64)
    edges = np.linspace(0.0, peak, BINS + 1)
    if method == "percentile":
        cumulative = np.cumsum(counts) / counts.sum()
        return float(edges[1 + np.searchsorted(cumulative, PERCENTILE / 100)])
    if method == "mse":
        centres = (edges[:-1] + edges[1:]) / 2
        candidates = edges[BINS // 16 :: 8][:, None]
        step = candidates / QMAX
        error = (centres - np.minimum(np.round(centres / step), QMAX) * step) ** 2
        return float(candidates[np.argmin(error @ counts), 0])
    raise ValueError(f"calibration method must be one of {METHODS}, not {method!r}")


def quantize_weight(weight: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel int8 codes and scales of a float weight."""
    reduce = tuple(i for i in range(weight.ndim) if i != axis)
    scale = np.maximum(np.abs(weight).max(axis=reduce), 1e-12).astype(np.float32) / QMAX
    shape = [1] * weight.ndim
    shape[axis] = -1
    codes = np.clip(np.round(weight / scale.reshape(shape)), -QMAX, QMAX).astype(np.int8)
    return codes, scale


def quantize(
    proto: onnx.ModelProto,
    amax: dict[str, float],
    int8_keys: set[str],
    weight_codes: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    residuals: bool = True,
) -> onnx.ModelProto:
    """Q/DQ copy of ``proto``: layers in ``int8_keys`` get int8 inputs and weights (``weight_codes`` by
    weight name, else rounded to nearest); with ``residuals``, residual additions after them read
    quantized inputs too (measured on LESRCNN ×2, 8 additions: held-out drop 0.077 → 0.067 dB, no cost)."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    weights = {w.name: w for w in graph.initializer}
    produced = {o for _, n, _ in walk(graph) for o in n.output}
    quantized_inputs: dict[str, str] = {}
    dequantized_weights: dict[str, str] = {}
    new_initializers: list[TensorProto] = []
    weight_nodes: list[onnx.NodeProto] = []
    inserts: dict[str, list[onnx.NodeProto]] = {}  # tensor → its Q/DQ nodes, placed right after its producer
    head: list[onnx.NodeProto] = []

    def q_dq(tensor: str) -> str:
        if tensor not in quantized_inputs:
            scale = np.float32(max(amax[tensor], 1e-12) / QMAX)
            new_initializers.extend([numpy_helper.from_array(np.array(scale, np.float32), f"{tensor}.int8_scale"),
                                     numpy_helper.from_array(np.array(0, np.int8), f"{tensor}.int8_zero")])
            nodes = [helper.make_node("QuantizeLinear", [tensor, f"{tensor}.int8_scale", f"{tensor}.int8_zero"],
                                      [f"{tensor}.int8"], name=f"{tensor}.Q"),
                     helper.make_node("DequantizeLinear", [f"{tensor}.int8", f"{tensor}.int8_scale", f"{tensor}.int8_zero"],
                                      [f"{tensor}.dq"], name=f"{tensor}.DQ")]
            if tensor in produced:
                inserts[tensor] = nodes
            else:
                head.extend(nodes)
            quantized_inputs[tensor] = f"{tensor}.dq"
        return quantized_inputs[tensor]

    def weight_dq(name: str, axis: int) -> str:
        if name not in dequantized_weights:
            codes, scale = (weight_codes or {}).get(name) or quantize_weight(numpy_helper.to_array(weights[name]), axis)
            # One output channel (FSRCNN's deconvolution): a per-tensor scale, which sidesteps TensorRT's
            # caveats on per-channel ConvTranspose weights; the numbers are the same.
            if len(scale) == 1:
                scale, zero, axes = scale[0], np.int8(0), {}
            else:
                scale, zero, axes = scale, np.zeros(len(scale), np.int8), {"axis": axis}
            new_initializers.extend([numpy_helper.from_array(codes, f"{name}.int8"),
                                     numpy_helper.from_array(np.asarray(scale, np.float32), f"{name}.int8_scale"),
                                     numpy_helper.from_array(np.asarray(zero), f"{name}.int8_zero")])
            weight_nodes.append(helper.make_node("DequantizeLinear", [f"{name}.int8", f"{name}.int8_scale", f"{name}.int8_zero"],
                                                 [f"{name}.dq"], name=f"{name}.DQ", **axes))
            dequantized_weights[name] = f"{name}.dq"
        return dequantized_weights[name]

    int8_outputs = set()
    for _, node, _ in list(walk(graph)):
        if node.op_type in WEIGHT_AXIS and f"{node.input[1]}@{node.input[0]}" in int8_keys:
            node.input[0] = q_dq(node.input[0])
            node.input[1] = weight_dq(node.input[1], WEIGHT_AXIS[node.op_type])
            int8_outputs.add(node.output[0])
    if residuals:
        # conv + Add(residual): the residual reads the dequantized copy its tensor already has, which lets
        # TensorRT fuse the addition into the INT8 convolution (its residual-connection placement rule)
        for _, node, _ in walk(graph):
            if node.op_type == "Add" and len(node.input) == 2 and int8_outputs.intersection(node.input):
                for i, name in enumerate(node.input):
                    if name not in int8_outputs and name in quantized_inputs:
                        node.input[i] = quantized_inputs[name]

    place_nodes(graph, weight_nodes + head, inserts)
    graph.initializer.extend(new_initializers)
    used = {i for _, n, _ in walk(graph) for i in n.input}
    kept = [w for w in graph.initializer if w.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return out


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


def equalization_chains(proto: onnx.ModelProto) -> list[tuple[onnx.NodeProto, str, onnx.NodeProto]]:
    """(conv, activation tensor, next conv) where conv → Relu/PRelu → conv/deconv is a private chain: each
    tensor has one consumer and neither weight is shared, so per-channel rescaling is exact."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for _, node, _ in walk(proto.graph):
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    chains = []
    for _, node, _ in walk(proto.graph):
        if node.op_type != "Conv" or len(consumers.get(node.output[0], [])) != 1:
            continue
        act = consumers[node.output[0]][0]
        nxt = consumers.get(act.output[0], [])
        if (act.op_type in ("Relu", "PRelu") and len(nxt) == 1 and nxt[0].op_type in WEIGHT_AXIS
                and len(consumers[node.input[1]]) == 1 and len(consumers[nxt[0].input[1]]) == 1
                and all(a.i == 1 for n in (node, nxt[0]) for a in n.attribute if a.name == "group")):
            chains.append((node, act.output[0], nxt[0]))
    return chains


def channel_ranges(proto: onnx.ModelProto, names: list[str], batch: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-channel (min, max) of ``names`` over ``batch``."""
    ranges: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for values in tensor_runs(proto, names, batch):
        for name, value in values.items():
            low, high = value.min(axis=(0, 2, 3)), value.max(axis=(0, 2, 3))
            if name in ranges:
                low, high = np.minimum(ranges[name][0], low), np.maximum(ranges[name][1], high)
            ranges[name] = low, high
    return ranges


def channel_peaks(proto: onnx.ModelProto, names: list[str], batch: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel max |x| of ``names`` over ``batch``."""
    return {name: np.maximum(-low, high) for name, (low, high) in channel_ranges(proto, names, batch).items()}


def equalization_peaks(proto: onnx.ModelProto, batch: np.ndarray) -> dict[str, np.ndarray]:
    """The per-channel peaks ``equalize`` scales by (one pass over ``batch``, shared by every alpha)."""
    return channel_peaks(proto, [t for _, t, _ in equalization_chains(proto)], batch)


def equalize(proto: onnx.ModelProto, peaks: dict[str, np.ndarray], alpha: float) -> onnx.ModelProto:
    """Activation equalization: rescale each chain's middle channels towards the tensor's peak, by
    (peak / channel peak)^alpha up to ``MAX_EQUALIZATION``, folding the scale into the two convolutions
    (exact in float, since ReLU/PReLU commute with positive scaling). Narrow channels then use more of
    the 127 int8 codes. ``peaks``: ``equalization_peaks`` of ``proto``."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    chains = equalization_chains(out)
    inits = {i.name: i for i in out.graph.initializer}

    def scale(name: str, factor: np.ndarray) -> None:
        inits[name].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(inits[name]) * factor, name))

    for conv, tensor, nxt in chains:
        peak = peaks[tensor]
        ratio = np.where(peak > 0, peak.max() / np.maximum(peak, 1e-12), 1.0)
        s = np.minimum(ratio**alpha, MAX_EQUALIZATION).astype(np.float32)
        scale(conv.input[1], s[:, None, None, None])
        if len(conv.input) > 2 and conv.input[2]:
            scale(conv.input[2], s)
        # a Conv weight is out×in×k×k, a ConvTranspose weight in×out×k×k
        scale(nxt.input[1], 1 / s.reshape((1, -1, 1, 1) if nxt.op_type == "Conv" else (-1, 1, 1, 1)))
    return out


def _attribute(node: onnx.NodeProto, name: str, default):
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _as_conv_input(x: np.ndarray, node: onnx.NodeProto, kernel: tuple[int, int]) -> np.ndarray:
    """The padded input a stride-1 convolution reads; a ConvTranspose becomes one on its zero-upsampled
    input (with the kernel flipped, ``conv_weight``)."""
    top, left, bottom, right = _attribute(node, "pads", [0, 0, 0, 0])
    if node.op_type == "Conv":
        return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    sy, sx = _attribute(node, "strides", [1, 1])
    extra_y, extra_x = _attribute(node, "output_padding", [0, 0])
    up = np.zeros((*x.shape[:2], (x.shape[2] - 1) * sy + 1, (x.shape[3] - 1) * sx + 1), x.dtype)
    up[:, :, ::sy, ::sx] = x
    ky, kx = kernel
    return np.pad(up, ((0, 0), (0, 0), (ky - 1 - top, ky - 1 - bottom + extra_y), (kx - 1 - left, kx - 1 - right + extra_x)))


def _upsampled_taps(node: onnx.NodeProto, kernel: tuple[int, int], y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per window at (y, x) of ``_as_conv_input``: which of its kh·kw taps fall on the input grid rather than
    on a ConvTranspose's inserted zeros (all of them for a Conv). Padding counts as on the grid (its zeros are
    real values), so the pattern depends on the stride phase of the window alone."""
    if node.op_type == "Conv":
        return np.ones((len(y), kernel[0] * kernel[1]), bool)
    top, left = _attribute(node, "pads", [0, 0, 0, 0])[:2]
    (sy, sx), (ky, kx) = _attribute(node, "strides", [1, 1]), kernel
    rows = (y[:, None] + np.arange(ky) - (ky - 1 - top)) % sy == 0
    cols = (x[:, None] + np.arange(kx) - (kx - 1 - left)) % sx == 0
    return (rows[:, :, None] & cols[:, None, :]).reshape(len(y), -1)


def conv_weight(weight: np.ndarray, op: str) -> np.ndarray:
    """The out×in×k×k weight of the equivalent stride-1 convolution (its own inverse)."""
    return weight if op == "Conv" else np.ascontiguousarray(weight.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])


def input_hessians(
    proto: onnx.ModelProto, batch: np.ndarray, noise: dict[str, float], samples: int = 4096, seed: int = 0
) -> dict[str, np.ndarray]:
    """Per weight name: H = Σ (x xᵀ + σ²I) over sampled input patches x (im2col rows of the equivalent
    stride-1 convolution) of every on-path call site, where σ² = ``noise[input]`` is the error variance
    that input has in the INT8 network (``input_noise``). Without σ², GPTQ leans on input directions
    that the activation error then swamps. Layers with dilation or groups are left out (their weights
    are rounded to nearest), and so are Convs with strides."""
    rng = np.random.default_rng(seed)
    sites: dict[str, list[tuple[str, onnx.NodeProto]]] = {}
    for _, node, on_path in walk(proto.graph):
        plain = all(v == 1 for v in _attribute(node, "dilations", [1, 1])) and _attribute(node, "group", 1) == 1
        if node.op_type == "Conv":
            plain = plain and all(v == 1 for v in _attribute(node, "strides", [1, 1]))
        if on_path and is_layer(node) and plain:
            sites.setdefault(node.input[1], []).append((node.input[0], node))
    shapes = {w.name: tuple(w.dims) for w in proto.graph.initializer}
    hessians = {name: np.zeros((np.prod(shapes[name]) // shapes[name][WEIGHT_AXIS[uses[0][1].op_type]],) * 2)
                for name, uses in sites.items()}
    tensors = sorted({t for uses in sites.values() for t, _ in uses})
    for values in tensor_runs(proto, tensors, batch):
        for name, uses in sites.items():
            kernel = shapes[name][2:]
            for tensor, node in uses:
                x = _as_conv_input(values[tensor], node, kernel)
                windows = np.lib.stride_tricks.sliding_window_view(x, kernel, axis=(2, 3))  # N,C,H,W,kh,kw
                n, c, h, w = windows.shape[:4]
                pick = rng.choice(n * h * w, size=min(samples, n * h * w), replace=False)
                i, rest = np.divmod(pick, h * w)
                patches = windows[i, :, rest // w, rest % w].reshape(len(pick), -1)
                # which kernel taps can be non-zero (not a ConvTranspose's inserted zeros): rows with the same
                # taps add one block of H, over those taps only (a stride-2 ConvTranspose's patches are 3/4
                # zeros: the dense product would cost 16× more, for the same numbers; one block for a Conv)
                taps = _upsampled_taps(node, kernel, rest // w, rest % w)
                strides = _attribute(node, "strides", [1, 1]) if node.op_type == "ConvTranspose" else [1, 1]
                phase = (rest // w % strides[0]) * strides[1] + rest % w % strides[1]  # same phase, same taps
                for p in np.unique(phase):
                    rows, tap = patches[phase == p], taps[np.argmax(phase == p)]
                    if tap.all():
                        hessians[name] += rows.T.astype(np.float64) @ rows.astype(np.float64)
                    else:
                        cols = np.flatnonzero(np.tile(tap, c))
                        block = rows[:, cols].astype(np.float64)
                        hessians[name][np.ix_(cols, cols)] += block.T @ block
                hessians[name][np.diag_indices(c * taps.shape[1])] += len(pick) * noise[tensor]
    return hessians


def gptq_weight(weight: np.ndarray, op: str, hessian: np.ndarray, damping: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel int8 codes and scales of a Conv/ConvTranspose weight that minimise ‖(W − Ŵ) X‖ over
    calibration patches X (GPTQ, Frantar et al. 2023): inputs are rounded one at a time and each rounding
    error is compensated on the inputs not yet rounded, through the inverse of H = X Xᵀ."""
    as_conv = conv_weight(weight, op)
    _, scale = quantize_weight(as_conv, 0)
    w = as_conv.reshape(len(as_conv), -1).astype(np.float64)
    h = hessian.copy()
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h[np.diag_indices_from(h)] += damping * np.mean(np.diag(h))
    codes = np.zeros_like(w)
    s = scale.astype(np.float64)
    # GPTQ decouples over the connected components of H (a stride-2 ConvTranspose's four phases never share a
    # patch): each is solved alone, its columns in the same order, on a quarter of the size
    labels = np.zeros(len(h), int) if np.all(h != 0) else connected_components(csr_array(h != 0), directed=False)[1]
    for component in np.unique(labels):
        cols = np.flatnonzero(labels == component)
        upper = np.linalg.cholesky(np.linalg.inv(h[np.ix_(cols, cols)])).T  # upper Cholesky factor of H⁻¹
        block = w[:, cols]
        for j, col in enumerate(cols):
            codes[:, col] = np.clip(np.round(block[:, j] / s), -QMAX, QMAX)
            error = (block[:, j] - codes[:, col] * s) / upper[j, j]
            block[:, j + 1 :] -= error[:, None] * upper[j, j + 1 :][None, :]
    return conv_weight(codes.astype(np.int8).reshape(as_conv.shape), op), scale


def input_noise(proto: onnx.ModelProto, quantized: onnx.ModelProto, batch: np.ndarray) -> dict[str, float]:
    """Per quantized conv input: mean squared error of its dequantized value in ``quantized`` against the
    float value in ``proto`` (all upstream quantization included)."""
    tensors = sorted({s.activation for s in layers(proto)})
    produced = {o for _, n, _ in walk(quantized.graph) for o in n.output}
    dq = [t for t in tensors if f"{t}.dq" in produced]
    total = dict.fromkeys(tensors, 0.0)
    count = dict.fromkeys(tensors, 0)
    for exact, approx in zip(tensor_runs(proto, tensors, batch), tensor_runs(quantized, [f"{t}.dq" for t in dq], batch)):
        for t in dq:
            total[t] += float(np.sum((approx[f"{t}.dq"] - exact[t]) ** 2, dtype=np.float64))
            count[t] += exact[t].size
    return {t: total[t] / count[t] if count[t] else 0.0 for t in tensors}


def gptq_codes(
    proto: onnx.ModelProto, batch: np.ndarray, noise: dict[str, float]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``gptq_weight`` codes of every weight ``input_hessians`` covers, by weight name."""
    weights = {w.name: numpy_helper.to_array(w) for w in proto.graph.initializer}
    ops = {s.weight: s.op for s in layers(proto)}
    return {name: gptq_weight(weights[name], ops[name], h) for name, h in input_hessians(proto, batch, noise).items()}
