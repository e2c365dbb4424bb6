"""The prepared GPU run (benchmarks/gpu_run.py): its dry run on this CPU machine must end cleanly with the
packages the GPU machine lacks hidden, and its verdicts must be able to fail."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from srdeploy.benchmarks.gpu_run import FP32_RTOL, fixture_verdicts, verdict
from srdeploy.benchmarks.reference_fixtures import load_fixtures
from tests.conftest import REPO, SHARED, need_shared

# Absent from the GPU machine's image (its packages are listed in the device tool's KINDS.md).
ABSENT_ON_DEVICE = ("onnxsim", "onnxconverter_common", "coremltools", "tree_sitter", "tree_sitter_swift", "openvino")
BLOCKER = f'''import sys
class _Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {set(ABSENT_ON_DEVICE)!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (absent on the GPU machine)")
        return None
sys.meta_path.insert(0, _Absent())
'''


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: this is the CPU dry run")
def test_dry_run_ends_cleanly_without_the_packages_the_gpu_machine_lacks(tmp_path):
    need_shared("fixtures", "reference", "index.json")
    need_shared("weights", "lesrcnn_x2.pth")
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "srdeploy.benchmarks.gpu_run", "--out", str(tmp_path / "out"),
                           "--shared", str(SHARED)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert time.perf_counter() - start < 120
    report = json.loads((tmp_path / "out" / "gpu_run.json").read_text())
    steps = report["steps"]
    assert report["dry_run"] and "DRY RUN" in done.stdout
    assert steps["environment"]["status"] == "ok", steps["environment"]
    assert set(steps["environment"]["detail"]["imports"].values()) == {"ok"}
    assert set(steps) == {"environment", "gpu_tests", "latency", "bench"}
    tests = steps["gpu_tests"]
    assert tests["status"] == "skipped" and tests["detail"]["skipped"] >= 5 and not tests["detail"]["passed"], tests
    assert all(verdict == "skipped" for verdict, _ in tests["detail"]["tests"].values())
    rows = steps["latency"]["detail"]
    assert {r["variant"] for r in rows if r["status"] == "ok"} == {"fp32", "tf32", "fp16", "fp16-cl"}
    assert {r["reason"] for r in rows if r["status"] != "ok"} == {"needs CUDA"}
    assert all(r["check"] for r in rows if r["status"] == "ok")
    assert steps["bench"]["status"] == "ok" and {r["status"] for r in steps["bench"]["detail"]} == {"skipped"}
    page = (tmp_path / "out" / "gpu_run.md").read_text()
    listed = [line for line in page.splitlines() if line.startswith("| tests.test_gpu::")]
    assert "`pytest -m gpu` (tests/test_gpu.py):" in page and len(listed) == tests["detail"]["skipped"]
    assert all(line.rstrip().endswith("| skipped |") for line in listed)


def test_fixture_verdicts_fail_for_the_wrong_network():
    fixtures = {f.name: f for f in load_fixtures(SHARED)}
    if "fsrcnn_x2_official" not in fixtures:
        need_shared("fixtures", "reference", "index.json")
    wrong = replace(fixtures["fsrcnn_x2_official"], checkpoint=fixtures["fsrcnn_x2_altlayout_random"].checkpoint)
    rows = fixture_verdicts(wrong, "cpu")
    assert len(rows) == 4 and not any(r["passed"] for r in rows)
    right = fixture_verdicts(fixtures["fsrcnn_x2_official"], "cpu")
    assert all(r["passed"] for r in right)


@pytest.mark.parametrize("factor, passed", [(0.9, True), (1.1, False)])
def test_fp32_verdict_at_its_tolerance(factor, passed):
    reference = np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32) * 50
    ours = reference.astype(np.float64).copy()
    ours[0, 0, 0, 0] += factor * FP32_RTOL * np.abs(reference).max()
    assert verdict("x", 0, "fp32", ours, reference)["passed"] is passed


def test_fp16_verdict_counts_8_bit_levels_only_for_images():
    image = np.full((1, 3, 20, 50), 127.49 / 255, dtype=np.float32)
    image[0, 0, 0, 0] = 1.0
    ours = image.copy()
    ours[0, :, 0, -2:] = 128.51 / 255  # 6 of 3000 values (0.2 %) two levels off; 75 dB, max rel 4e-3
    assert verdict("x", 0, "fp16", ours, image)["problems"] == ["0.200% off by >1 level > 0.1%"]
    image[0, 0, 0, 0] = ours[0, 0, 0, 0] = 3.0  # no image: a random-weight network's output
    assert verdict("x", 0, "fp16", ours, image)["passed"]
