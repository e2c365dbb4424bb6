"""Input channels of each INT8 convolution ordered so that x86 CPUs without VNNI add no saturating int16 pairs.

Without VNNI (AVX2; AVX-512F before Cascade Lake) OpenVINO's int8 convolution multiplies u8 activation codes by
i8 weight codes with ``vpmaddubsw``, which adds the products of input channels 2k and 2k+1 of one tap into
**int16 and saturates** (measured on OpenVINO 2026.4: channels (0,1), (2,3), (8,9) pair, (0,2), (1,2) do not).
A symmetric int8 activation reaches the kernel as u8 code + 128, so two large same-sign weights of a pair
overflow as soon as both channels are positive: FSRCNN ×2 lost 0.49 dB on the held-out photos through OpenVINO
(ONNX Runtime: 0.07), 0.41 of it in its third map layer. Which channels pair is only their order, so the IR orders them:
per convolution, the cost of pairing channels a and b is the squared int16 overflow of ``u_a·w_a + u_b·w_b``
(scaled to the output) on calibration crops, and the cheapest perfect pairing (Edmonds' blossom algorithm,
networkx) becomes the channel order. The permutation is pushed up into the layers that make the tensor (output
channels of the convolutions, per-channel PReLU slopes, a channel ``Split``), so the IR computes the same
function. OpenVINO 2026.4 computes a channel ``Gather`` (or ``Split``+``Concat``) in front of a FakeQuantize and
convolution wrongly (1.42 relative error on a one-convolution graph), so the order is never a node of its own.
CPUs with VNNI or AMX accumulate in int32, where the order changes nothing.
"""
from __future__ import annotations

import networkx as nx
import numpy as np
import onnx
from onnx import numpy_helper

from ..quant.int8_calibration import tensor_runs

INT16_MAX, INT16_MIN = 32767, -32768
SAMPLES = 8192  # sampled input windows per convolution
UNARY = {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Identity", "Clip"}


def pair_order_form(proto: onnx.ModelProto, batch: np.ndarray, seed: int = 0) -> tuple[onnx.ModelProto, int]:
    """A copy of ``proto`` whose INT8 convolutions read their input channels in the order with the least int16
    pair overflow on ``batch`` (calibration crops, N×C×H×W); and how many tensors were reordered."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    sites = [site for site in (_site(q, producer, readers, weights) for q in graph.node if q.op_type == "QuantizeLinear")
             if site is not None]
    if not sites:
        return out, 0
    values = {}
    for run in tensor_runs(proto, [q.input[0] for q, _, _ in sites], batch):
        for name, value in run.items():
            values.setdefault(name, []).append(value)
    rng = np.random.default_rng(seed)
    reordered = 0
    for quantize, dequantize, convs in sites:
        samples = _samples(np.concatenate(values[quantize.input[0]]), quantize, convs, producer, weights, rng)
        channels = samples[0][0].shape[1]
        now = [(a, a + 1) for a in range(0, channels - 1, 2)]
        if not sum(pair_costs(patches, weight, now) for patches, weight in samples).any():
            continue  # the present order overflows nowhere
        cost = sum(pair_costs(patches, weight) for patches, weight in samples)
        order = cheapest_pairing(cost)
        if _pairing_cost(cost, order) >= _pairing_cost(cost, list(range(channels))):
            continue
        edits = {}
        if not _plan(quantize.input[0], np.array(order), quantize, producer, readers, weights, graph, edits):
            continue
        for node in (quantize, dequantize):  # per-channel activation scales and zero points follow their channels
            for name in node.input[1:]:
                if name and weights[name].size == channels:
                    edits[name] = weights[name][order]
        for conv in convs:
            codes = producer[conv.input[1]].input[0]
            edits[codes] = edits.get(codes, weights[codes])[:, order]
        for tensor in graph.initializer:
            if tensor.name in edits:
                tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(edits[tensor.name]), tensor.name))
        weights.update(edits)
        reordered += 1
    return out, reordered


def _site(quantize, producer, readers, weights):
    """(QuantizeLinear, DequantizeLinear, Convs) of an activation quantized for ungrouped convolutions with
    int8 weights, each weight initializer read by that convolution alone; else None."""
    if quantize.input[0] in weights:
        return None
    dequantize = readers.get(quantize.output[0], [])
    if len(dequantize) != 1 or dequantize[0].op_type != "DequantizeLinear":
        return None
    convs = readers.get(dequantize[0].output[0], [])
    for conv in convs:
        weight = producer.get(conv.input[1]) if len(conv.input) > 1 else None
        if (conv.op_type != "Conv" or conv.input[0] != dequantize[0].output[0] or _group(conv) != 1
                or weight is None or weight.op_type != "DequantizeLinear" or weight.input[0] not in weights
                or len(readers[weight.output[0]]) != 1 or len(readers[weight.input[0]]) != 1):
            return None
    return (quantize, dequantize[0], convs) if convs else None


def _group(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def _u8_codes(x: np.ndarray, quantize: onnx.NodeProto, weights: dict) -> np.ndarray:
    """The u8 codes OpenVINO's kernel multiplies: u8 codes as they are, int8 codes + 128."""
    scale = weights[quantize.input[1]].astype(np.float64)
    zero = weights[quantize.input[2]] if len(quantize.input) > 2 and quantize.input[2] else np.zeros((), np.uint8)
    shape = (1, -1, 1, 1) if scale.size > 1 else ()
    signed = zero.dtype == np.int8
    low, high = (-128, 127) if signed else (0, 255)
    codes = np.clip(np.rint(x / np.reshape(scale, shape)) + np.reshape(zero.astype(np.int64), shape if zero.size > 1 else ()), low, high)
    return (codes + 128 * signed).astype(np.int32)


def _samples(x: np.ndarray, quantize, convs, producer: dict, weights: dict,
             rng: np.random.Generator) -> list[tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]]:
    """Per convolution reading the quantized ``x`` (N×C×H×W): S×C×taps u8 codes of ``SAMPLES`` of its input
    windows (padding holds the code of zero), and its weight (``_weight_codes``)."""
    codes = _u8_codes(x, quantize, weights)
    zero = _u8_codes(np.zeros((1, x.shape[1], 1, 1), np.float32), quantize, weights)
    found = []
    for conv in convs:
        top, left, bottom, right = next((list(a.ints) for a in conv.attribute if a.name == "pads"), [0, 0, 0, 0])
        n, c, h, w = codes.shape
        padded = np.broadcast_to(zero, (n, c, h + top + bottom, w + left + right)).copy()
        padded[:, :, top : top + h, left : left + w] = codes
        kh, kw = weights[producer[conv.input[1]].input[0]].shape[2:]
        at = rng.integers(0, [n, padded.shape[2] - kh + 1, padded.shape[3] - kw + 1], (SAMPLES, 3))
        windows = np.stack([padded[at[:, 0], :, at[:, 1] + i, at[:, 2] + j] for i in range(kh) for j in range(kw)], -1)
        found.append((windows, _weight_codes(conv, producer, weights)))
    return found


def _weight_codes(conv: onnx.NodeProto, producer: dict, weights: dict) -> tuple[np.ndarray, np.ndarray]:
    """O×C×taps int8 weight codes of a Q/DQ convolution, and each output channel's weight scale."""
    dequantize = producer[conv.input[1]]
    codes = weights[dequantize.input[0]].astype(np.int32)
    unit = np.broadcast_to(weights[dequantize.input[1]].astype(np.float64).reshape(-1), (codes.shape[0],))
    return codes.reshape(*codes.shape[:2], -1), unit


def pair_costs(patches: np.ndarray, weight: tuple[np.ndarray, np.ndarray], pairs: list[tuple[int, int]] | None = None) -> np.ndarray:
    """C×C: the squared int16 overflow of each channel pair's products, in units of the output (``weight``:
    O×C×taps codes, ``unit``), over sampled windows (``patches``: S×C×taps u8 codes); ``pairs``: only these."""
    taps, unit = weight
    c = patches.shape[1]
    worst = patches.max(axis=(0, 2))  # per channel: the largest code seen
    positive, negative = np.maximum(taps, 0), np.minimum(taps, 0)
    cost = np.zeros((c, c))
    for a, b in pairs if pairs is not None else ((a, b) for a in range(c) for b in range(a + 1, c)):
        bound = worst[a] * positive[:, a] + worst[b] * positive[:, b]
        floor = worst[a] * negative[:, a] + worst[b] * negative[:, b]
        out, tap = np.nonzero((bound > INT16_MAX) | (floor < INT16_MIN))  # the (output, tap) sums that can overflow
        if not len(out):
            continue
        pair = patches[:, a, tap] * taps[out, a, tap] + patches[:, b, tap] * taps[out, b, tap]  # S×risky
        excess = (pair - np.clip(pair, INT16_MIN, INT16_MAX)) * unit[out]
        cost[a, b] = cost[b, a] = float((excess**2).sum())
    return cost


def cheapest_pairing(cost: np.ndarray) -> list[int]:
    """A channel order whose pairs (0,1), (2,3), … have the least total ``cost``; with an odd count the last
    channel pairs with the kernel's zero padding (no cost). Pairs in order of their first channel."""
    c = len(cost)
    graph = nx.Graph()
    top = float(cost.max()) + 1.0
    for a in range(c):
        for b in range(a + 1, c):
            graph.add_edge(a, b, weight=top - cost[a, b])
        if c % 2:
            graph.add_edge(a, c, weight=top)  # c: the padding channel
    pairs = sorted(tuple(sorted(edge)) for edge in nx.max_weight_matching(graph, maxcardinality=True))
    order = [channel for pair in pairs if c not in pair for channel in pair]
    return order + [channel for pair in pairs if c in pair for channel in pair if channel != c]


def _pairing_cost(cost: np.ndarray, order: list[int]) -> float:
    return float(sum(cost[order[i], order[i + 1]] for i in range(0, len(order) - 1, 2)))


def _plan(tensor: str, order: np.ndarray, reader: onnx.NodeProto, producer: dict, readers: dict, weights: dict,
          graph: onnx.GraphProto, edits: dict) -> bool:
    """Record in ``edits`` (initializer → permuted array) how the layers that make ``tensor`` write its channels
    in ``order``; False (``edits`` incomplete, to be dropped) where that is not a local, exact rewrite."""
    node = producer.get(tensor)
    if node is None or readers.get(tensor, []) != [reader] or tensor in {o.name for o in graph.output}:
        return False
    if node.op_type in ("Conv", "ConvTranspose"):
        return _plan_conv(node, order, producer, readers, weights, edits)
    if node.op_type == "Split":
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        sizes = (weights.get(node.input[1]) if len(node.input) > 1 and node.input[1]
                 else next((np.array(a.ints) for a in node.attribute if a.name == "split"), None))
        if axis != 1 or sizes is None:
            return False
        start = int(np.sum(sizes[: list(node.output).index(tensor)]))
        full = np.arange(int(np.sum(sizes)))
        full[start : start + len(order)] = start + order
        return _plan(node.input[0], full, node, producer, readers, weights, graph, edits)
    if node.op_type == "PRelu" or node.op_type in UNARY or node.op_type in ("Add", "Sub", "Mul", "Div"):
        for name in filter(None, node.input):
            if name not in weights:
                if not _plan(name, order, node, producer, readers, weights, graph, edits):
                    return False
                continue
            value = weights[name]
            if value.size == 1:
                continue
            per_channel = value.size == len(order) and value.ndim >= 3 and value.shape[-3] == len(order)
            if not per_channel or len(readers[name]) != 1:
                return False
            edits[name] = np.take(value, order, axis=value.ndim - 3)
        return True
    return False


def _plan_conv(node, order, producer, readers, weights, edits) -> bool:
    """Output channels of a convolution: its weights (float, or int8 codes with per-channel scales) and bias."""
    axis = 0 if node.op_type == "Conv" else 1
    if _group(node) != 1:
        return False
    weight = producer.get(node.input[1])
    names = [node.input[1]] if weight is None else [weight.input[0]]
    if weight is not None:
        if weight.op_type != "DequantizeLinear" or len(readers[weight.output[0]]) != 1:
            return False
        dq_axis = next((a.i for a in weight.attribute if a.name == "axis"), 1)
        names += [n for n in weight.input[1:] if n and weights[n].size > 1 and dq_axis == axis]
    names += [node.input[2]] if len(node.input) > 2 and node.input[2] else []
    for name in names:
        if name not in weights or len(readers[name]) != 1:
            return False
        value = edits.get(name, weights[name])
        edits[name] = np.take(value, order, axis=axis if value.ndim == 4 else 0)
    return True
