"""Centred INT8 tensors rewritten as u8 with a zero point for OpenVINO (export/openvino/zero_point.py): the same
codes and outputs as the centred graph, borders included, without its Pad and Sub."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from srdeploy.export.openvino.zero_point import zero_point_form
from srdeploy.export.quant import int8_calibration, int8_centre, int8_graph, int8_qdq


def _float_graph(rng: np.random.Generator) -> onnx.ModelProto:
    """x → Conv 3×3 → Relu → Conv 3×3 (padded) → Relu → Conv 1×1 → y: two post-ReLU tensors, one read padded."""
    shapes = {"w1": (8, 2, 3, 3), "w2": (8, 8, 3, 3), "w3": (3, 8, 1, 1)}
    inits = [numpy_helper.from_array((rng.normal(size=s) / np.sqrt(np.prod(s[1:]))).astype(np.float32), n) for n, s in shapes.items()]
    inits += [numpy_helper.from_array((rng.normal(size=s[0]) * 0.1).astype(np.float32), f"b{n[1]}") for n, s in shapes.items()]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h1"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["h2"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["h2"], ["r2"]),
             helper.make_node("Conv", ["r2", "w3", "b3"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2, None, None])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3, None, None])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def run_proto(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """ONNX Runtime with its graph optimizations off: Q/DQ computed as written (by default it fuses u8 Q/DQ
    around a convolution into integer QLinearConv kernels, which round differently)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.fixture(scope="module")
def centred_int8():
    """The float graph through the product's centring and Q/DQ (min/max ranges of ``batch``), and that batch."""
    rng = np.random.default_rng(0)
    proto, batch = _float_graph(rng), rng.normal(size=(4, 2, 9, 11)).astype(np.float32)
    centred = int8_centre.centre(proto, int8_centre.choose_centres(proto, batch))
    stats = int8_calibration.activation_histograms(centred, batch)
    amax = {k: int8_calibration.activation_amax(v["histogram"], v["peak"], "minmax") for k, v in stats.items() if k != "macs"}
    return int8_qdq.quantize(centred, amax, {s.key for s in int8_graph.layers(centred)}), batch


def test_centred_tensors_become_u8_with_zero_point_and_compute_the_same(centred_int8):
    quantized, batch = centred_int8
    assert {n.op_type for n in quantized.graph.node} >= {"Pad", "Sub"}
    rewritten, count = zero_point_form(quantized)
    onnx.checker.check_model(rewritten)
    assert count == 2 and not {"Pad", "Sub"} & {n.op_type for n in rewritten.graph.node}
    inits = {t.name: numpy_helper.to_array(t) for t in rewritten.graph.initializer}
    for tensor in ("r1", "r2"):  # post-ReLU: centre = 127 steps, so zero point 0
        quantize = next(n for n in rewritten.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == tensor)
        zero = inits[quantize.input[2]]
        assert zero.dtype == np.uint8 and zero.shape == () and zero == 0
    convs = {n.input[1].removesuffix(".dq"): n for n in rewritten.graph.node if n.op_type == "Conv"}
    pads = {w: next((a.ints for a in c.attribute if a.name == "pads"), [0] * 4) for w, c in convs.items()}
    assert [list(pads[w]) for w in sorted(pads)] == [[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]]
    reference = run_proto(quantized, batch)  # 9×11: a third of the pixels touch a border
    error = np.abs(run_proto(rewritten, batch) - reference)
    assert error.max() <= 1e-5 * np.abs(reference).max()


def test_the_top_code_is_the_one_difference(centred_int8):
    """The int8 form saturates at m + 127 steps, u8 one step higher: only inputs past the calibrated maximum differ."""
    quantized, batch = centred_int8
    rewritten, _ = zero_point_form(quantized)
    loud = batch * 3
    assert np.abs(run_proto(rewritten, loud) - run_proto(quantized, loud)).max() > 1e-3


def _r2_centre_moved(quantized: onnx.ModelProto, steps: np.ndarray) -> onnx.ModelProto:
    """A copy of ``quantized`` with the centre of ``r2`` (per channel) moved by ``steps`` quantization steps."""
    moved = onnx.ModelProto()
    moved.CopyFrom(quantized)
    inits = {t.name: t for t in moved.graph.initializer}
    sub = next(n for n in moved.graph.node if n.op_type == "Sub" and n.output[0].startswith("r2"))
    quantize = next(n for n in moved.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == sub.output[0])
    step = numpy_helper.to_array(inits[quantize.input[1]])
    centre = numpy_helper.to_array(inits[sub.input[1]]) + step * steps.reshape(1, -1, 1, 1)
    inits[sub.input[1]].CopyFrom(numpy_helper.from_array(centre.astype(np.float32), sub.input[1]))
    return moved


def test_a_centre_off_the_quantization_grid_stays_centred(centred_int8):
    quantized, batch = centred_int8
    shifted = _r2_centre_moved(quantized, np.full(8, 0.3, np.float32))
    rewritten, count = zero_point_form(shifted)
    assert count == 1 and [n.output[0] for n in rewritten.graph.node if n.op_type == "Sub"] == ["r2.centred"]
    error = np.abs(run_proto(rewritten, batch) - run_proto(shifted, batch))
    assert error.max() <= 1e-5 * np.abs(run_proto(shifted, batch)).max()


def test_openvino_runs_the_rewritten_graph_in_u8_without_pad(centred_int8, tmp_path):
    """Compiled by OpenVINO: no Pad, no Subtract left, every convolution in integer kernels. (Outputs are not
    compared here: on CPUs without VNNI OpenVINO's pairwise int16 products saturate on these random weights.)"""
    ov = pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install openvino)")
    quantized, _ = centred_int8
    for graph, pads in ((quantized, True), (zero_point_form(quantized)[0], False)):
        onnx.save(graph, tmp_path / "g.onnx")
        compiled = ov.Core().compile_model(str(tmp_path / "g.onnx"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        layers = [(op.get_rt_info()["layerType"].astype(str), op.get_rt_info()["runtimePrecision"].astype(str))
                  for op in compiled.get_runtime_model().get_ordered_ops()]
        assert ("Pad" in {t for t, _ in layers}) == pads
        convs = [p for t, p in layers if t == "Convolution"]
        assert len(convs) == 3 and set(convs) <= {"u8", "i8"}, layers


def test_centres_whole_steps_apart_get_a_zero_point_per_channel(centred_int8):
    quantized, batch = centred_int8
    moved = _r2_centre_moved(quantized, -np.arange(8, dtype=np.float32))  # 127, 126, … 120 steps
    rewritten, count = zero_point_form(moved)
    assert count == 2
    u8 = {t.name: numpy_helper.to_array(t) for t in rewritten.graph.initializer}
    node = next(n for n in rewritten.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "r2")
    assert u8[node.input[2]].tolist() == list(range(8)) and u8[node.input[1]].shape == (8,)
    assert [(a.name, a.i) for a in node.attribute] == [("axis", 1)]
    quiet = batch * 0.5  # below every channel's top code (the int8 form's is one step lower, as above)
    reference = run_proto(moved, quiet)
    assert np.abs(run_proto(rewritten, quiet) - reference).max() <= 1e-5 * np.abs(reference).max()
