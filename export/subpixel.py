"""The sub-pixel form of a strided transposed convolution: one convolution that computes every output phase, then
``DepthToSpace`` (``PixelShuffle``), for the runtimes whose transposed convolution is slow: the OpenVINO IR
(``subpixel_form``, on the ONNX graph) and ExecuTorch (``export.executorch.pte_export.SubPixelDeconv``, on the
PyTorch module, from ``as_convolution``).

OpenVINO's CPU plugin runs a ``ConvTranspose`` (``ConvolutionBackpropData``) far below its convolution speed:
FSRCNN ×2's 9×9 stride-2 deconvolution took 73 % of the FP32 network's time at 256×256 on AVX2 (49 ms, about
12 GFLOP/s), so OpenVINO FP32 ran FSRCNN 1.87× slower than ONNX Runtime. The same layer as a convolution with
s²·C_out outputs runs at convolution speed (the exported IR: 0.55× ONNX Runtime FP32). ONNX Runtime goes the other
way (its ``ConvTranspose`` is the faster one there), and ncnn too: their graphs keep it.

Exact: a transposed convolution of stride s, kernel K, padding p gives output ``y[s·q + r] = Σ_t x[q + off_r − t]
· w[s·t + base_r]`` with ``base_r = (r + p) mod s`` and ``off_r = (r + p) div s`` for each phase r; all phases
share one window of input offsets, so one convolution (zeros where a phase has fewer taps) computes them all, and
``DepthToSpace`` (DCR) interleaves them. Only where the output is exactly s× the input (``K + output_padding −
2p = s``, FSRCNN's case). Weights may be float or int8 behind ``DequantizeLinear``: the codes are moved (the
added taps are code 0) and per-output-channel scales repeated per phase, so Q/DQ graphs keep their codes.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .onnx.graph_rewrite import drop_unused_initializers, graphs


def _phases(stride: int, kernel: int, pad: int) -> tuple[list[tuple[int, int, int]], int, int]:
    """Per output phase (first tap, input offset, tap count), and the input offsets' common window."""
    phases = []
    for r in range(stride):
        base, offset = (r + pad) % stride, (r + pad) // stride
        phases.append((base, offset, -(-(kernel - base) // stride)))
    return phases, min(o - t + 1 for _, o, t in phases), max(o for _, o, _ in phases)


def as_convolution(w: np.ndarray, stride: int, kernel: tuple[int, int], pads: tuple[int, int]) -> tuple[np.ndarray, list[int]]:
    """ConvTranspose weights (C_in, C_out, kH, kW) → Conv weights (s²·C_out, C_in, L_h, L_w) and the Conv's pads."""
    (rows, low_h, high_h), (cols, low_w, high_w) = (_phases(stride, k, p) for k, p in zip(kernel, pads))
    c_out = w.shape[1]
    out = np.zeros((stride * stride * c_out, w.shape[0], high_h - low_h + 1, high_w - low_w + 1), w.dtype)
    for a, (base_h, off_h, taps_h) in enumerate(rows):
        for b, (base_w, off_w, taps_w) in enumerate(cols):
            phase = slice((a * stride + b) * c_out, (a * stride + b + 1) * c_out)
            for j in range(out.shape[2]):
                t_h = off_h - (low_h + j)
                for i in range(out.shape[3]):
                    t_w = off_w - (low_w + i)
                    if 0 <= t_h < taps_h and 0 <= t_w < taps_w:
                        out[phase, :, j, i] = w[:, :, stride * t_h + base_h, stride * t_w + base_w].T
    return out, [-low_h, -low_w, high_h, high_w]


def subpixel_form(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``proto`` with each strided ``ConvTranspose`` that upsamples exactly s× as Conv + DepthToSpace; the
    number rewritten. Others are left as they are."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    graph = proto.graph
    weights = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    rewritten = 0
    for node in [n for n in graph.node if n.op_type == "ConvTranspose"]:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        strides, kernel = attrs.get("strides", [1, 1]), attrs.get("kernel_shape")
        pads, extra = attrs.get("pads", [0, 0, 0, 0]), attrs.get("output_padding", [0, 0])
        stride = strides[0]
        if (kernel is None or attrs.get("group", 1) != 1 or any(d != 1 for d in attrs.get("dilations", [1, 1]))
                or strides[1] != stride or stride < 2 or pads[:2] != pads[2:] or "output_shape" in attrs
                or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
                or any(k + e - 2 * p != stride for k, e, p in zip(kernel, extra, pads[:2]))):
            continue
        dequantize = producer.get(node.input[1])
        quantized = dequantize is not None and dequantize.op_type == "DequantizeLinear"
        source = dequantize.input[0] if quantized else node.input[1]
        scales = [weights.get(i) for i in dequantize.input[1:]] if quantized else []
        axis = next((a.i for a in dequantize.attribute if a.name == "axis"), 1) if quantized else 1
        if (source not in weights or None in scales
                or any(len(t.dims) > 0 and axis != 1 for t in scales)):  # per output channel, or one scale
            continue
        conv_w, conv_pads = as_convolution(numpy_helper.to_array(weights[source]), stride, tuple(kernel),
                                            tuple(pads[:2]))
        phases, added = stride * stride, []
        graph.initializer.append(numpy_helper.from_array(conv_w, f"{source}.subpixel"))
        weight = f"{source}.subpixel"
        if quantized:  # int8 codes moved (added taps: code 0); a scale per output channel repeated per phase
            moved = []
            for tensor in scales:
                value = numpy_helper.to_array(tensor)
                moved.append(f"{tensor.name}.subpixel")
                graph.initializer.append(numpy_helper.from_array(np.tile(value, phases) if value.ndim else value,
                                                                 moved[-1]))
            weight = f"{node.input[1]}.subpixel"
            added.append(helper.make_node("DequantizeLinear", [f"{source}.subpixel", *moved], [weight],
                                          name=f"{dequantize.name}.subpixel", axis=0))
        inputs = [node.input[0], weight]
        if len(node.input) > 2 and node.input[2]:
            bias = numpy_helper.to_array(weights[node.input[2]])
            graph.initializer.append(numpy_helper.from_array(np.tile(bias, phases), f"{node.input[2]}.subpixel"))
            inputs.append(f"{node.input[2]}.subpixel")
        added += [helper.make_node("Conv", inputs, [f"{node.output[0]}.phases"], name=f"{node.name}.subpixel",
                                   kernel_shape=list(conv_w.shape[2:]), pads=conv_pads),
                  helper.make_node("DepthToSpace", [f"{node.output[0]}.phases"], [node.output[0]],
                                   name=f"{node.name}.phases", blocksize=stride, mode="DCR")]
        at = list(graph.node).index(node)
        nodes = [*graph.node[:at], *added, *graph.node[at + 1:]]
        del graph.node[:]
        graph.node.extend(nodes)
        rewritten += 1
    if rewritten:
        used = {i for g in graphs(graph) for n in g.node for i in n.input}  # If branches read outer tensors too
        for node in [n for n in graph.node if n.op_type == "DequantizeLinear" and not set(n.output) & used]:
            graph.node.remove(node)  # the moved weights' old DequantizeLinear
        drop_unused_initializers(proto)
    return proto, rewritten
