"""Shared test fixtures. Tests that need ../shared (official weights, Set5/Set14, golden outputs) skip
with a clear reason when it is absent; everything else runs on files the tests make themselves."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
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


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python cli.py ARGS`` in its own process: for what only a process shows (its imports, its exit, a signal)."""
    return subprocess.run([sys.executable, str(REPO / "cli.py"), *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}, timeout=600)


@pytest.fixture
def cli(capfd):
    """The command in this process (``srdeploy.cli.main``: the same code without a new interpreter's start-up, which
    is most of a short command's time): ``cli(*ARGS)`` returns its exit code and what it wrote on stdout and stderr,
    native libraries' output included, as ``run_cli`` does."""
    from srdeploy.cli import main

    def run(*args: str) -> subprocess.CompletedProcess:
        capfd.readouterr()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                code = main(list(args))
            except SystemExit as exited:  # argparse's refusals
                code = exited.code
        out, err = capfd.readouterr()
        return subprocess.CompletedProcess(["srdeploy", *args], code, out, err)

    return run


def need_shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{NO_SHARED}: needs {path}")
    return path


def weights(name: str) -> Path:
    return need_shared("weights", name)


# a checkpoint per zoo architecture at ×2: official where one exists, else the reference fixtures' random weights
ZOO_CHECKPOINTS = {"fsrcnn": "fsrcnn_x2.pth", "lesrcnn": "lesrcnn_x2.pth", "dsrnet": "dsrnet_x2.pth",
                   "lesrcnn_b": "fixtures/lesrcnn_multiscale_random.pth", "cfsrcnn": "fixtures/cfsrcnn_x2_random.pth",
                   "esrgcnn": "fixtures/esrgcnn_multiscale_random.pth"}


def zoo_checkpoint(model: str) -> Path:
    """The ×2 checkpoint of a zoo architecture (``ZOO_CHECKPOINTS``)."""
    name = ZOO_CHECKPOINTS[model]
    return need_shared("fixtures", "reference", name.removeprefix("fixtures/")) if name.startswith("fixtures/") \
        else weights(name)


def held_out_batch(colour: str):
    """Two crops of a held-out photo at an odd size, as network input (a batch: each image on its own)."""
    import numpy as np

    from srdeploy.calib.data import held_out_photo

    photo = held_out_photo(colour)
    return np.ascontiguousarray(np.stack([photo[:, 10:51, 20:78], photo[:, 60:101, 5:63]]))


def parse_errors(language, source: bytes) -> list[str]:
    """The ERROR and missing nodes of ``source`` parsed by tree-sitter in ``language`` (a tree_sitter_* module)."""
    import tree_sitter

    tree = tree_sitter.Parser(tree_sitter.Language(language.language())).parse(source)
    found, stack = [], [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            found.append(f"{node.start_point}: {source[node.start_byte:node.end_byte][:40]!r}")
        stack.extend(node.children)
    return found


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
