"""Short runs of the coverage-guided fuzz harnesses (``benchmarks/fuzz.py``, atheris): each harness feeds mutated
input, seeded from real files, to the code that reads untrusted bytes; the only outcomes allowed are a result or the
project's one-line error. The long runs are recorded in docs/reliability.md."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from conftest import need_shared
from srdeploy.benchmarks.fuzz import HARNESSES

SECONDS = 6  # each; with the start-up and the seeds, all six within about two minutes on 2 cores


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed: pip install atheris")
@pytest.mark.parametrize("harness", sorted(HARNESSES))
def test_short_fuzz_run_finds_nothing(harness, tmp_path):
    if harness == "onnx":
        need_shared("weights", "fsrcnn_x2.pth")  # its seed is the exported FSRCNN ×2
    done = subprocess.run([sys.executable, "-m", "srdeploy.benchmarks.fuzz", harness, "--seconds", str(SECONDS),
                           "--corpus", str(tmp_path / "corpus")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["crashes"] == [] and result["executions"] > 20, result
    assert result["coverage"] and result["coverage"] > 10, result  # srdeploy's code was instrumented and reached
