"""GPTQ weight rounding: INT8 weight codes chosen against each layer's input Hessian from calibration crops."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper
from scipy.sparse import csr_array
from scipy.sparse.csgraph import connected_components

from ..onnx.graph_rewrite import walk
from .int8_calibration import tensor_runs
from .int8_graph import QMAX, WEIGHT_AXIS, is_layer, layers
from .int8_qdq import quantize_weight



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
