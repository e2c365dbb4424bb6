"""The parity suite: passes on a faithful FP32 artifact, fails on a perturbed one, and checks golden
files without PyTorch."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from srdeploy import models
from srdeploy.export.onnx.onnx_export import export_onnx, save
from srdeploy.runtime.compare import TOLERANCES, Comparison, compare
from tests.conftest import REPO, need_shared, run_cli, weights


@pytest.fixture(scope="module")
def fsrcnn_artifact(tmp_path_factory):
    return export_onnx(models.load("fsrcnn", 3, weights("fsrcnn_x3.pth")),
                       tmp_path_factory.mktemp("parity") / "fsrcnn_x3.onnx")


def test_parity_passes_with_dataset(fsrcnn_artifact):
    result = run_cli("parity", str(fsrcnn_artifact), "--dataset", str(need_shared("datasets", "Set5")), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] and report["precision"] == "fp32"
    assert {"odd_17x23", "batch3_32x40", "min_bound", "max_batch", "max_height", "max_width",
            "image_baby"} <= set(report["cases"])
    assert report["cases"]["max_width"]["shape"] == [1, 1, 24, 12288]
    assert abs(report["dataset"]["delta_db"]) < 1e-3 and abs(report["dataset"]["psnr_artifact"] - 32.57) < 0.01


def test_perturbed_artifact_fails(fsrcnn_artifact, tmp_path):
    proto = onnx.load(fsrcnn_artifact)
    conv_weight = next(t for t in proto.graph.initializer if numpy_helper.to_array(t).ndim == 4)
    conv_weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(conv_weight) * 1.01, conv_weight.name))
    save(proto, tmp_path / "perturbed.onnx")  # sealed anew: a self-consistent artifact that computes wrongly
    result = run_cli("parity", str(tmp_path / "perturbed.onnx"))
    assert result.returncode == 1
    assert "FAIL odd_17x23: max rel" in result.stdout and result.stdout.rstrip().endswith("FAIL")


def test_golden_files_check_without_torch(fsrcnn_artifact, tmp_path):
    saved = run_cli("parity", str(fsrcnn_artifact), "--save-golden", str(tmp_path / "golden"), "--json")
    assert saved.returncode == 0 and sorted(p.name for p in (tmp_path / "golden").iterdir()) == ["golden.json", "golden.npz"]
    code = (
        "import sys; from srdeploy import cli; code = cli.main(['parity', sys.argv[1], '--golden', sys.argv[2], '--json']); "
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(code)"
    )
    result = subprocess.run([sys.executable, "-c", code, str(fsrcnn_artifact), str(tmp_path / "golden")],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    checked, written = json.loads(result.stdout), json.loads(saved.stdout)
    assert checked["passed"] and len(checked["cases"]) >= 5  # every saved case loaded and checked, none skipped
    assert set(checked["cases"]) == set(written["cases"])


def test_non_official_checkpoint_needs_weights(tmp_path):
    checkpoint = need_shared("fixtures", "reference", "cfsrcnn_x2_random.pth")
    artifact = export_onnx(models.load("cfsrcnn", 2, checkpoint), tmp_path / "cfsrcnn.onnx")
    result = run_cli("parity", str(artifact))
    assert result.returncode == 2 and "pass it with --weights PATH" in result.stderr


def test_comparison_statistics():
    reference = np.linspace(0, 1, 1000, dtype=np.float32).reshape(1, 1, 10, 100)
    shifted = reference + np.float32(3 / 255)  # three 8-bit levels everywhere
    result = compare(shifted, reference)
    assert result.max_abs == pytest.approx(3 / 255, rel=1e-5) and result.nonfinite == 0
    assert result.off_by_level_pct > 90 and result.psnr == pytest.approx(20 * np.log10(255 / 3), abs=0.01)
    large = compare(shifted * 1000, reference * 1000)  # random-weight outputs: PSNR relative to their range
    assert large.psnr == pytest.approx(result.psnr, abs=0.01)
    broken = reference.copy()
    broken[0, 0, 0, 0] = np.nan
    assert compare(broken, reference).violations(TOLERANCES["fp32"]) == ["1 NaN/Inf values"]


def test_comparison_statistics_by_hand():
    """Each statistic computed here by hand on small arrays (peak, relative scale, rounding to 8-bit levels)."""
    half = np.array([0.5, 0.0, 0.25])  # max|ref| 0.5 < 1: PSNR's peak is 1, max rel is relative to 0.5
    c = compare(half + np.array([0.0, 0.3, 0.0]), half)
    assert c.max_rel == pytest.approx(0.6) and c.psnr == pytest.approx(10 * np.log10(1 / (0.09 / 3)))
    big = np.array([100.0, 0.0])  # max|ref| 100: both relative to 100
    c = compare(big + np.array([0.0, 2.0]), big)
    assert c.max_rel == pytest.approx(0.02) and c.psnr == pytest.approx(10 * np.log10(100 ** 2 / 2.0))
    # 0.99 → 252.45 → level 252; 0.986 → 251.43 → level 251: one level apart, not counted
    assert compare(np.array([0.986]), np.array([0.99])).off_by_level_pct == 0.0
    assert compare(np.array([0.982]), np.array([0.99])).off_by_level_pct == 100.0  # 250.41 → 250: two levels
    zero = compare(np.array([1e-3, 0.0]), np.zeros(2))  # an all-zero reference: any difference is huge
    assert zero.violations(TOLERANCES["int8"])[0].startswith("max rel")
    for actual, reference in ((np.zeros((1, 1)), np.zeros((1, 3))), (np.zeros((1, 3)), np.zeros((1, 1)))):
        with pytest.raises(ValueError, match="differs from the reference"):
            compare(actual, reference)


def test_tolerances_are_the_documented_ones_and_fixed():
    """Written out here (docs/verification.md), not read from the code under test; exactly at a limit passes."""
    import dataclasses

    assert {p: (t.max_rel, t.min_psnr, t.max_off_by_level) for p, t in TOLERANCES.items()} == {
        "fp32": (1e-4, 80.0, 0.0), "fp16": (5e-3, 60.0, 0.1), "int8": (0.5, 35.0, 25.0), "bf16": (0.03, 45.0, 15.0)}
    for tolerance in TOLERANCES.values():
        at = Comparison((1,), 0.0, tolerance.max_rel, 0.0, tolerance.min_psnr, tolerance.max_off_by_level, 0)
        assert at.violations(tolerance) == []
    with pytest.raises(dataclasses.FrozenInstanceError):
        TOLERANCES["fp32"].min_psnr = 40.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        at.psnr = 0.0


def flip_weight_bytes(artifact, out):
    """A copy of ``artifact`` with bytes flipped inside its first convolution's weights, as a bad disk or a
    broken download would."""
    data = bytearray(artifact.read_bytes())
    weight = next(t for t in onnx.load(artifact).graph.initializer if numpy_helper.to_array(t).ndim == 4)
    start = bytes(data).find(weight.raw_data) + len(weight.raw_data) // 2
    data[start:start + 4] = bytes(b ^ 0x5A for b in data[start:start + 4])
    out.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize("command", ["upscale", "eval", "parity"])
def test_damaged_weights_are_refused_on_open(fsrcnn_artifact, tmp_path, command):
    damaged = flip_weight_bytes(fsrcnn_artifact, tmp_path / "damaged.onnx")
    image = tmp_path / "in.png"
    from srdeploy.runtime import images

    images.write_image(image, np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8))
    args = {"upscale": ["upscale", str(image), str(tmp_path / "out.png"), "--artifact", str(damaged)],
            "eval": ["eval", "--artifact", str(damaged), "--dataset", str(tmp_path)],
            "parity": ["parity", str(damaged)]}[command]
    result = run_cli(*args)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: artifact {damaged} is damaged (its bytes no longer match the sha256 "
                                    "recorded at export): re-export it")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.onnx", "in.png"]


# --- every verdict threshold, just inside and just outside, one limit crossed at a time ----------------------

N = 100 * 100  # a flat 0.5 image plus one outlier pixel that sets max|reference|


def _reference(outlier: float = 1.0) -> np.ndarray:
    r = np.full(N + 1, 0.5)
    r[-1] = outlier
    return r


def _errors(reference: np.ndarray, count: int, error: float) -> np.ndarray:
    actual = reference.copy()
    actual[:count] += error
    return actual


def _psnr_error(db: float, count: int = N) -> float:
    """The error on ``count`` of the flat pixels that puts PSNR (peak 1) at ``db``."""
    return float(np.sqrt((N + 1) / count) * 10 ** (-db / 20))


EPS = 1e-3  # relative step across a limit


def _cases(precision: str):
    """(name, actual, reference, expected violation prefixes) around each of ``precision``'s limits."""
    t = TOLERANCES[precision]
    r, big = _reference(), _reference(100.0)
    yield "max_rel inside", _errors(r, 1, t.max_rel * (1 - EPS)), r, []
    yield "max_rel outside", _errors(r, 1, t.max_rel * (1 + EPS)), r, ["max rel"]
    psnr_count = N if precision != "int8" else N // 5  # int8: concentrated, so few pixels are off by a level
    inside, outside = (_errors(r, psnr_count, _psnr_error(t.min_psnr + s * 0.01, psnr_count)) for s in (1, -1))
    # FP32: a PSNR under 80 dB needs max rel over 1e-4 (peak 1), so both limits are crossed together there
    yield "psnr inside", inside, r, []
    yield "psnr outside", outside, r, (["max rel", "PSNR"] if precision == "fp32" else ["PSNR"])
    # one level is 1/255; +0.004 moves 127.5 → 128.52 (one level), +0.008 → 129.54 (two); max|ref| 100 keeps
    # max rel and PSNR far inside
    allowed = int(t.max_off_by_level / 100 * (N + 1))
    one_level = _errors(big, N, 0.004)
    yield "levels inside", _errors(one_level, allowed, 0.004), big, []
    yield "levels outside", _errors(one_level, allowed + 2, 0.004), big, ["off by >1 level"]
    hole = _reference()
    hole[0] = 0.0  # a NaN counts as 0 in the other statistics: here that is no error
    yield "nonfinite", _errors(hole, 1, np.nan), hole, ["1 NaN/Inf"]


@pytest.mark.parametrize("precision", sorted(TOLERANCES))
def test_every_tolerance_decides_at_its_limit(precision):
    for name, actual, reference, expected in _cases(precision):
        problems = compare(actual, reference).violations(TOLERANCES[precision])
        assert len(problems) == len(expected) and all(e in p for e, p in zip(expected, problems)), \
            f"{precision} {name}: {problems}"


def test_an_fp16_artifact_is_judged_at_the_fp16_tolerance(tmp_path):
    """A faithful FP16 artifact passes; one whose first convolution is 0.5 % off (about 54 dB, 3 % of values off
    by more than a level) fails, though it would pass the INT8 tolerance."""
    from srdeploy.export.precision import export_precision

    proto, _ = export_precision(models.load("fsrcnn", 3, weights("fsrcnn_x3.pth")), "fp16", progress=False)
    faithful = run_cli("parity", str(save(proto, tmp_path / "fsrcnn_x3_fp16.onnx")), "--json")
    report = json.loads(faithful.stdout)
    assert faithful.returncode == 0 and report["precision"] == "fp16"
    assert report["tolerance"] == {k: getattr(TOLERANCES["fp16"], k) for k in ("max_rel", "min_psnr", "max_off_by_level")}
    weight = next(t for t in proto.graph.initializer if numpy_helper.to_array(t).ndim == 4)
    values = numpy_helper.to_array(weight)
    weight.CopyFrom(numpy_helper.from_array((values.astype(np.float32) * 1.005).astype(values.dtype), weight.name))
    perturbed = run_cli("parity", str(save(proto, tmp_path / "perturbed_fp16.onnx")), "--json")
    cases = json.loads(perturbed.stdout)["cases"].values()
    assert perturbed.returncode == 1
    assert not any(compare_case_fails_int8(c) for c in cases)  # the INT8 tolerance would have passed it


def compare_case_fails_int8(case: dict) -> bool:
    t = TOLERANCES["int8"]
    return case["max_rel"] > t.max_rel or case["psnr"] < t.min_psnr or case["off_by_level_pct"] > t.max_off_by_level
