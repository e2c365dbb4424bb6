"""INT8 Q/DQ export: TensorRT's placement rules, calibration, equalization, GPTQ, the search and the gate."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from srdeploy import models
from srdeploy.calib.data import CropSpec, lr_hr_crops, network_batch, source_images
from srdeploy.export.quant import int8_calibration, int8_centre, int8_channels, int8_checker, int8_equalization, int8_gptq, int8_graph, int8_qdq, int8_search
from srdeploy.export.onnx import graph_rewrite
from srdeploy.export.onnx.onnx_export import cpu_session, run_proto, save, to_onnx
from srdeploy.export.precision import check_accuracy
from srdeploy.models.registry import architecture
from srdeploy.runtime.compare import TOLERANCES, compare
from srdeploy.runtime.errors import SrDeployError
from srdeploy.runtime.sessions.onnxruntime import OnnxSession
from tests.conftest import REPO, weights


def _conv_graph(op: str, weight: np.ndarray, **attributes) -> onnx.ModelProto:
    """x → one Conv/ConvTranspose (named weight ``w``) → y, with symbolic spatial size."""
    node = helper.make_node(op, ["x", "w"], ["y"], name="layer", **attributes)
    channels = weight.shape[0 if op == "ConvTranspose" else 1]
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, None, None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def _qdq_violations_walked(proto: onnx.ModelProto, kept_float: set[str]) -> list[str]:
    """An independent walk of TensorRT's rules: every INT8 conv reads DequantizeLinear outputs for its
    activation and its weight; every zero point is int8 0; weight scales are one per output channel.
    The float ConvTranspose that centring adds (``int8_centre``) must read one channel."""
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    producers = {o: n for _, n, _ in graph_rewrite.walk(proto.graph) for o in n.output}
    problems = []
    for _, node, _ in graph_rewrite.walk(proto.graph):
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zero = inits[node.input[2]]
            if zero.dtype != np.int8 or zero.any():
                problems.append(f"{node.name}: zero point {zero.dtype} {zero.ravel()[:3]}")
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        x, w = (producers.get(name) for name in node.input[:2])
        if x is None or w is None or x.op_type != "DequantizeLinear" or w.op_type != "DequantizeLinear":
            key = f"{node.input[1]}@{node.input[0]}"
            if node.input[1].endswith(int8_graph.CENTRING_KERNEL):
                if inits[node.input[1]].shape[0] != 1:
                    problems.append(f"{key}: a centring correction with more than one input channel")
                continue
            if key not in kept_float:
                problems.append(f"{key} is neither INT8 nor kept in float")
            continue
        codes, scale = inits[w.input[0]], inits[w.input[1]]
        out_axis = 0 if node.op_type == "Conv" else 1
        axis = next((a.i for a in w.attribute if a.name == "axis"), None)
        per_channel = axis == out_axis and scale.shape == (codes.shape[out_axis],)
        if codes.dtype != np.int8 or not (per_channel or (codes.shape[out_axis] == 1 and scale.ndim == 0)):
            problems.append(f"{node.name}: weights not per-output-channel int8")
        if inits[x.input[1]].ndim != 0 or producers[x.input[0]].op_type != "QuantizeLinear":
            problems.append(f"{node.name}: activation not per-tensor Q/DQ")
    return problems


def test_conv_transpose_becomes_a_stride_one_conv():
    """The GPTQ statistics of a ConvTranspose read the zero-upsampled input with the flipped kernel:
    that convolution must equal ONNX Runtime's ConvTranspose (FSRCNN's ×3 deconvolution shape)."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(4, 2, 9, 9)).astype(np.float32)
    attributes = {"strides": [3, 3], "pads": [4, 4, 4, 4], "output_padding": [2, 2]}
    proto = _conv_graph("ConvTranspose", weight, **attributes)
    x = rng.random((1, 4, 5, 7), dtype=np.float32)
    expected = run_proto(proto, x)
    padded = int8_gptq._as_conv_input(x, proto.graph.node[0], (9, 9))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (9, 9), axis=(2, 3))
    actual = np.einsum("ncijkl,ockl->noij", windows, int8_gptq.conv_weight(weight, "ConvTranspose"))
    assert actual.shape == expected.shape == (1, 2, 15, 21)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


def test_weights_are_symmetric_per_channel():
    weight = np.random.default_rng(1).normal(size=(6, 3, 3, 3)).astype(np.float32) * np.arange(1, 7)[:, None, None, None]
    codes, scale = int8_qdq.quantize_weight(weight, 0)
    assert codes.dtype == np.int8 and scale.shape == (6,)
    assert (np.abs(codes).reshape(6, -1).max(axis=1) == 127).all() and codes.min() >= -127
    assert np.abs(codes * scale[:, None, None, None] - weight).max() <= scale.max() / 2 * 1.0001


def test_calibration_methods_clip_outliers_differently():
    rng = np.random.default_rng(2)
    values = np.abs(np.concatenate([rng.normal(size=200_000), [40.0]]))
    histogram = np.histogram(values, int8_calibration.BINS, (0, values.max()))[0].tolist()
    peak = float(values.max())
    minmax, percentile, mse = (int8_calibration.activation_amax(histogram, peak, m) for m in int8_calibration.METHODS)
    assert minmax == peak
    assert 3.0 < percentile < 5.0  # 99.99 % of |N(0, 1)| lies below 3.9

    def error(amax: float) -> float:  # mean squared error of symmetric int8 codes on the raw values
        step = amax / 127
        return float(np.mean((values - np.minimum(np.round(values / step), 127) * step) ** 2))

    assert percentile < mse < minmax and error(mse) < min(error(minmax), error(percentile))
    with pytest.raises(ValueError, match="calibration method"):
        int8_calibration.activation_amax(histogram, peak, "kl")


def test_gptq_lowers_the_layer_output_error():
    """‖(W − Ŵ) X‖² = tr(E H Eᵀ): GPTQ's codes beat rounding to nearest on correlated inputs."""
    rng = np.random.default_rng(3)
    weight = rng.normal(size=(8, 4, 3, 3)).astype(np.float32)
    mixing = rng.normal(size=(36, 36))
    patches = rng.normal(size=(5000, 36)) @ mixing  # correlated, like neighbouring pixels
    hessian = patches.T @ patches

    def error(codes: np.ndarray, scale: np.ndarray) -> float:
        e = (weight - codes * scale[:, None, None, None]).reshape(8, -1)
        return float(np.trace(e @ hessian @ e.T))

    nearest = error(*int8_qdq.quantize_weight(weight, 0))
    gptq = error(*int8_gptq.gptq_weight(weight, "Conv", hessian))
    assert gptq < 0.7 * nearest  # measured 0.55


def test_check_qdq_flags_what_tensorrt_rejects():
    weight = np.random.default_rng(4).normal(size=(3, 2, 3, 3)).astype(np.float32)
    proto = _conv_graph("Conv", weight, pads=[1, 1, 1, 1])
    quantized = int8_qdq.quantize(proto, {"x": 1.0}, {"w@x"})
    assert int8_checker.check_qdq(quantized) == [] and _qdq_violations_walked(quantized, set()) == []
    x = np.random.default_rng(5).random((1, 2, 6, 6), dtype=np.float32)
    assert compare(run_proto(quantized, x), run_proto(proto, x)).psnr > 30
    zero = next(i for i in quantized.graph.initializer if i.name == "x.int8_zero")
    zero.CopyFrom(numpy_helper.from_array(np.array(3, np.int8), "x.int8_zero"))
    scale = next(i for i in quantized.graph.initializer if i.name == "w.int8_scale")
    scale.CopyFrom(numpy_helper.from_array(np.array([0.1, 0.1], np.float32), "w.int8_scale"))
    problems = int8_checker.check_qdq(quantized)
    assert any("x.Q" in p and "zero point" in p for p in problems)
    assert any("w.DQ" in p and "per output channel" in p for p in problems)


def test_residual_addition_reads_the_quantized_input():
    """TensorRT fuses conv + residual Add into one INT8 kernel when the residual input is quantized too:
    with ``residuals`` the Add reads the Q/DQ copy the tensor already has for the convolution."""
    weight = np.random.default_rng(6).normal(size=(2, 2, 3, 3)).astype(np.float32)
    proto = _conv_graph("Conv", weight, pads=[1, 1, 1, 1])
    proto.graph.node.append(helper.make_node("Add", ["y", "x"], ["z"], name="residual"))
    proto.graph.output[0].name = "z"
    fused = int8_qdq.quantize(proto, {"x": 1.0}, {"w@x"}, residuals=True)
    plain = int8_qdq.quantize(proto, {"x": 1.0}, {"w@x"}, residuals=False)
    assert [list(n.input) for n in fused.graph.node if n.op_type == "Add"] == [["y", "x.dq"]]
    assert [list(n.input) for n in plain.graph.node if n.op_type == "Add"] == [["y", "x"]]
    x = np.random.default_rng(7).random((1, 2, 5, 5), dtype=np.float32)
    assert compare(run_proto(fused, x), run_proto(proto, x)).psnr > 30 and int8_checker.check_qdq(fused) == []


@pytest.fixture(scope="module")
def fsrcnn_batch():
    return network_batch(lr_hr_crops(source_images(), 2, CropSpec(size=32, count=8)), "y")


@pytest.fixture(scope="module")
def fsrcnn_proto():
    return to_onnx(models.load("fsrcnn", 2, weights("fsrcnn_x2.pth")))


def test_same_seed_same_scales(fsrcnn_proto):
    def scales(seed: int) -> dict[str, float]:
        batch = network_batch(lr_hr_crops(source_images(), 2, CropSpec(size=32, count=6, seed=seed)), "y")
        stats = int8_calibration.activation_histograms(fsrcnn_proto, batch)
        return {k: int8_calibration.activation_amax(v["histogram"], v["peak"], "mse") for k, v in stats.items() if k != "macs"}

    first, again, other = scales(0), scales(0), scales(1)
    assert first == again and first != other and len(first) == 8


def test_macs_are_counted_per_image(fsrcnn_proto, fsrcnn_batch):
    macs = int8_calibration.activation_histograms(fsrcnn_proto, fsrcnn_batch)["macs"]
    assert macs["feature_extraction.0.weight@lr"] == 32 * 32 * 56 * 1 * 5 * 5
    assert macs["map.0.weight@prelu_1"] == 32 * 32 * 12 * 12 * 3 * 3
    assert macs["deconv.weight@prelu_6"] == 32 * 32 * 56 * 1 * 9 * 9  # every input pixel × kernel


def test_equalization_is_exact_and_evens_the_channels(fsrcnn_proto, fsrcnn_batch):
    chains = int8_equalization.equalization_chains(fsrcnn_proto)
    assert len(chains) == 7  # every conv → PReLU → conv/deconv pair of FSRCNN
    equalized = int8_equalization.equalize(fsrcnn_proto, int8_equalization.equalization_peaks(fsrcnn_proto, fsrcnn_batch), 1.0)
    reference = run_proto(fsrcnn_proto, fsrcnn_batch)
    assert np.abs(run_proto(equalized, fsrcnn_batch) - reference).max() <= 1e-5 * np.abs(reference).max()
    before = int8_calibration.channel_peaks(fsrcnn_proto, [t for _, t, _ in chains], fsrcnn_batch)
    after = int8_calibration.channel_peaks(equalized, [t for _, t, _ in chains], fsrcnn_batch)
    spread = lambda p: max(v.max() / v[v > 0].min() for v in p.values())  # noqa: E731
    assert spread(before) > 5 and 1.0 <= spread(after) <= spread(before) / 4 * 1.0001  # capped at 4×


def test_if_branches_are_calibrated_and_quantized():
    """DSRNet's gate is an ONNX If: its branch convolutions get statistics (through ``flatten``) and
    Q/DQ inside the subgraphs, and ONNX Runtime runs the result."""
    proto = to_onnx(models.load("dsrnet", 2, weights("dsrnet_x2.pth")))
    batch = network_batch(lr_hr_crops(source_images(), 2, CropSpec(size=32, count=4)), "rgb")
    flat = int8_graph.flatten(proto)
    assert not any(n.op_type == "If" for n in flat.graph.node)
    np.testing.assert_allclose(run_proto(flat, batch), run_proto(proto, batch), atol=1e-5)  # photos take branch 1
    stats = int8_calibration.activation_histograms(proto, batch)
    sites = int8_graph.layers(proto)
    assert {s.weight for s in sites if not s.on_path} >= {f"branch0.{i}.0.weight" for i in range(4)}
    amax = {k: int8_calibration.activation_amax(v["histogram"], v["peak"], "minmax") for k, v in stats.items() if k != "macs"}
    quantized = int8_qdq.quantize(proto, amax, {s.key for s in sites})
    assert int8_checker.check_qdq(quantized) == [] and _qdq_violations_walked(quantized, set()) == []
    in_branches = [n for _, n, on_path in graph_rewrite.walk(quantized.graph) if n.op_type == "QuantizeLinear" and not on_path]
    assert in_branches
    assert compare(run_proto(quantized, batch), run_proto(proto, batch)).psnr > 30


@pytest.mark.parametrize("name,scale", [("lesrcnn", 2), ("lesrcnn", 3), ("lesrcnn", 4), ("fsrcnn", 2), ("fsrcnn", 3),
                                        ("fsrcnn", 4), ("dsrnet", 2)])
def test_every_official_int8_graph_follows_tensorrt_rules(name, scale):
    """The graph shapes the search can emit for each official INT8 checkpoint (equalized, centred, one
    channel of every chain split off to float, every other layer INT8) pass the independent walk and
    ``check_qdq``, and stay close to FP32 on photo crops."""
    proto = to_onnx(models.load(name, scale, weights(f"{name}_x{scale}.pth")))
    arch = architecture(name)
    batch = network_batch(lr_hr_crops(source_images(), scale, CropSpec(size=24, count=2)), arch.colour)
    graph = int8_equalization.equalize(proto, int8_equalization.equalization_peaks(proto, batch), 1.0)
    graph, float_keys = int8_channels.split_channels(graph, {t: [0] for t in int8_channels.chain_tensors(graph)})
    centres = int8_centre.choose_centres(graph, batch)
    stats = int8_calibration.activation_histograms(int8_centre.centre(graph, centres), batch)
    amax = {k: int8_calibration.activation_amax(v["histogram"], v["peak"], "minmax") for k, v in stats.items() if k != "macs"}
    renamed = int8_centre.centred_keys(graph, centres)
    macs = {s.key: stats["macs"][renamed.get(s.key, s.key)] for s in int8_graph.layers(graph)}
    quantized = int8_search.Variant(graph, centres, 1.0, "nearest", amax, None, macs).quantized(float_keys)
    assert int8_checker.check_qdq(quantized) == [] and _qdq_violations_walked(quantized, float_keys) == []
    assert sum(n.op_type == "QuantizeLinear" for _, n, _ in graph_rewrite.walk(quantized.graph)) > len(float_keys)
    assert compare(run_proto(quantized, batch), run_proto(proto, batch)).psnr > 30


def test_int8_artifact_follows_tensorrt_rules_and_records_its_cost(fsrcnn_int8, tmp_path):
    proto, report = fsrcnn_int8
    assert _qdq_violations_walked(proto, set(report.kept_float)) == []
    assert report.int8_mac_fraction >= 0.8 and report.drop_db <= 0.1
    assert report.int8["rounding"] in ("nearest", "gptq") and len(report.int8["variants_db"]) == 4
    # whole layers in float cannot meet 0.1 dB on FSRCNN ×2 within 20 % of the MACs: channels can
    split = report.int8["float_channels"]
    assert split and {f"{t}.float_channels" for t in split} <= {k.split("@")[1] for k in report.kept_float}
    assert report.int8["centred"]  # FSRCNN's PReLU outputs are lopsided: centred for INT8
    path = save(proto, tmp_path / "fsrcnn_int8.onnx")
    session = OnnxSession(path)
    assert session.metadata["precision"] == "int8"
    assert float(session.metadata["int8_mac_fraction"]) == pytest.approx(report.int8_mac_fraction, abs=1e-4)
    # parity against PyTorch FP32 on held-out photo crops at every probe shape, INT8 tolerance
    result = subprocess.run([sys.executable, "cli.py", "parity", str(path), "--json"], cwd=REPO, capture_output=True, text=True)
    parity = json.loads(result.stdout)
    assert result.returncode == 0 and parity["passed"] and parity["tolerance"] == vars(TOLERANCES["int8"])
    assert min(c["psnr"] for c in parity["cases"].values()) > 38


def test_int8_gate_failure_says_what_it_reached(fsrcnn_int8):
    """FSRCNN ×2 meets 0.1 dB only with channels in float (about 0.07 dB held out): 0.03 is out of reach.
    (The CLI's refusal, exit 2 with nothing written, is tested on FP16 in test_precision.py.)"""
    report = fsrcnn_int8[1]
    with pytest.raises(SrDeployError, match=rf"^INT8 fsrcnn ×2 loses {report.drop_db:.3f} dB on the held-out photos "
                                            r"with 80% of MACs in INT8 \(36\.48 vs 36\.54 dB FP32\), over the 0\.03 dB "
                                            r"limit: nothing written; raise --max-psnr-drop to accept it$"):
        check_accuracy(report, 0.03, "fsrcnn ×2")
    check_accuracy(report, report.drop_db, "fsrcnn ×2")  # at the limit: passes


def test_int8_session_is_quiet_and_cpu_runnable(fsrcnn_int8):
    session = cpu_session(fsrcnn_int8[0])
    out = session.run(None, {"lr": np.zeros((1, 1, 9, 11), np.float32)})[0]
    assert out.shape == (1, 1, 18, 22) and np.isfinite(out).all()


def _dense_gptq(weight: np.ndarray, op: str, hessian: np.ndarray, damping: float = 0.01) -> np.ndarray:
    """GPTQ over the whole H at once, as written before it was split by components: the reference."""
    as_conv = int8_gptq.conv_weight(weight, op)
    _, scale = int8_qdq.quantize_weight(as_conv, 0)
    w = as_conv.reshape(len(as_conv), -1).astype(np.float64)
    h = hessian.copy()
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damping * np.mean(np.diag(h)) * np.eye(len(h))
    upper = np.linalg.cholesky(np.linalg.inv(h)).T
    codes = np.zeros_like(w)
    for j in range(w.shape[1]):
        codes[:, j] = np.clip(np.round(w[:, j] / scale), -int8_graph.QMAX, int8_graph.QMAX)
        w[:, j + 1:] -= ((w[:, j] - codes[:, j] * scale) / upper[j, j])[:, None] * upper[j, j + 1:][None, :]
    return int8_gptq.conv_weight(codes.astype(np.int8).reshape(as_conv.shape), op)


def test_gptq_hessians_and_codes_equal_the_dense_computation(fsrcnn_proto):
    """The phase blocks of a stride-2 ConvTranspose's H and GPTQ per connected component are the dense
    computation, done on a sixteenth of the numbers: checked on every window of a small crop."""
    crop = np.random.default_rng(0).random((1, 1, 12, 14), dtype=np.float32)
    noise = {s.activation: 1e-3 for s in int8_graph.layers(fsrcnn_proto)}
    hessians = int8_gptq.input_hessians(fsrcnn_proto, crop, noise, samples=10**9)  # every window, in any order
    deconv = next(n for _, n, _ in graph_rewrite.walk(fsrcnn_proto.graph) if n.op_type == "ConvTranspose")
    weight = next(numpy_helper.to_array(w) for w in fsrcnn_proto.graph.initializer if w.name == deconv.input[1])
    x = next(int8_calibration.tensor_runs(fsrcnn_proto, [deconv.input[0]], crop))[deconv.input[0]]
    windows = np.lib.stride_tricks.sliding_window_view(int8_gptq._as_conv_input(x, deconv, weight.shape[2:]),
                                                       weight.shape[2:], axis=(2, 3))
    patches = windows.transpose(0, 2, 3, 1, 4, 5).reshape(-1, weight.shape[0] * weight.shape[2] * weight.shape[3])
    dense = patches.T.astype(np.float64) @ patches + len(patches) * 1e-3 * np.eye(patches.shape[1])
    blocks = hessians[deconv.input[1]]
    assert np.abs(blocks - dense).max() <= 1e-9 * np.abs(dense).max()
    assert (blocks == 0).mean() > 0.7  # the four phases never meet: H is block-diagonal up to a permutation
    codes, _ = int8_gptq.gptq_weight(weight, "ConvTranspose", blocks)
    assert np.array_equal(codes, _dense_gptq(weight, "ConvTranspose", blocks))


def test_int8_fp16_float_parts_measured_against_the_gate(fsrcnn_int8):
    """The FP16-float-parts form TensorRT builds from: FP16 scales at opset 19, the pre-flight's nodes still
    FP32, FP32 I/O; its recorded drop re-measured here from the two graphs, and the decision at the limit."""
    from srdeploy.runtime.quality import crop_psnr
    from srdeploy.export.onnx.fp16 import int8_with_fp16_float
    from srdeploy.export.onnx.onnx_export import proto_infer
    from srdeploy.export.accuracy_gate import DEFAULT_MAX_DROP
    from srdeploy.export.precision import VALIDATION_SPEC

    proto, report = fsrcnn_int8
    measured = report.fp16_float
    candidate = int8_with_fp16_float(proto, measured["keep_fp32"])
    assert candidate.opset_import[0].version == 19 and proto.opset_import[0].version == 18
    types = {t.name: t.data_type for t in candidate.graph.initializer}
    kept = set(measured["keep_fp32"])
    scales = [types[n.input[1]] for n in candidate.graph.node if n.op_type == "DequantizeLinear" and n.name not in kept]
    assert scales and set(scales) == {onnx.TensorProto.FLOAT16}
    assert candidate.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    model = models.load("fsrcnn", 2, weights("fsrcnn_x2.pth"))
    validation = lr_hr_crops(source_images(split="validation"), 2, VALIDATION_SPEC)
    score = lambda graph: crop_psnr(proto_infer(graph), validation, 2, "y", architecture("fsrcnn").eval_rounding)  # noqa: E731
    drop = score(to_onnx(model)) - score(candidate)
    assert abs(drop - measured["drop_db_onnxruntime"]) <= 1e-3
    assert measured["passed"] == (drop <= DEFAULT_MAX_DROP["int8"])


@pytest.mark.parametrize("rule, edit, message", [
    ("weight code -127", lambda codes, scale: (np.where(codes == codes.min(), -127, codes), scale), None),
    ("weight code -128", lambda codes, scale: (np.where(codes == codes.min(), -128, codes), scale), "weight code -128"),
    ("tiny positive scale", lambda codes, scale: (codes, np.where(np.arange(len(scale)) == 0, 1e-30, scale)), None),
    ("zero scale", lambda codes, scale: (codes, np.where(np.arange(len(scale)) == 0, 0.0, scale)), "positive scale"),
    ("negative scale", lambda codes, scale: (codes, -scale), "positive scale"),
])
def test_check_qdq_weight_rules_at_their_limits(rule, edit, message):
    """One rule crossed at a time, against the boundary value that is still legal."""
    weight = np.random.default_rng(4).normal(size=(3, 2, 3, 3)).astype(np.float32)
    quantized = int8_qdq.quantize(_conv_graph("Conv", weight, pads=[1, 1, 1, 1]), {"x": 1.0}, {"w@x"})
    inits = {i.name: i for i in quantized.graph.initializer}
    codes, scale = (numpy_helper.to_array(inits[name]) for name in ("w.int8", "w.int8_scale"))
    new_codes, new_scale = edit(codes, scale)
    inits["w.int8"].CopyFrom(numpy_helper.from_array(new_codes.astype(np.int8), "w.int8"))
    inits["w.int8_scale"].CopyFrom(numpy_helper.from_array(new_scale.astype(np.float32), "w.int8_scale"))
    problems = int8_checker.check_qdq(quantized)
    assert problems == [] if message is None else (len(problems) == 1 and message in problems[0]), (rule, problems)


def test_a_search_result_is_stored_and_taken_by_the_next_export(fsrcnn_int8, monkeypatch, tmp_path):
    """The search's result (graph, plan, variant with its weight codes) comes back from disk equal, the next
    search with the same graph, crops, limit and method takes it without searching, and a damaged store is
    searched again. (FSRCNN ×2 from the CLI: 35 s, then 6 s with the same bytes; docs/int8.md.)"""
    from types import SimpleNamespace

    from srdeploy.export.precision import search_int8
    from srdeploy.export.quant import int8_store

    monkeypatch.setenv("SRDEPLOY_CACHE_DIR", str(tmp_path / "checkpoints"))
    proto, report = fsrcnn_int8
    codes = {"w": (np.arange(-4, 5, dtype=np.int8).reshape(3, 3, 1, 1), np.array([0.5, 0.25, 0.125], np.float32))}
    plan = int8_search.Int8Plan("minmax", 0.5, "gptq", ["t"], ["w@t"], {"t": [0, 2]}, 0.81, 0.02, {"0.5/gptq": 0.03},
                                {"w@t": 0.01})
    variant = int8_search.Variant(proto, {"t": [0.1, 0.2]}, 0.5, "gptq", {"t": 1.5}, codes, {"w@t": 1234})
    key = {"graph": "g", "data": "d", "limit": 0.1, "method": "minmax"}
    assert int8_store.load(key) is None
    int8_store.save(key, proto, plan, variant)
    graph, plan_back, variant_back = int8_store.load(key)
    assert graph.SerializeToString() == proto.SerializeToString() and plan_back == plan
    assert variant_back.graph.SerializeToString() == proto.SerializeToString()
    assert (variant_back.centres, variant_back.alpha, variant_back.rounding, variant_back.amax, variant_back.macs) == (
        variant.centres, variant.alpha, variant.rounding, variant.amax, variant.macs)
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for name in codes
               for a, b in zip(codes[name], variant_back.codes[name]))
    assert int8_store.load({**key, "limit": 0.2}) is None  # another limit: searched again

    searched = []
    monkeypatch.setattr(int8_search, "plan", lambda *args: searched.append(1) or (proto, plan, variant))
    info = SimpleNamespace(scale=2, colour="y", eval_rounding="round")
    data_key = {"data": "d"}
    for _ in range(2):
        found, _, _ = search_int8(proto, [], np.zeros((1, 1, 8, 8), np.float32), data_key, info, 0.1, "minmax", False,
                                  lambda message: None)
        assert found.SerializeToString() == proto.SerializeToString()
    assert searched == [1]
    for store in (tmp_path / "int8_search").iterdir():
        (store / "codes.npz").write_bytes(b"damaged")
    search_int8(proto, [], np.zeros((1, 1, 8, 8), np.float32), data_key, info, 0.1, "minmax", False, lambda m: None)
    assert searched == [1, 1]
