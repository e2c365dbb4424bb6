"""Activation equalization: a channel's range moved from the activation into the next convolution's weights,
so that one per-tensor INT8 scale fits every channel."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ..onnx.graph_rewrite import walk
from .int8_calibration import channel_peaks
from .int8_graph import WEIGHT_AXIS

# Equalization scales a channel up by at most this: a channel the calibration photos barely light up
# would otherwise be amplified by its full peak ratio, and clip on an image that does light it up
# (LESRCNN ×3 with uncapped α = 1: Set5 "bird" lost 1.7 dB, its channels reaching 2.5× the range).
MAX_EQUALIZATION = 4.0


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
