"""The exact export rewrite (shared upsampler branches merged) and the ONNX MAC counter that sees it."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from srdeploy import models
from srdeploy.benchmarks.complexity import measure
from srdeploy.export.onnx import fp16
from srdeploy.export.onnx.onnx_macs import onnx_macs_per_output_pixel
from srdeploy.export.onnx.graph_rewrite import merge_shared_branches, walk
from srdeploy.export.onnx.onnx_export import proto_infer, to_onnx
from tests.conftest import weights


def two_branch_graph(stages: int, shared: bool = True, expose_inner: bool = False) -> onnx.ModelProto:
    """``Add(up(a), up(b))`` where up = ``stages`` × (3×3 Conv 4→16 with bias, DepthToSpace 2); a and b are
    computed from one input so the graph has one input, as the exported networks do."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["x"], ["neg"]),
             helper.make_node("Relu", ["neg"], ["b"])]
    inits = []
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6 * 2**stages, 7 * 2**stages])]
    ends = []
    for branch, start in (("l", "a"), ("r", "b")):
        current = start
        for i in range(stages):
            w, bias = f"w{i}" if shared else f"w{i}{branch}", f"b{i}" if shared else f"b{i}{branch}"
            if w not in {t.name for t in inits}:
                inits += [numpy_helper.from_array(rng.standard_normal((16, 4, 3, 3)).astype(np.float32), w),
                          numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), bias)]
            nodes += [helper.make_node("Conv", [current, w, bias], [f"c{i}{branch}"], pads=[1, 1, 1, 1]),
                      helper.make_node("DepthToSpace", [f"c{i}{branch}"], [f"d{i}{branch}"], blocksize=2, mode="CRD")]
            current = f"d{i}{branch}"
        ends.append(current)
    nodes.append(helper.make_node("Add", ends, ["y"]))
    if expose_inner:
        outputs.append(helper.make_tensor_value_info("c0l", TensorProto.FLOAT, [1, 16, 6, 7]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 7])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def ops(proto: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in proto.graph.node]


@pytest.mark.parametrize("stages", [1, 2])
def test_shared_chain_is_computed_once_with_the_same_output(stages):
    original = two_branch_graph(stages)
    merged = two_branch_graph(stages)
    assert merge_shared_branches(merged) == 1
    onnx.checker.check_model(merged, full_check=True)
    assert ops(merged).count("Conv") == stages and ops(merged).count("DepthToSpace") == stages
    x = np.random.default_rng(1).standard_normal((1, 4, 6, 7)).astype(np.float32)
    expected, got = proto_infer(original)(x), proto_infer(merged)(x)
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


def test_different_weights_or_a_reused_inner_tensor_are_left_alone():
    for proto in (two_branch_graph(1, shared=False), two_branch_graph(1, expose_inner=True)):
        before = ops(proto)
        assert merge_shared_branches(proto) == 0
        assert ops(proto) == before


@pytest.fixture(scope="module")
def lesrcnn_x2():
    model = models.load("lesrcnn", 2, weights("lesrcnn_x2.pth"))
    return model, to_onnx(model)


def test_lesrcnn_export_runs_its_upsampler_once(lesrcnn_x2):
    model, proto = lesrcnn_x2
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["srdeploy.rewrites"]) == {"merge_shared_branches": 1, "tensorrt86_gate": 0}
    assert ops(proto).count("DepthToSpace") == 1
    # one 3×3 conv 64 → 256 at LR resolution less: 64·256·9 MACs per LR pixel, /4 per output pixel
    assert onnx_macs_per_output_pixel(proto, 2) == measure("lesrcnn", 2).macs_per_output_pixel - 64 * 256 * 9 / 4
    assert float(meta["srdeploy.macs_per_output_pixel"]) == onnx_macs_per_output_pixel(proto, 2)  # bench reads it


def test_onnx_mac_count_matches_the_pytorch_count_where_nothing_is_rewritten():
    proto = to_onnx(models.load("fsrcnn", 2, weights("fsrcnn_x2.pth")))
    assert onnx_macs_per_output_pixel(proto, 2) == measure("fsrcnn", 2).macs_per_output_pixel == 3116


def test_dsrnet_gate_reads_as_written_on_tensorrt_8_6(tmp_path):
    """TensorRT 8.6's parser ignores opset-18 ReduceMean's axes input and reduces only FP32/FP16: the exported
    DSRNet gate averages with GlobalAveragePool and takes its all/any over FLOAT, and computes what PyTorch does
    on a batch whose images pick different branches."""
    import torch

    from tests.test_models import split_gate_checkpoint

    batch, path = split_gate_checkpoint(tmp_path)
    model = models.load("dsrnet", 2, path)
    proto = to_onnx(model)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["srdeploy.rewrites"])["tensorrt86_gate"] == 3
    nodes = [node for _, node, _ in walk(proto.graph)]
    assert [n.op_type for n in nodes].count("GlobalAveragePool") == 1
    assert not any(n.op_type == "ReduceMean" for n in nodes)
    reduces = [n for n in nodes if n.op_type in ("ReduceMin", "ReduceMax")]
    assert len(reduces) == 2
    producers = {o: n for n in nodes for o in n.output}
    for reduce in reduces:
        cast = producers[reduce.input[0]]
        assert cast.op_type == "Cast" and cast.attribute[0].i == TensorProto.FLOAT
    onnx.checker.check_model(proto, full_check=True)
    with torch.no_grad():
        expected = model(batch).numpy()
    assert np.abs(proto_infer(proto)(batch.numpy()) - expected).max() <= 1e-4 * np.abs(expected).max()
    half = fp16.to_fp16(proto, [])  # the FP16 export converts this graph: the FLOAT all/any must survive it
    assert np.abs(proto_infer(half)(batch.numpy()) - expected).max() <= 1e-2 * np.abs(expected).max()
