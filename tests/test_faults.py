"""Faults injected into the real command (``benchmarks/faults.py``): each fault once here, at a random moment or
size (the long runs, 20 each, are recorded in docs/reliability.md); and the pieces that make them survivable:
a killed writer's temporary files removed by the next write, writers racing for one folder, a cut download."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import need_shared
from srdeploy.benchmarks import faults


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    need_shared("weights", "fsrcnn_x2.pth")
    return faults.prepare(tmp_path_factory.mktemp("faults"))


@pytest.mark.parametrize("fault", sorted(faults.FAULTS))
def test_a_fault_once_leaves_nothing_half_written_and_the_next_run_succeeds(fault, bench, tmp_path):
    import random

    if fault == "read-only-output" and faults.UNPRIVILEGED and not Path("/usr/bin/setpriv").exists():
        pytest.skip("root ignores a read-only folder's mode, and setpriv (util-linux) is not here to drop that")
    trial = faults.FAULTS[fault][0](bench, random.Random(os.getpid()), tmp_path)
    assert trial.survived and trial.lost == 0, trial.notes


def test_the_checks_see_a_damaged_output_and_a_leftover(bench, tmp_path):
    """The checks the faults rely on fail on a truncated image, a truncated artifact and a temporary file."""
    out = tmp_path / "out"
    out.mkdir()
    name, data = next(iter(bench.reference.items()))
    (out / name).write_bytes(data[:len(data) // 2])
    trial = faults.Trial()
    faults.compare_images(trial, bench, out, every=True)
    assert not trial.survived and trial.lost == len(bench.reference)  # one damaged, the others missing
    (out / "fsrcnn_x2_fp32.onnx").write_bytes(bench.artifact.read_bytes()[:-100])
    trial = faults.Trial()
    faults.check_export(trial, out, "onnx")
    assert trial.lost == 1 and "does not open" in trial.notes[0]
    (out / ".fsrcnn_x2_fp32.123@host.abc.onnx").write_bytes(b"partial")
    assert faults.leftovers(out) == [".fsrcnn_x2_fp32.123@host.abc.onnx"]


def test_a_killed_writers_temporary_file_is_removed_and_a_live_ones_kept(tmp_path):
    """By the next write into the folder: any target's temporary file of a writer no longer running on this host."""
    from srdeploy.runtime.atomic import atomic_path, scratch_prefix

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = scratch_prefix("x").split("@")[1]
    orphan = tmp_path / f".other.{dead.stdout.strip()}@{host}tmp.onnx"  # another target's, in the same folder
    live = tmp_path / f".model.{os.getpid()}@{host}tmp.onnx"  # this process: a writer still running
    other_host = tmp_path / f".model.{dead.stdout.strip()}@another-host.tmp.onnx"
    for path in (orphan, live, other_host):
        path.write_bytes(b"partial")
    with atomic_path(tmp_path / "model.onnx") as tmp:
        tmp.write_bytes(b"whole")
    assert not orphan.exists() and live.exists() and other_host.exists()
    assert (tmp_path / "model.onnx").read_bytes() == b"whole"


def test_writers_racing_for_one_folder_each_land_and_the_last_wins(tmp_path):
    """``replace_dir`` from eight threads at once onto one target: no error, one whole folder at the end."""
    from concurrent.futures import ThreadPoolExecutor

    from srdeploy.runtime.atomic import atomic_dir

    target = tmp_path / "bundle"

    def write(number: int) -> None:
        with atomic_dir(target) as work:
            for part in ("a", "b"):
                (work / part).write_text(str(number))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(32)))
    parts = {p.name: p.read_text() for p in target.iterdir()}
    assert set(parts) == {"a", "b"} and parts["a"] == parts["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_a_cut_download_is_one_line_and_leaves_the_cache_empty(tmp_path, monkeypatch):
    from srdeploy.models.checkpoints import resolve
    from srdeploy.models.registry import default_checkpoint
    from srdeploy.runtime.errors import SrDeployError

    good = need_shared("weights", "fsrcnn_x2.pth").read_bytes()
    monkeypatch.setenv("SRDEPLOY_WEIGHTS_DIR", "")
    monkeypatch.setenv("SRDEPLOY_CACHE_DIR", str(tmp_path))
    with faults.mirror(good, cut_at=len(good) // 3) as url:
        monkeypatch.setenv("SRDEPLOY_MIRROR", url)
        with pytest.raises(SrDeployError, match=r"stopped after [0-9,]+ of [0-9,]+ bytes \(the connection was cut\)") as caught:
            resolve(default_checkpoint("fsrcnn", 2))
    assert "\n" not in str(caught.value) and list(tmp_path.iterdir()) == []
    with faults.mirror(good) as url:
        monkeypatch.setenv("SRDEPLOY_MIRROR", url)
        assert resolve(default_checkpoint("fsrcnn", 2)).read_bytes() == good


def test_the_reliability_page_shows_the_recorded_runs():
    """docs/reliability.md's two tables are those the recorded runs give (``benchmarks.reliability_tables``)."""
    import json

    from srdeploy.benchmarks import fuzz

    page = faults.DOC.read_text()
    for module in (fuzz, faults):
        start, end = page.index(module.MARKS[0]) + len(module.MARKS[0]), page.index(module.MARKS[1])
        recorded = json.loads(module.RESULTS.read_text())
        assert recorded and page[start:end].strip() == module.table(recorded), \
            "run python -m srdeploy.benchmarks.reliability_tables"
