"""The parity suite: passes on a faithful FP32 artifact, fails on a perturbed one, and checks golden
files without PyTorch."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from srdeploy import models
from srdeploy.export.onnx_export import export_onnx, save
from srdeploy.runtime.compare import TOLERANCES, compare
from tests.conftest import REPO, need_shared, weights


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "cli.py", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=600)


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
