"""Shared test fixtures. Tests that need ../shared (official weights, Set5/Set14, golden outputs) skip
with a clear reason when it is absent; everything else runs on files the tests make themselves."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
NO_SHARED = "../shared (official weights, datasets, golden fixtures) is not present beside the repository"

# Official checkpoints come from ../shared/weights, never from the network, and the cache is private.
if SHARED.is_dir():
    os.environ.setdefault("SRDEPLOY_WEIGHTS_DIR", str(SHARED / "weights"))


# Under pytest-xdist the workers share the cores: one OpenMP (PyTorch) thread each, so that neither spins on a
# core the other is computing on.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SRDEPLOY_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "checkpoint-cache"))


def need_shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{NO_SHARED}: needs {path}")
    return path


def weights(name: str) -> Path:
    return need_shared("weights", name)


def fixture_index() -> list[dict]:
    index = SHARED / "fixtures" / "reference" / "index.json"
    return json.loads(index.read_text())["fixtures"] if index.is_file() else []


@pytest.fixture(scope="session")
def fsrcnn_int8(tmp_path_factory):
    """FSRCNN ×2 through the INT8 search at the default gate (0.1 dB; met with channels in float):
    (ONNX proto, PrecisionReport). Shared by the INT8 and the Jetson bundle tests: the search is the
    slowest export there is, so it runs once per test run, also across xdist workers (a file lock in the
    run's shared temporary folder; the second worker reads the first one's result)."""
    import pickle

    from filelock import FileLock

    from srdeploy import models
    from srdeploy.export.precision import export_precision

    shared = tmp_path_factory.getbasetemp().parent if os.environ.get("PYTEST_XDIST_WORKER") else tmp_path_factory.getbasetemp()
    result = shared / "fsrcnn_x2_int8.pickle"
    with FileLock(str(result) + ".lock"):
        if not result.is_file():
            proto, report = export_precision(models.load("fsrcnn", 2, weights("fsrcnn_x2.pth")), "int8", progress=False,
                                             fp16_float_parts=True)
            result.write_bytes(pickle.dumps((proto.SerializeToString(), report)))
        data, report = pickle.loads(result.read_bytes())
    import onnx

    return onnx.ModelProto.FromString(data), report
