"""The OpenVINO IR's sub-pixel form of a strided ConvTranspose (export/subpixel.py): the same outputs, float
and int8 weights, borders and odd sizes included; shapes it must leave alone; OpenVINO then runs no
ConvolutionBackpropData."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from srdeploy.export.subpixel import subpixel_form
from tests.conftest import weights


def _deconvolution(c_in: int, c_out: int, stride: int, kernel: int, pad: int, extra: int, int8: bool,
                   per_channel: bool = True) -> onnx.ModelProto:
    rng = np.random.default_rng(stride * 100 + kernel)
    w = rng.normal(size=(c_in, c_out, kernel, kernel)).astype(np.float32)
    nodes, inits = [], [numpy_helper.from_array(rng.normal(size=c_out).astype(np.float32), "b")]
    if int8:
        scale = (np.abs(w).max(axis=(0, 2, 3)) / 127).astype(np.float32) if per_channel else np.float32(np.abs(w).max() / 127)
        codes = np.clip(np.rint(w / (scale.reshape(1, -1, 1, 1) if per_channel else scale)), -127, 127).astype(np.int8)
        inits += [numpy_helper.from_array(codes, "w_codes"), numpy_helper.from_array(np.asarray(scale), "w_scale"),
                  numpy_helper.from_array(np.zeros_like(codes, shape=np.shape(scale)), "w_zero")]
        nodes.append(helper.make_node("DequantizeLinear", ["w_codes", "w_scale", "w_zero"], ["w"], axis=1))
    else:
        inits.append(numpy_helper.from_array(w, "w"))
    nodes.append(helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], name="up", strides=[stride, stride],
                                  kernel_shape=[kernel, kernel], pads=[pad] * 4, output_padding=[extra, extra]))
    graph = helper.make_graph(nodes, "deconv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c_out, "H", "W"])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def _run(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # Q/DQ computed as written
    return ort.InferenceSession(proto.SerializeToString(), options).run(None, {"x": x})[0]


@pytest.mark.parametrize("stride,kernel,pad,extra", [(2, 9, 4, 1), (3, 7, 2, 0), (4, 8, 2, 0), (2, 3, 1, 1), (2, 4, 1, 0)])
@pytest.mark.parametrize("int8", [False, True])
def test_sub_pixel_form_computes_the_transposed_convolution(stride, kernel, pad, extra, int8):
    source = _deconvolution(5, 3, stride, kernel, pad, extra, int8)
    rewritten, count = subpixel_form(source)
    onnx.checker.check_model(rewritten)
    assert count == 1 and [n.op_type for n in rewritten.graph.node][-2:] == ["Conv", "DepthToSpace"]
    assert "ConvTranspose" not in {n.op_type for n in rewritten.graph.node}
    for h, w in ((1, 1), (7, 11), (16, 5)):
        x = np.random.default_rng(h * w).normal(size=(1, 5, h, w)).astype(np.float32)
        want = _run(source, x)
        assert want.shape == (1, 3, stride * h, stride * w)
        assert np.abs(_run(rewritten, x) - want).max() <= 1e-5 * np.abs(want).max()
    if int8:  # the codes moved as they are: every one of them, and nothing but zeros added
        codes = {t.name: numpy_helper.to_array(t) for t in rewritten.graph.initializer if t.data_type == TensorProto.INT8}
        moved = codes["w_codes.subpixel"]
        original = numpy_helper.to_array(next(t for t in source.graph.initializer if t.name == "w_codes"))
        assert sorted(moved[moved != 0].tolist()) == sorted(original[original != 0].tolist())


def test_one_scale_for_all_channels_is_kept():
    rewritten, count = subpixel_form(_deconvolution(4, 2, 2, 9, 4, 1, int8=True, per_channel=False))
    x = np.random.default_rng(0).normal(size=(1, 4, 6, 9)).astype(np.float32)
    assert count == 1
    want = _run(_deconvolution(4, 2, 2, 9, 4, 1, int8=True, per_channel=False), x)
    assert np.abs(_run(rewritten, x) - want).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.parametrize("stride,kernel,pad,extra", [(2, 9, 4, 0), (2, 3, 0, 0), (1, 3, 1, 0)])
def test_a_transposed_convolution_that_is_not_exactly_s_times_is_left_alone(stride, kernel, pad, extra):
    source = _deconvolution(2, 1, stride, kernel, pad, extra, int8=False)
    rewritten, count = subpixel_form(source)
    assert count == 0 and rewritten.SerializeToString() == source.SerializeToString()


def test_openvino_runs_fsrcnn_without_a_transposed_convolution():
    ov = pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install openvino")
    from srdeploy import models
    from srdeploy.export.onnx.onnx_export import to_onnx

    source = to_onnx(models.load("fsrcnn", 2, weights("fsrcnn_x2.pth")))
    rewritten, count = subpixel_form(source)
    compiled = ov.Core().compile_model(ov.Core().read_model(rewritten.SerializeToString()), "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32"})
    executed = {op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ops()}
    assert count == 1 and "Deconvolution" not in executed and "ConvolutionBackpropData" not in executed
    x = np.random.default_rng(0).random((1, 1, 33, 47), dtype=np.float32)
    want = ort.InferenceSession(source.SerializeToString()).run(None, {"lr": x})[0]
    got = compiled.create_infer_request().infer([x])[0]
    assert np.abs(got - want).max() <= 1e-4


def test_a_graph_without_one_is_returned_as_it_is_if_branches_included():
    """DSRNet's INT8 graph: weights dequantized in the main graph and read only inside its gate's If branches."""
    then_branch = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["t"], kernel_shape=[1, 1])], "then", [],
                                    [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    else_branch = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [],
                                    [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("DequantizeLinear", ["codes", "scale"], ["w"]),
             helper.make_node("If", ["c"], ["y"], then_branch=then_branch, else_branch=else_branch)]
    graph = helper.make_graph(nodes, "gated", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3]),
                                              helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.ones((2, 2, 1, 1), np.int8), "codes"),
                               numpy_helper.from_array(np.float32(0.5), "scale")])
    source = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    rewritten, count = subpixel_form(source)
    assert count == 0 and rewritten.SerializeToString() == source.SerializeToString()
