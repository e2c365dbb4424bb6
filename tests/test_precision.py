"""Calibration data, FP16 export (overflow pre-flight, accuracy gate, parity) and the stats cache."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from srdeploy import models
from srdeploy.calib.cache import cached_stats
from srdeploy.calib.data import CropSpec, lr_hr_crops, network_batch, source_images
from srdeploy.export.onnx import fp16
from srdeploy.export.onnx.onnx_export import run_proto, save, to_onnx
from srdeploy.export.precision import export_precision
from srdeploy.runtime import images
from srdeploy.runtime.compare import TOLERANCES, compare
from srdeploy.runtime.errors import SrDeployError
from srdeploy.runtime.sessions.onnxruntime import OnnxSession
from tests.conftest import need_shared, weights


def test_calibration_crops_are_deterministic():
    paths = source_images()
    first = lr_hr_crops(paths, 3, CropSpec(size=32, count=6, seed=7))
    again = lr_hr_crops(paths, 3, CropSpec(size=32, count=6, seed=7))
    other = lr_hr_crops(paths, 3, CropSpec(size=32, count=6, seed=8))
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(first, again))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other))
    assert first[0][0].shape == (32, 32, 3) and first[0][1].shape == (96, 96, 3)
    batch = network_batch(first, "y")
    assert batch.shape == (6, 1, 32, 32) and batch.dtype == np.float32 and 0 <= batch.min() and batch.max() <= 1


def test_validation_split_is_held_out(tmp_path):
    assert not {p.name for p in source_images()} & {p.name for p in source_images(split="validation")}
    for i in range(8):
        images.write_image(tmp_path / f"img{i}.png", np.full((8, 8, 3), i, np.uint8))
    calibration, validation = source_images(tmp_path), source_images(tmp_path, "validation")
    assert [p.name for p in validation] == ["img3.png", "img7.png"] and len(calibration) == 6


def test_stats_cache_computes_once():
    calls = []
    compute = lambda: calls.append(1) or {"peak": 1.5}  # noqa: E731
    key = {"stat": "test", "nonce": str(np.random.default_rng().integers(1 << 62))}
    assert cached_stats(key, compute) == {"peak": 1.5} == cached_stats(key, compute)
    assert len(calls) == 1


@pytest.fixture(scope="module")
def lesrcnn_fp16():
    return export_precision(models.load("lesrcnn", 2, weights("lesrcnn_x2.pth")), "fp16", progress=False)


def test_fp16_artifact_meets_gate_and_parity(lesrcnn_fp16, tmp_path):
    proto, report = lesrcnn_fp16
    assert report.drop_db <= 0.01 and report.kept_float == []
    session = OnnxSession(save(proto, tmp_path / "lesrcnn_fp16.onnx"))
    assert session.metadata["precision"] == "fp16" and float(session.metadata["validation_drop_db"]) <= 0.01
    weights16 = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert len(weights16) >= 26  # every convolution's weights are stored in FP16
    data = np.load(need_shared("fixtures", "reference", "lesrcnn_x2_official.npz"))
    comparison = compare(session.infer(data["input_0"]), data["output_0"])
    assert comparison.violations(TOLERANCES["fp16"]) == [] and comparison.psnr > 70


def test_fp16_io(tmp_path):
    model = models.load("fsrcnn", 2, weights("fsrcnn_x2.pth"))
    proto, _ = export_precision(model, "fp16", fp16_io=True, progress=False)
    session = OnnxSession(save(proto, tmp_path / "io16.onnx"))
    assert session.input.type == "tensor(float16)"
    out = session.infer(np.random.default_rng(0).random((1, 1, 16, 16), dtype=np.float32))
    assert out.dtype == np.float32 and out.shape == (1, 1, 32, 32)


@pytest.mark.filterwarnings("ignore:the float32 number:UserWarning")  # the unguarded conversion clips weights
def test_overflow_preflight_keeps_large_activations_in_fp32(tmp_path):
    """The same function with its first layer scaled ×1e5 (and the next one ÷1e5; PReLU is homogeneous):
    activations pass 65504, the pre-flight keeps those nodes in FP32 and the output stays right;
    converting everything overflows."""
    state = torch.load(weights("fsrcnn_x2.pth"), map_location="cpu", weights_only=True)
    state["first_part.0.weight"] *= 1e5
    state["first_part.0.bias"] *= 1e5
    state["mid_part.0.weight"] /= 1e5
    torch.save(state, tmp_path / "loud.pth")
    proto = to_onnx(models.load("fsrcnn", 2, tmp_path / "loud.pth"))
    batch = network_batch(lr_hr_crops(source_images(), 2, CropSpec(size=32, count=4)), "y")
    peaks = fp16.activation_peaks(proto, batch)
    kept = fp16.overflow_risks(proto, peaks)
    assert max(peaks.values()) > fp16.FP16_MAX and kept
    reference = run_proto(proto, batch)
    guarded = run_proto(fp16.to_fp16(proto, kept), batch)
    naive = run_proto(fp16.to_fp16(proto, []), batch)
    assert np.isfinite(guarded).all() and compare(guarded, reference).psnr > 60
    assert not np.isfinite(naive).all() or compare(naive, reference).psnr < 30


def test_gate_failure_writes_nothing(tmp_path, cli):
    need_shared("weights", "fsrcnn_x2.pth")
    result = cli("export", "--model", "fsrcnn", "--scale", "2", "--precision", "fp16", "--max-psnr-drop", "0",
                 "--out", str(tmp_path / "out"))  # its drop is +0.005 dB
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]  # after the progress lines
    assert errors == [result.stderr.splitlines()[-1]] and "loses 0.005 dB on the held-out photos (36.54 vs 36.54 dB " \
        "FP32), over the 0.0 dB limit: nothing written" in errors[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_the_reported_drop_is_what_the_two_graphs_measure():
    """The FP16 export's drop, re-measured here from the FP32 and FP16 graphs on the held-out crops: the same
    number and sign, and the gate's verdict at that number ± ε."""
    from srdeploy.export.onnx.onnx_export import proto_infer
    from srdeploy.export.precision import VALIDATION_SPEC, check_accuracy
    from srdeploy.models.registry import architecture
    from srdeploy.runtime.quality import crop_psnr

    model = models.load("fsrcnn", 2, weights("fsrcnn_x2.pth"))
    converted, report = export_precision(model, "fp16", progress=False)
    validation = lr_hr_crops(source_images(split="validation"), 2, VALIDATION_SPEC)
    score = lambda graph: crop_psnr(proto_infer(graph), validation, 2, "y", architecture("fsrcnn").eval_rounding)  # noqa: E731
    drop = score(to_onnx(model)) - score(converted)
    assert report.drop_db == pytest.approx(drop, abs=1e-9) and drop != 0
    check_accuracy(report, abs(drop) + 1e-6, "fsrcnn ×2")
    if drop > 1e-6:
        with pytest.raises(SrDeployError, match="over the"):
            check_accuracy(report, drop - 1e-6, "fsrcnn ×2")


def test_precision_auto_keeps_the_fastest_candidate_that_passed_and_records_why(fsrcnn_int8, tmp_path):
    """``--precision auto`` (ONNX Runtime: FP32 and INT8): both gated, timed interleaved here, the faster one
    written, the measurement recorded in the artifact and the result. The INT8 graph is the one this test run
    searched already (``ExportOptions.graphs``: what the exports of one model share)."""
    from srdeploy import api
    from srdeploy.runtime.sessions.onnxruntime import OnnxSession

    options = api.ExportOptions(graphs={("int8", False, None): fsrcnn_int8})
    result = api.export_model("fsrcnn", 2, precision="auto", out=tmp_path, weights=str(weights("fsrcnn_x2.pth")),
                              options=options, progress=False)
    choice = result.details["precision_choice"]
    assert set(choice["median_ms"]) == {"fp32", "int8"} and all(ms > 0 for ms in choice["median_ms"].values())
    assert choice["chosen"] == min(choice["median_ms"], key=choice["median_ms"].get) and not choice["refused"]
    path, = result.artifacts
    assert path.name == f"fsrcnn_x2_{choice['chosen']}.onnx" and [p.name for p in tmp_path.iterdir()] == [path.name]
    metadata = OnnxSession(path).metadata
    assert metadata["precision"] == choice["chosen"] and json.loads(metadata["precision_choice"]) == choice
    assert choice["machine"]["int8_dot"] in ("amx", "vnni", "pairwise-int16") and choice["size"] == "256x256"


def test_precision_auto_is_for_the_targets_that_run_here(tmp_path):
    from srdeploy import api

    for target in ("coreml", "trt", "jetson"):
        with pytest.raises(SrDeployError, match=f"--precision auto times candidates on this machine's CPU; --target "
                                                f"{target} runs elsewhere"):
            api.export_model("fsrcnn", 2, target=target, precision="auto", out=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []
