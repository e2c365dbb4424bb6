"""The Q/DQ rules checker (export/quant/int8_checker.py) on hand-built graphs, independent of the writer: for
each rule one graph just inside and one just outside, each changing one thing, and the exact problems named.
Fast: the mutation run of the checker uses these tests."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from srdeploy.export.quant.int8_checker import check_qdq

ZEROS = np.int8(0)


def graph(weight_codes: np.ndarray | None = None, weight_scale=None, weight_zero=None, axis: int | None = 0,
          act_scale=np.float32(0.02), act_zero=ZEROS, float_weight: np.ndarray | None = None,
          weight_q_scale=None, extra_attributes: dict | None = None, op: str = "Conv"):
    """x → Q → DQ → ``op`` with its weight either stored int8 behind a DequantizeLinear ("W") or float behind
    a QuantizeLinear and a DequantizeLinear ("WQ", then "W"). ``None`` for a zero point: the input is left out."""
    channels = (weight_codes if float_weight is None else float_weight).shape
    inits, nodes = [], []

    def init(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def qdq_inputs(prefix: str, scale, zero) -> list[str]:
        names = [init(f"{prefix}.scale", scale)]
        return names + ([init(f"{prefix}.zero", zero)] if zero is not None else [])

    nodes.append(helper.make_node("QuantizeLinear", ["x", *qdq_inputs("x", act_scale, act_zero)], ["xq"], name="XQ"))
    nodes.append(helper.make_node("DequantizeLinear", ["xq", *qdq_inputs("x", act_scale, act_zero)], ["xd"],
                                  name="XDQ"))
    attributes = dict(extra_attributes or {})
    if axis is not None:
        attributes["axis"] = axis
    if float_weight is None:
        source = init("w.int8", weight_codes)
    else:
        source = "w.q"
        q_scale = weight_scale if weight_q_scale is None else weight_q_scale
        nodes.append(helper.make_node("QuantizeLinear", [init("w", float_weight), *qdq_inputs("wq", q_scale, ZEROS
                                      if weight_zero is None else weight_zero)], [source], name="WQ", **attributes))
    zero = np.zeros(np.shape(weight_scale), np.int8) if weight_zero is None else weight_zero
    nodes.append(helper.make_node("DequantizeLinear", [source, *qdq_inputs("w", weight_scale, zero)], ["wd"], name="W",
                                  **attributes))
    nodes.append(helper.make_node(op, ["xd", "wd"], ["y"], name="conv"))
    return helper.make_model(helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels[1], 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits))


def codes(*shape: int, low: int = -127) -> np.ndarray:
    """Every code from -127 to 127 in turn, the first one ``low``."""
    values = np.arange(np.prod(shape)) % 255 - 127
    values[0] = low
    return values.reshape(shape).astype(np.int8)


def scales(n: int) -> np.ndarray:
    return np.linspace(0.01, 0.02, n, dtype=np.float32)


def test_a_well_formed_graph_passes():
    assert check_qdq(graph(codes(4, 3, 3, 3), scales(4))) == []
    assert check_qdq(graph(float_weight=np.ones((4, 3, 3, 3), np.float32), weight_scale=scales(4))) == []
    assert check_qdq(graph(codes(3, 2, 3, 3), scales(2), axis=1, op="ConvTranspose")) == []


@pytest.mark.parametrize("zero, ok", [(ZEROS, True), (np.uint8(0), False), (np.int8(1), False), (np.int8(-1), False),
                                      (None, False), (np.zeros(2, np.int8), True)])
def test_activation_zero_point_int8_zeros(zero, ok):
    problems = check_qdq(graph(codes(4, 3, 3, 3), scales(4), act_zero=zero))
    expected = [] if ok else [f"{n}: zero point must be an int8 initializer of zeros" for n in ("XQ", "XDQ")]
    # a zero-point vector on an activation is its own problem (its scale stays scalar): zeros only here
    assert problems == expected


@pytest.mark.parametrize("scale, ok", [(np.float32(0.02), True), (np.array([0.02], np.float32), False),
                                       (np.array([[0.02]], np.float32), False)])
def test_activation_scale_is_one_scalar(scale, ok):
    problems = check_qdq(graph(codes(4, 3, 3, 3), scales(4), act_scale=scale))
    assert problems == ([] if ok else [f"{n}: activation scale must be one scalar" for n in ("XQ", "XDQ")])


def test_every_node_is_checked_after_an_activation():
    """The weight's node comes after the activation's: a bad weight must still be found."""
    problems = check_qdq(graph(codes(4, 3, 3, 3), scales(3)))
    assert problems == ["W: weights need one positive scale per output channel"]


PER_CHANNEL = "weights need one positive scale per output channel"


@pytest.mark.parametrize("shape, scale, axis, op, ok", [
    ((4, 3, 3, 3), scales(4), 0, "Conv", True),
    ((4, 3, 3, 3), scales(3), 0, "Conv", False),  # one scale short
    ((4, 3, 3, 3), scales(5), 0, "Conv", False),  # one too many
    ((4, 3, 3, 3), scales(4).reshape(4, 1), 0, "Conv", False),  # not a vector
    ((4, 3, 3, 3), scales(4), None, "Conv", False),  # a vector without its axis
    ((4, 3, 3, 3), np.float32(0.01), None, "Conv", False),  # one scale for four output channels
    ((1, 3, 3, 3), np.float32(0.01), None, "Conv", True),  # one output channel: a scalar is per channel
    ((3, 1, 3, 3), np.float32(0.01), None, "ConvTranspose", True),  # ConvTranspose: output channels on axis 1
    ((1, 3, 3, 3), scales(2), None, "Conv", False),  # a vector without axis on a one-channel weight
    ((3, 2, 3, 3), scales(2), 1, "ConvTranspose", True),
    ((3, 2, 3, 3), scales(3), 1, "ConvTranspose", False),
    ((300, 2, 1, 1), scales(300), 0, "Conv", True),  # lengths compared as numbers, also above 256
    ((4, 3, 3, 3), np.array([0.01, 0.01, 0.0, 0.01], np.float32), 0, "Conv", False),  # a zero scale
    ((4, 3, 3, 3), np.array([0.01, 0.01, -1e-6, 0.01], np.float32), 0, "Conv", False),  # a negative one
    ((1, 3, 3, 3), np.float32(-0.01), None, "Conv", False),
])
def test_weight_scales_one_positive_per_output_channel(shape, scale, axis, op, ok):
    problems = check_qdq(graph(codes(*shape), scale, axis=axis, op=op))
    assert problems == ([] if ok else [f"W: {PER_CHANNEL}"])


def test_the_axis_is_read_from_its_own_attribute():
    """Another attribute before ``axis`` (``block_size``, opset 21) must not be taken for it."""
    model = graph(codes(3, 2, 3, 3), scales(2), axis=1, op="ConvTranspose", extra_attributes={"block_size": 0})
    attributes = model.graph.node[2].attribute
    ordered = sorted(attributes, key=lambda a: a.name != "block_size")  # make_node sorts them by name
    del attributes[:]
    attributes.extend(ordered)
    assert [a.name for a in model.graph.node[2].attribute] == ["block_size", "axis"]
    assert check_qdq(model) == []


def test_a_float_weight_behind_a_quantize_is_a_weight():
    """QuantizeLinear(float weight) → DequantizeLinear: the DequantizeLinear is held to the weight rules through
    the QuantizeLinear, not to the activation rule."""
    weight = np.ones((4, 3, 3, 3), np.float32)
    bad = check_qdq(graph(float_weight=weight, weight_scale=scales(3), weight_q_scale=scales(4)))
    assert bad == [f"W: {PER_CHANNEL}"]
    both = check_qdq(graph(float_weight=weight, weight_scale=scales(3)))
    assert both == [f"WQ: {PER_CHANNEL}", f"W: {PER_CHANNEL}"]


@pytest.mark.parametrize("low, ok", [(-127, True), (-128, False)])
def test_weight_codes_symmetric(low, ok):
    problems = check_qdq(graph(codes(4, 3, 3, 3, low=low), scales(4)))
    assert problems == ([] if ok else ["W: weight code -128 breaks symmetry"])


@pytest.mark.parametrize("zero, ok", [(np.zeros(4, np.int8), True), (np.array([0, 0, 1, 0], np.int8), False),
                                      (np.zeros(4, np.uint8), False)])
def test_weight_zero_points_int8_zeros(zero, ok):
    problems = check_qdq(graph(codes(4, 3, 3, 3), scales(4), weight_zero=zero))
    assert problems == ([] if ok else ["W: zero point must be an int8 initializer of zeros"])


def test_activations_after_other_nodes_reading_constants():
    """x → Mul(c, x) → Q/DQ → Sub(c, ·) → Q/DQ: activations whose producers read an initializer are still
    activations (only a QuantizeLinear of an initializer makes a weight), and a problem after a non-Q/DQ node
    is still found."""
    def model(last_scale):
        inits = [numpy_helper.from_array(np.asarray(v), n) for n, v in (
            ("c", np.float32(0.5)), ("s", np.float32(0.02)), ("z", ZEROS), ("s2", last_scale))]
        nodes = [helper.make_node("Mul", ["c", "x"], ["m"], name="mul"),
                 helper.make_node("QuantizeLinear", ["m", "s", "z"], ["mq"], name="MQ"),
                 helper.make_node("DequantizeLinear", ["mq", "s", "z"], ["md"], name="MDQ"),
                 helper.make_node("Sub", ["c", "md"], ["d"], name="sub"),
                 helper.make_node("QuantizeLinear", ["d", "s2", "z"], ["dq"], name="DQ1"),
                 helper.make_node("DequantizeLinear", ["dq", "s2", "z"], ["y"], name="DQ2")]
        return helper.make_model(helper.make_graph(
            nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits))

    assert check_qdq(model(np.float32(0.02))) == []
    assert check_qdq(model(np.array([0.02, 0.03], np.float32))) == [
        "DQ1: activation scale must be one scalar", "DQ2: activation scale must be one scalar"]


def test_a_scalar_scale_with_an_axis_on_several_channels_is_refused():
    assert check_qdq(graph(codes(4, 3, 3, 3), np.float32(0.01), axis=0)) == [f"W: {PER_CHANNEL}"]


@pytest.mark.parametrize("low", [-100, 0, 127])
def test_weight_codes_need_not_reach_the_limit(low):
    model = graph(np.full((4, 3, 3, 3), low, np.int8), scales(4))
    assert check_qdq(model) == []


def test_the_code_rule_is_for_stored_codes_not_float_weights():
    """A float weight behind a QuantizeLinear may hold any value (-200 at scale 2 is code -100)."""
    weight = np.full((4, 3, 3, 3), -200.0, np.float32)
    assert check_qdq(graph(float_weight=weight, weight_scale=np.full(4, 2.0, np.float32))) == []
