"""The INT8 IR's channel pair order (``export/openvino/pair_order``): the optimum pairing, an exact rewrite pushed
into the producing layers, left alone where it cannot be local, and what removes OpenVINO's int16 saturation."""
from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from srdeploy.calib.data import CropSpec, lr_hr_crops, network_batch, source_images
from srdeploy.export.onnx.onnx_export import cpu_session
from srdeploy.export.openvino.pair_order import cheapest_pairing, pair_order_form
from srdeploy.runtime import cpu

STEP = 1 / 64  # activation quantization step: codes up to 127 cover [0, 2)


def _brute_force(cost: np.ndarray) -> float:
    """The least total cost over every perfect pairing (one channel alone when the count is odd)."""
    channels = list(range(len(cost)))
    best = np.inf
    for order in itertools.permutations(channels):
        if any(order[i] > order[i + 1] for i in range(0, len(order) - 1, 2)):
            continue
        best = min(best, sum(cost[order[i], order[i + 1]] for i in range(0, len(order) - 1, 2)))
    return best


@pytest.mark.parametrize("channels", [6, 7])
def test_cheapest_pairing_is_the_optimum(channels):
    rng = np.random.default_rng(channels)
    cost = rng.random((channels, channels)) * (rng.random((channels, channels)) < 0.6)
    cost = np.triu(cost, 1) + np.triu(cost, 1).T
    order = cheapest_pairing(cost)
    assert sorted(order) == list(range(channels))
    total = sum(cost[order[i], order[i + 1]] for i in range(0, channels - 1, 2))
    assert total == pytest.approx(_brute_force(cost))


def _network(second_reader: bool = False) -> onnx.ModelProto:
    """Y image → Conv(6) → PRelu → Split[4, 2]: the 4 channels int8 (Q/DQ) into an INT8 conv, the 2 in float, summed.
    The INT8 conv's weights make channels 0 and 1 (positive on a photo) a pair that overflows int16 on
    ``vpmaddubsw`` (both near +127), while 0/1 with 2/3 (small, opposite sign) never do."""
    rng = np.random.default_rng(0)
    first = np.abs(rng.normal(0, 0.15, (6, 1, 3, 3))).astype(np.float32)  # positive: positive photo → positive maps
    codes = np.zeros((3, 4, 3, 3), np.int8)
    codes[:, 0], codes[:, 1] = 127, 120
    codes[:, 2], codes[:, 3] = -40, 30
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["maps"], pads=[1, 1, 1, 1]),
        helper.make_node("PRelu", ["maps", "slope"], ["act"]),
        helper.make_node("Split", ["act", "sizes"], ["int8_part", "float_part"], axis=1),
        helper.make_node("QuantizeLinear", ["int8_part", "step", "zero"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "step", "zero"], ["dq"]),
        helper.make_node("DequantizeLinear", ["codes", "unit"], ["w2"], axis=0),
        helper.make_node("Conv", ["dq", "w2", "b2"], ["y_int8"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["float_part", "w3"], ["y_float"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["y_int8", "y_float"], ["y"]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3, None, None])]
    if second_reader:  # the int8 part is also read elsewhere: reordering it is no longer local
        outputs.append(helper.make_tensor_value_info("int8_part", TensorProto.FLOAT, [None, 4, None, None]))
    initializers = [
        numpy_helper.from_array(first, "w1"), numpy_helper.from_array(np.linspace(-0.1, 0.1, 6, dtype=np.float32), "b1"),
        numpy_helper.from_array(np.linspace(0.1, 0.3, 6, dtype=np.float32).reshape(6, 1, 1), "slope"),
        numpy_helper.from_array(np.array([4, 2], np.int64), "sizes"),
        numpy_helper.from_array(np.float32(STEP), "step"), numpy_helper.from_array(np.int8(0), "zero"),
        numpy_helper.from_array(codes, "codes"), numpy_helper.from_array(np.full(3, 1e-3, np.float32), "unit"),
        numpy_helper.from_array(np.float32([0.1, -0.2, 0.3]), "b2"),
        numpy_helper.from_array(rng.normal(0, 0.1, (3, 2, 3, 3)).astype(np.float32), "w3"),
    ]
    graph = helper.make_graph(nodes, "pairs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, None, None])],
                              outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def crops():
    """Calibration crops (real photos), and a held-out one to compare outputs on."""
    calibration = network_batch(lr_hr_crops(source_images(None), 2, CropSpec(size=32, count=4)), "y")
    held_out = network_batch(lr_hr_crops(source_images(None, "validation"), 2, CropSpec(size=48, count=1)), "y")
    return calibration, held_out


def _run(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return cpu_session(proto).run(["y"], {"x": x})[0]


def _overflowing_pairs(proto: onnx.ModelProto, x: np.ndarray) -> int:
    """How many (position, output, tap, channel pair 2k/2k+1) int16 sums of u8 codes (int8 + 128) × weight codes
    leave [−32768, 32767]: what ``vpmaddubsw`` saturates, counted independently of the module."""
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    probe.graph.output.append(helper.make_tensor_value_info("int8_part", TensorProto.FLOAT, None))
    values = cpu_session(probe).run(["int8_part"], {"x": x})[0]
    u = np.clip(np.rint(values / STEP), -128, 127).astype(np.int64) + 128
    codes = numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == "codes")).astype(np.int64)
    padded = np.pad(u, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=128)
    count = 0
    for i, j in itertools.product(range(3), range(3)):
        window = padded[:, :, i : i + u.shape[2], j : j + u.shape[3]]
        for a in range(0, u.shape[1] - 1, 2):
            pair = window[:, None, a] * codes[None, :, a, i, j, None, None] + window[:, None, a + 1] * codes[None, :, a + 1, i, j, None, None]
            count += int(((pair > 32767) | (pair < -32768)).sum())
    return count


def test_reordering_is_exact_and_removes_every_overflowing_pair(crops):
    calibration, held_out = crops
    source = _network()
    rewritten, count = pair_order_form(source, calibration)
    assert count == 1
    onnx.checker.check_model(rewritten)
    want, got = _run(source, held_out), _run(rewritten, held_out)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    assert _overflowing_pairs(source, held_out) > 1000
    assert _overflowing_pairs(rewritten, held_out) == 0
    names = {t.name: numpy_helper.to_array(t) for t in rewritten.graph.initializer}
    assert names["slope"].reshape(-1)[4:].tolist() == pytest.approx([0.26, 0.3])  # the float part keeps its order


def test_a_tensor_read_elsewhere_is_left_alone(crops):
    source = _network(second_reader=True)
    rewritten, count = pair_order_form(source, crops[0])
    assert count == 0
    assert rewritten.SerializeToString() == source.SerializeToString()


def test_openvino_computes_the_reordered_graph_without_saturation(crops):
    """On a CPU without VNNI OpenVINO saturates the source's pairs and computes the reordered graph as ONNX Runtime
    does; with VNNI or AMX (int32 sums) both match."""
    ov = pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install -e '.[dev]' installs it")
    calibration, held_out = crops
    source = _network()
    rewritten, _ = pair_order_form(source, calibration)

    def error(proto: onnx.ModelProto) -> float:
        core = ov.Core()
        compiled = core.compile_model(core.read_model(proto.SerializeToString()), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        want = _run(proto, held_out)
        return float(np.abs(compiled(held_out)[0] - want).max() / np.abs(want).max())

    assert error(rewritten) <= 1e-4
    if cpu.int8_dot() == "pairwise-int16":
        assert error(source) > 0.05
    else:
        assert error(source) <= 1e-4


def _float_activations(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` with every activation read past its Q/DQ pair (weights keep their int8 codes): what the IR computes
    before activation rounding, where a reordering must change nothing but float summation order."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    constants = {t.name for t in out.graph.initializer}
    producer = {o: n for n in out.graph.node for o in n.output}
    for node in out.graph.node:
        for i, name in enumerate(node.input):
            dequantize = producer.get(name)
            if dequantize is not None and dequantize.op_type == "DequantizeLinear" and dequantize.input[0] not in constants:
                node.input[i] = producer[dequantize.input[0]].input[0]
    return out


def test_fsrcnn_int8_ir_reordered_exactly(fsrcnn_int8, crops):
    """FSRCNN ×2's INT8 IR graph: tensors behind int8 + float channel-split convolutions summed by ``Add``, PReLU
    slopes, channel ``Split`` and the sub-pixel deconvolution, reordered with the same outputs (activations in float)."""
    from srdeploy.export.openvino import openvino_export
    from srdeploy.export.openvino.openvino_export import ir_graph
    from srdeploy.runtime.precision import Precision

    calibration, held_out = crops
    source, _ = ir_graph(fsrcnn_int8[0], Precision.INT8, calibration)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(openvino_export, "pair_order_form", lambda graph, crops: (graph, 0))
        unordered, _ = ir_graph(fsrcnn_int8[0], Precision.INT8, calibration)
    rewritten, count = pair_order_form(unordered, calibration)
    assert count >= 3
    assert rewritten.SerializeToString() == source.SerializeToString()  # what ir_graph returns
    run = lambda proto: cpu_session(_float_activations(proto)).run(None, {proto.graph.input[0].name: held_out})[0]  # noqa: E731
    want, got = run(unordered), run(rewritten)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
