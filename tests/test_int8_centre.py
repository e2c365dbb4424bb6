"""Centred activations (``export.int8_centre``): exact in float, and they give post-ReLU tensors the
negative half of the int8 codes."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from srdeploy import models
from srdeploy.calib.data import CropSpec, lr_hr_crops, network_batch, source_images
from srdeploy.export.quant import int8_calibration, int8_centre, int8_checker, int8_graph, int8_qdq
from srdeploy.export.onnx.onnx_export import cpu_session, run_proto, to_onnx
from tests.conftest import weights


def _conv_relu_conv(first: np.ndarray, second: np.ndarray) -> onnx.ModelProto:
    """x → Conv(3×3, padded) → Relu → Conv(3×3, padded) → y."""
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1])]
    inits = [numpy_helper.from_array(first, "w1"), numpy_helper.from_array(np.full(len(first), 0.1, np.float32), "b1"),
             numpy_helper.from_array(second, "w2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, first.shape[1], None, None])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def test_post_relu_tensors_are_centred_and_symmetric_ones_are_not():
    rng = np.random.default_rng(0)
    proto = _conv_relu_conv(rng.normal(size=(4, 2, 3, 3)).astype(np.float32), rng.normal(size=(3, 4, 3, 3)).astype(np.float32))
    z = rng.normal(size=(1, 2, 9, 11)).astype(np.float32)
    x = np.concatenate([z, -z])  # symmetric around 0: no gain from centring
    centres = int8_centre.choose_centres(proto, x)
    assert set(centres) == {"r"}
    relu = _outputs(proto, ["r"], x)[0]
    low, high = relu.min(axis=(0, 2, 3)), relu.max(axis=(0, 2, 3))
    assert low.min() == 0  # a hard floor: each channel's int8 range starts there
    np.testing.assert_allclose(centres["r"], low + (high - low).max() / 2, rtol=1e-6)
    centred = int8_centre.centre(proto, centres)
    reference = run_proto(proto, x)
    assert np.abs(run_proto(centred, x) - reference).max() <= 1e-5 * np.abs(reference).max()
    assert int8_centre.centred_keys(proto, centres) == {"w2@r": "w2@r.centred_pad1_1_1_1"}
    assert {s.key for s in int8_graph.layers(centred)} == {"w1@x", "w2@r.centred_pad1_1_1_1"}


def _outputs(proto: onnx.ModelProto, names: list[str], x: np.ndarray, dtype: int = TensorProto.FLOAT) -> list[np.ndarray]:
    """The values of inner tensors ``names`` for input ``x``."""
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_tensor_value_info(name, dtype, None) for name in names)
    session = cpu_session(probe)
    return session.run(None, {session.get_inputs()[0].name: x})


@pytest.mark.parametrize("name,scale", [("fsrcnn", 2), ("dsrnet", 2)])
def test_centring_is_exact_on_official_checkpoints(name, scale):
    """FSRCNN: padded convolutions and the ConvTranspose correction; DSRNet: convolutions inside the
    gate's If branches. Same output on photo crops and on an odd size the crops never had."""
    model = models.load(name, scale, weights(f"{name}_x{scale}.pth"))
    proto = to_onnx(model)
    batch = network_batch(lr_hr_crops(source_images(), scale, CropSpec(size=32, count=4)), model.info.colour)
    centres = int8_centre.choose_centres(proto, batch)
    assert len(centres) >= 0.75 * len({s.activation for s in int8_graph.layers(proto)})
    centred = int8_centre.centre(proto, centres)
    odd = np.random.default_rng(1).random((1, batch.shape[1], 23, 17), dtype=np.float32)
    for x in (batch, odd):
        reference = run_proto(proto, x)
        assert np.abs(run_proto(centred, x) - reference).max() <= 1e-5 * np.abs(reference).max()


def test_centred_int8_uses_both_signs_of_the_codes():
    """LESRCNN ×2: its post-ReLU tensors, quantized without centring, never take a negative code; centred,
    every centred INT8 input does."""
    model = models.load("lesrcnn", 2, weights("lesrcnn_x2.pth"))
    proto = to_onnx(model)
    batch = network_batch(lr_hr_crops(source_images(), 2, CropSpec(size=32, count=4)), "rgb")
    centres = int8_centre.choose_centres(proto, batch)
    centred = int8_centre.centre(proto, centres)
    stats = int8_calibration.activation_histograms(centred, batch)
    amax = {k: int8_calibration.activation_amax(v["histogram"], v["peak"], "minmax") for k, v in stats.items() if k != "macs"}
    quantized = int8_qdq.quantize(centred, amax, {s.key for s in int8_graph.layers(centred)})
    assert int8_checker.check_qdq(quantized) == []
    codes = [n.output[0] for n in quantized.graph.node if n.op_type == "QuantizeLinear" and ".centred" in n.input[0]]
    assert len(codes) >= 20
    assert all(v.min() < -64 and v.max() > 64 for v in _outputs(quantized, codes, batch, TensorProto.INT8))
    uncentred = int8_qdq.quantize(proto, {s.activation: 1.0 for s in int8_graph.layers(proto)}, {s.key for s in int8_graph.layers(proto)})
    relu_codes = [n.output[0] for n in uncentred.graph.node if n.op_type == "QuantizeLinear" and n.input[0].startswith("relu")]
    assert relu_codes and all(v.min() >= 0 for v in _outputs(uncentred, relu_codes, batch, TensorProto.INT8))
