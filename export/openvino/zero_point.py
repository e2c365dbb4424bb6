"""Centred activations rewritten as OpenVINO compiles them best: u8 with a zero point, no ``Pad``, no ``Sub``.

TensorRT has no zero points, so our Q/DQ graph centres a post-ReLU tensor itself (``quant/int8_centre``):
``Pad`` (zeros) → ``Sub`` (centre ``m``) → Q/DQ int8 → ``Conv`` (padding 0, ``W·m`` in its bias). OpenVINO runs
that ``Pad`` in its reference implementation and cannot fuse the quantization into the producing layer
across it. Where ``m`` is a whole number ``k`` of quantization steps ``s`` (post-ReLU tensors: ``k = 127``),
the same codes are u8 with zero point ``127 − k``:

    m + s·clip(round((x − m)/s), −127, 127) = s·(clip(round(x/s) + zp, 0, 255) − zp),   zp = 127 − k,

except one more code at the top (the int8 form saturates at ``m + 127 s``, u8 at ``m + 128 s``). The
convolution pads the tensor with real zeros again (its zero point), and its bias loses ``Σ Wq·m`` over all
taps: the centred graph's padded positions held ``−m`` and its bias ``W·m``, so both graphs compute
``Σ Wq·x + b + Σ (W − Wq)·m`` everywhere, borders included. A tensor whose centre is off the grid, or read by
anything but a convolution, keeps its centred form.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..onnx.graph_rewrite import drop_unused_initializers, graphs, walk

# How far from a whole number of steps a centre may be (float rounding of ``low + half``) to be rewritten.
GRID_TOLERANCE = 1e-2


def zero_point_form(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``proto`` with every rewritable centred tensor in u8 zero-point form; and how many were."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    every = list(walk(graph))  # If branches (DSRNet's gate) included
    weights = {t.name: numpy_helper.to_array(t) for g in reversed(list(graphs(graph))) for t in g.initializer}
    home = {id(n): g for g, n, _ in every}
    producer = {o: n for _, n, _ in every for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for _, node, _ in every:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    removed, added, rewritten, made = [], [], 0, set()
    for sub in [n for _, n, _ in every if n.op_type == "Sub" and n.input[1].endswith(".centre")]:
        chain = _chain(sub, producer, readers)
        if chain is None:
            continue
        pad, quantize, dequantize, convs = chain
        m = weights[sub.input[1]].reshape(-1).astype(np.float64)
        step = weights[quantize.input[1]].astype(np.float64)
        if step.size != 1 or not all(_dequantized_weight(c, producer, weights) is not None for c in convs):
            continue
        k = m / float(step)
        zero = 127 - np.rint(k)
        if np.abs(k - np.rint(k)).max() > GRID_TOLERANCE or zero.min() < 0 or zero.max() > 255:
            continue
        zero = zero.astype(np.uint8)
        name = sub.output[0]
        if np.all(zero == zero[0]):
            scale, zero_point, axis = step.astype(np.float32).reshape(()), zero[:1].reshape(()), []
        else:  # per-channel zero points need per-channel scales of the same shape
            scale, zero_point, axis = np.full(len(zero), float(step), np.float32), zero, [helper.make_attribute("axis", 1)]
        if f"{name}.u8_scale" not in made:  # a tensor of both branches of an If: one scale, one zero point
            made.add(f"{name}.u8_scale")
            added += [numpy_helper.from_array(scale, f"{name}.u8_scale"), numpy_helper.from_array(zero_point, f"{name}.u8_zero")]
        source = pad.input[0] if pad is not None else sub.input[0]
        for node in (quantize, dequantize):
            node.input[1:] = [f"{name}.u8_scale", f"{name}.u8_zero"]
            del node.attribute[:]
            node.attribute.extend(axis)
        quantize.input[0] = source
        pads = [] if pad is None else list(weights[pad.input[1]][[2, 3, 6, 7]])
        for conv in convs:
            if pads:
                for attribute in conv.attribute:
                    if attribute.name == "pads":
                        attribute.ints[:] = pads
            renamed = f"{conv.input[2]}.u8"  # the same convolution in both branches of an If: one bias
            if renamed not in made:
                w = _dequantized_weight(conv, producer, weights)
                bias = weights[conv.input[2]].astype(np.float64) - np.einsum("ocij,c->o", w, m)
                added.append(numpy_helper.from_array(bias.astype(np.float32), renamed))
                made.add(renamed)
            conv.input[2] = renamed
        removed += [sub] + ([pad] if pad is not None else [])
        rewritten += 1
    for node in removed:
        home[id(node)].node.remove(node)
    graph.initializer.extend(added)
    drop_unused_initializers(out)
    return out, rewritten


def _chain(sub, producer, readers):
    """(Pad or None, QuantizeLinear, DequantizeLinear, Convs) of a centring ``Sub``, or None where the
    pattern differs (``centre`` writes exactly this)."""
    pad = producer.get(sub.input[0])
    pad = pad if pad is not None and pad.op_type == "Pad" and len(readers[pad.output[0]]) == 1 else None
    quantize = readers.get(sub.output[0], [])
    if len(quantize) != 1 or quantize[0].op_type != "QuantizeLinear":
        return None
    dequantize = readers.get(quantize[0].output[0], [])
    if len(dequantize) != 1 or dequantize[0].op_type != "DequantizeLinear":
        return None
    convs = readers.get(dequantize[0].output[0], [])
    if not convs or any(c.op_type != "Conv" or c.input[0] != dequantize[0].output[0] or len(c.input) < 3 for c in convs):
        return None
    return pad, quantize[0], dequantize[0], convs


def _dequantized_weight(conv, producer, weights) -> np.ndarray | None:
    """The weight a convolution computes with (its int8 codes times their scales), float64; None if not Q/DQ."""
    node = producer.get(conv.input[1])
    if node is None or node.op_type != "DequantizeLinear" or node.input[0] not in weights:
        return None
    codes = weights[node.input[0]].astype(np.float64)
    scale = weights[node.input[1]].astype(np.float64)
    zero = weights[node.input[2]].astype(np.float64) if len(node.input) > 2 and node.input[2] else 0.0
    shape = (-1,) + (1,) * (codes.ndim - 1) if np.ndim(scale) == 1 else ()
    return (codes - np.reshape(zero, shape)) * np.reshape(scale, shape)
