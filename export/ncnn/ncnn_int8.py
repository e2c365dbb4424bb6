"""ncnn INT8 from the gated INT8 ONNX graph: the project's own search (its equalized weights, weight codes,
activation ranges, centring, and the layers and channels it keeps float), carried into ncnn's INT8 format.

ncnn's own tools (``ncnn2table``, ``ncnn2int8``) are not in the pip packages and calibrate by themselves; what
srdeploy needs is to write the search's numbers, so this module writes ncnn's INT8 layout directly, the layout
``ncnn2int8`` writes (``tools/quantize/ncnn2int8.cpp``, ``tools/modelwriter.h``): a quantized ``Convolution``
gets ``8=2`` (``int8_scale_term``) in the ``.param``; in the ``.bin`` its weight blob becomes the int8 tag
``0x000D4B38`` and the codes (padded to 4 bytes), the float bias stays, and ``weight_data_int8_scales`` (one per
output channel) and ``bottom_blob_int8_scales`` (one) follow as raw float32. ncnn's scales multiply
(``code = round(x · scale)``, clamped to ±127): they are the reciprocals of ONNX's Q/DQ scales.

1. ``float_twin``: the Q/DQ graph without its Q/DQ nodes (each INT8 convolution reads its float input and
   ``codes × scale`` as its weight), with each INT8 transposed convolution in sub-pixel form first (ncnn's
   ``Deconvolution`` has no INT8), and what each INT8 convolution reads: its input tensor, codes and scales.
2. pnnx converts the twin like any FP32 graph.
3. ``quantize_graph``: each ncnn ``Convolution`` is matched to its ONNX convolution by its float weights, and,
   where several have equal weights (a weight read twice; DSRNet's two mean shifts, one INT8 and one float), by
   the values of its input blob, computed by ncnn and by ONNX Runtime on one probe image; then its weights and
   scales are rewritten, and INT8 convolutions read only by INT8 ones hand over int8 (``requantize``).
Residual additions that read quantized copies in the Q/DQ graph read the float tensor here (ncnn quantizes
convolution inputs only). The artifact is then gated by ncnn itself like the other precisions.
"""
from __future__ import annotations

import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .ncnn_param import NcnnLayer, read_param
from ..onnx.graph_rewrite import drop_unused_initializers, graphs, walk
from ..quant import int8_calibration, int8_graph
from ..subpixel import subpixel_form
from ...runtime.errors import SrDeployError

FP32_TAG, FP16_TAG, INT8_TAG = 0, 0x01306B47, 0x000D4B38
WEIGHTLESS = {"Input", "Split", "BinaryOp", "ReLU", "PixelShuffle", "Reshape", "Slice", "Concat", "Crop", "Padding",
              "Eltwise", "UnaryOp", "Sigmoid", "Clip", "Permute", "Noop", "Interp", "Flatten", "Softmax", "Dropout"}
MATCH_RTOL = 1e-3  # an ncnn input blob against the ONNX tensor it stands for (both FP32 on the probe)
PROBE = 24  # side of the probe image the blobs are matched on


@dataclass
class Int8Conv:
    """What one INT8 convolution of the Q/DQ graph reads: its input tensor (in the twin) and its numbers."""

    input: str
    weight_name: str  # the twin's float weight (codes × scale)
    codes: np.ndarray  # int8, Conv layout (C_out, C_in, kH, kW)
    weight_scale: np.ndarray  # per output channel (ONNX: x ≈ code · scale)
    input_scale: float

    @property
    def weight(self) -> np.ndarray:
        return self.codes.astype(np.float32) * self.weight_scale.reshape(-1, 1, 1, 1)


@dataclass
class Int8Twin:
    """The INT8 graph as ncnn gets it: its float twin, its INT8 convolutions, their share of the convolution MACs
    (an ``If`` counts its then-branch)."""

    graph: onnx.ModelProto
    convs: list[Int8Conv]
    mac_fraction: float


def float_twin(qdq: onnx.ModelProto) -> Int8Twin:
    """The Q/DQ graph ``qdq`` as FP32 (Q/DQ removed; INT8 weights as ``codes × scale``) and its INT8 convolutions."""
    if any(n.op_type == "ConvTranspose" and n.input[1].endswith(".dq") for _, n, _ in walk(qdq.graph)):
        qdq, _ = subpixel_form(qdq)
    twin = onnx.ModelProto.FromString(qdq.SerializeToString())
    weights = {t.name: numpy_helper.to_array(t) for t in twin.graph.initializer}
    producer = {o: n for _, n, _ in walk(twin.graph) for o in n.output}
    convs, added = [], {}
    for _, node, _ in walk(twin.graph):
        if node.op_type == "ConvTranspose" and node.input[1] in producer and \
                producer[node.input[1]].op_type == "DequantizeLinear":
            raise SrDeployError(f"ncnn has no INT8 transposed convolution and {node.name} has no sub-pixel form")
        if node.op_type != "Conv" or node.input[1] not in producer:
            continue
        weight_dq, input_dq = producer[node.input[1]], producer.get(node.input[0])
        if weight_dq.op_type != "DequantizeLinear" or input_dq is None or input_dq.op_type != "DequantizeLinear":
            continue
        quantize = producer[input_dq.input[0]]
        codes = weights[weight_dq.input[0]]
        scale = np.broadcast_to(weights[weight_dq.input[1]].astype(np.float32), (codes.shape[0],)).copy()
        name = f"{weight_dq.input[0]}.twin"
        conv = Int8Conv(quantize.input[0], name, codes, scale, float(weights[quantize.input[1]]))
        if name not in added:
            added[name] = numpy_helper.from_array(conv.weight, name)
        node.input[0], node.input[1] = conv.input, name
        convs.append(conv)
    for _, node, _ in walk(twin.graph):  # residual additions read the float tensor
        for i, name in enumerate(node.input):
            dequantize = producer.get(name)
            quantize = producer.get(dequantize.input[0]) if dequantize is not None else None
            if dequantize is not None and dequantize.op_type == "DequantizeLinear" and quantize is not None and \
                    quantize.op_type == "QuantizeLinear":
                node.input[i] = quantize.input[0]
    for graph in list(graphs(twin.graph)):
        kept = [n for n in graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")]
        del graph.node[:]
        graph.node.extend(kept)
    twin.graph.initializer.extend(added.values())
    column_to_row_shuffles(twin, convs)
    drop_unused_initializers(twin)
    return Int8Twin(twin, convs, mac_fraction(twin))


def mac_fraction(twin: onnx.ModelProto) -> float:
    """The share of the convolution MACs on the calibrated path (``If``: its then-branch) that read INT8 weights,
    from the layer shapes of one probe run."""
    sites = [s for s in int8_graph.layers(twin) if s.on_path]
    channels = twin.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    probe = np.random.default_rng(0).random((1, channels, PROBE, PROBE), np.float32)
    names = sorted({s.activation for s in sites} | {s.output for s in sites})
    shapes = {name: value.shape for name, value in next(int8_calibration.tensor_runs(twin, names, probe)).items()}
    weights = {w.name: w.dims for w in twin.graph.initializer}
    macs = {s: int8_graph.layer_macs(s, weights[s.weight], shapes[s.activation], shapes[s.output]) for s in sites}
    return sum(m for s, m in macs.items() if s.weight.endswith(".twin")) / sum(macs.values())


def column_to_row_shuffles(twin: onnx.ModelProto, convs: list[Int8Conv]) -> None:
    """Each ``DepthToSpace`` in DCR order after a convolution (the sub-pixel form's) in CRD order, ncnn's
    ``PixelShuffle``, by reordering the convolution's output channels: CRD channel ``c·s² + b`` is DCR channel
    ``b·C + c`` (pnnx has no ncnn layer for DCR)."""
    graph = twin.graph
    producer = {o: n for n in graph.node for o in n.output}
    initializers = {t.name: t for t in graph.initializer}
    for node in graph.node:
        mode = next((a for a in node.attribute if a.name == "mode"), None)
        conv = producer.get(node.input[0])
        if node.op_type != "DepthToSpace" or mode is None or mode.s != b"DCR" or conv is None or conv.op_type != "Conv":
            continue
        blocks = next(a.i for a in node.attribute if a.name == "blocksize") ** 2
        weight = numpy_helper.to_array(initializers[conv.input[1]])
        channels = weight.shape[0] // blocks
        order = np.array([b * channels + c for c in range(channels) for b in range(blocks)])
        for name in conv.input[1:]:
            initializers[name].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(initializers[name])[order], name))
        for int8 in (c for c in convs if c.weight_name == conv.input[1]):
            int8.codes, int8.weight_scale = int8.codes[order], int8.weight_scale[order]
        mode.s = b"CRD"


def _raw(count: int) -> int:
    return 4 * count


def _tagged(weights: bytes, offset: int, count: int) -> int:
    """Bytes of a tagged weight blob at ``offset`` (tag, data, padding to 4 bytes)."""
    tag = struct.unpack_from("<I", weights, offset)[0]
    size = {FP32_TAG: 4 * count, FP16_TAG: 2 * count, INT8_TAG: count}.get(tag)
    if size is None:
        raise SrDeployError(f"an ncnn weight blob has the unknown tag {tag:#x}")
    return 4 + -(-size // 4) * 4


def weight_spans(layers: list[NcnnLayer], weights: bytes) -> dict[str, list[tuple[int, int]]]:
    """Per layer name: the (offset, length) of each of its blobs in the ``.bin``, in order."""
    spans, offset = {}, 0
    for layer in layers:
        p = lambda key, default=0: int(float(layer.params.get(key, default)))  # noqa: E731
        if layer.kind in WEIGHTLESS:
            continue
        if layer.kind in ("Convolution", "Deconvolution", "InnerProduct"):
            size_key, bias_key = ("6", "5") if layer.kind != "InnerProduct" else ("2", "1")
            blobs = [_tagged(weights, offset, p(size_key))]
            blobs += [_raw(p("0"))] if p(bias_key) else []
            if layer.kind != "Deconvolution" and p("8"):
                blobs += [_raw(p("0")), _raw(1)] + ([_raw(1)] if p("8") > 100 else [])
        elif layer.kind == "PReLU":
            blobs = [_raw(p("0"))]
        elif layer.kind == "MemoryData":
            blobs = [_raw(int(np.prod([d for d in (p("0"), p("1"), p("11"), p("2")) if d]) or 1))]
        else:
            raise SrDeployError(f"srdeploy cannot lay out the weights of ncnn's {layer.kind} layer for INT8")
        spans[layer.name] = []
        for length in blobs:
            spans[layer.name].append((offset, length))
            offset += length
    if offset != len(weights):
        raise SrDeployError(f"the ncnn weights are {len(weights)} bytes, their layers {offset}: not pnnx's layout")
    return spans


def _blob_values(param: bytes, weights: bytes, source: str, probe: np.ndarray, names: list[str]) -> dict:
    """ncnn's FP32 values of the blobs ``names`` on ``probe`` (C×H×W)."""
    import ncnn

    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "m.param").write_bytes(param)
        (Path(scratch) / "m.bin").write_bytes(weights)
        net = ncnn.Net()
        net.opt.use_bf16_storage = net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = False
        net.opt.use_fp16_packed = False
        net.load_param(str(Path(scratch) / "m.param"))
        net.load_model(str(Path(scratch) / "m.bin"))
        values = {}
        with net.create_extractor() as extractor:
            extractor.input(source, ncnn.Mat(probe).clone())
            for name in names:
                status, mat = extractor.extract(name)
                values[name] = np.array(mat, dtype=np.float32) if status == 0 else None
    return values


def _tensor_values(proto: onnx.ModelProto, probe: np.ndarray, names: set[str]) -> dict[str, np.ndarray]:
    """ONNX Runtime's values of the tensors ``names`` (those this graph computes) on ``probe`` (1×C×H×W)."""
    from ..onnx.onnx_export import cpu_session

    graph = onnx.ModelProto.FromString(proto.SerializeToString())
    present = {o for n in graph.graph.node for o in n.output} | {i.name for i in graph.graph.input}
    wanted = sorted(names & present - {o.name for o in graph.graph.output})
    graph.graph.output.extend(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in wanted)
    session = cpu_session(graph)
    found = session.run(None, {graph.graph.input[0].name: probe})
    return {o.name: v for o, v in zip(graph.graph.output, found) if o.name in names}


def quantize_graph(proto: onnx.ModelProto, convs: list[Int8Conv], param: bytes, weights: bytes, source: str
                   ) -> tuple[bytes, bytes, int]:
    """One converted graph's ``.param``/``.bin`` with its INT8 convolutions (of ``convs``) in ncnn's INT8 layout;
    ``proto``: its ONNX graph (the twin, or one of its gate parts), ``source``: its input blob. Returns the new files
    and how many convolutions became INT8."""
    layers = read_param(param.decode())
    spans = weight_spans(layers, weights)
    initializers = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    by_key = {(c.input, c.weight_name): c for c in convs}
    # every convolution of the graph: (input tensor, float weight, its INT8 numbers or None when it stays float)
    sites = [(n.input[0], initializers[n.input[1]], by_key[(n.input[0], n.input[1])] if n.input[1].endswith(".twin")
              else None) for n in proto.graph.node if n.op_type == "Conv" and n.input[1] in initializers]
    candidates: dict[str, list] = {}
    for layer in (l for l in layers if l.kind == "Convolution"):
        offset, length = spans[layer.name][0]
        if struct.unpack_from("<I", weights, offset)[0] != FP32_TAG:
            raise SrDeployError("the twin graph's ncnn weights are not FP32: pnnx was asked for fp16=0")
        found = np.frombuffer(weights, np.float32, count=(length - 4) // 4, offset=offset + 4)
        candidates[layer.name] = [s for s in sites if s[1].size == found.size and np.array_equal(s[1].ravel(), found)]
    # the same weights read twice (a shared weight, equal mean shifts): told apart by the input, computed
    outcome = lambda site: None if site[2] is None else (site[2].input_scale, site[2].codes.tobytes())  # noqa: E731
    ambiguous = [n for n, c in candidates.items() if len({outcome(s) for s in c}) > 1]
    if ambiguous:
        shape = [int(d.dim_value) or PROBE for d in proto.graph.input[0].type.tensor_type.shape.dim]
        probe = np.random.default_rng(0).random([1, *shape[1:]], np.float32)
        by_layer = {l.name: l for l in layers}
        blobs = _blob_values(param, weights, source, probe[0], [by_layer[n].bottoms[0] for n in ambiguous])
        tensors = _tensor_values(proto, probe, {s[0] for n in ambiguous for s in candidates[n]})
        for name in ambiguous:
            blob = blobs[by_layer[name].bottoms[0]]
            candidates[name] = [s for s in candidates[name] if blob is not None and tensors[s[0]][0].shape == blob.shape
                                and np.abs(tensors[s[0]][0] - blob).max() <= MATCH_RTOL * max(1.0, np.abs(blob).max())]
            if len({outcome(s) for s in candidates[name]}) != 1:
                raise SrDeployError(f"ncnn layer {name} matches no single convolution of the ONNX graph by its input: "
                                    "this is a bug, please report it; export --precision fp16 meanwhile")
    missing = sum(s[2] is not None for s in sites) - sum(bool(c) and c[0][2] is not None for c in candidates.values())
    if missing:
        raise SrDeployError(f"{missing} INT8 convolution(s) of the ONNX graph have no ncnn layer: this is a bug, "
                            "please report it; export --precision fp16 meanwhile")
    int8 = {name: c[0][2] for name, c in candidates.items() if c and c[0][2] is not None}
    requantized = requantize(layers, int8)
    lines = param.decode().splitlines()
    pieces, cursor = [], 0
    for layer in (l for l in layers if l.name in int8):
        conv = int8[layer.name]
        lines[layer.line] += " 8=102" if layer.name in requantized else " 8=2"
        offset, length = spans[layer.name][0]
        codes = conv.codes.tobytes()
        blob = struct.pack("<I", INT8_TAG) + codes + bytes(-len(codes) % 4)
        end = spans[layer.name][-1][0] + spans[layer.name][-1][1]
        scales = (1.0 / conv.weight_scale).astype("<f4").tobytes() + struct.pack("<f", 1.0 / conv.input_scale)
        if layer.name in requantized:
            scales += struct.pack("<f", 1.0 / requantized[layer.name].input_scale)
        pieces += [weights[cursor:offset], blob, weights[offset + length:end], scales]
        cursor = end
    pieces.append(weights[cursor:])
    return ("\n".join(lines) + "\n").encode(), b"".join(pieces), len(int8)


def requantize(layers: list[NcnnLayer], int8: dict[str, Int8Conv]) -> dict[str, Int8Conv]:
    """INT8 convolutions whose output only INT8 convolutions read (directly, or all through one ``Split``), each with
    the convolution whose input scale its output takes: ncnn then writes int8 between them (``int8_scale_term``
    + 100), which is what the next one would quantize to. ``ncnn2int8``'s ``fuse_requantize`` rule."""
    def first_reader(blob: str, after: int, kinds: tuple[str, ...]) -> NcnnLayer | None:
        return next((l for l in layers[after + 1:] if l.kind in kinds and l.bottoms == [blob]), None)

    fused = {}
    for index, layer in enumerate(layers):
        if layer.name not in int8:
            continue
        reader = first_reader(layer.tops[0], index, ("Convolution",))
        if reader is not None:
            if reader.name in int8:
                fused[layer.name] = int8[reader.name]
            continue
        split = first_reader(layer.tops[0], index, ("Split",))
        if split is None:
            continue
        readers = [first_reader(top, layers.index(split), ("Convolution",)) for top in split.tops]
        if all(r is not None and r.name in int8 for r in readers) and \
                len({int8[r.name].input_scale for r in readers}) == 1:
            fused[layer.name] = int8[readers[0].name]
    return fused
