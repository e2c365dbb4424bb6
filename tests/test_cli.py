"""The command line as a user runs it: output, exit codes, one-line errors."""
from __future__ import annotations

import json

import pytest

from tests.conftest import REPO, need_shared, run_cli


def test_help_lists_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "models" in result.stdout and "eval" in result.stdout


def test_help_names_every_target_of_the_table():
    """The lists of targets and artifacts in the help come from the target table (they listed the targets from
    before OpenVINO)."""
    from srdeploy.runtime.targets import runnable, targets

    top, export = run_cli("--help").stdout, run_cli("export", "--help").stdout
    flat = " ".join(top.split()), " ".join(export.split())
    for target in targets().values():
        assert target.title in flat[0] and f"{target.name}: {target.writes}" in flat[1]
    parity = " ".join(run_cli("parity", "--help").stdout.split())
    assert all(target.artifact in parity for target in runnable())


def test_models_table_and_json():
    table = run_cli("models")
    assert table.returncode == 0
    assert "| lesrcnn   | ×2    | RGB" in table.stdout and "Set5 37.65/0.9586" in table.stdout
    entries = json.loads(run_cli("models", "--json").stdout)
    assert len(entries) == 18
    dsrnet = next(e for e in entries if e["model"] == "dsrnet" and e["scale"] == 2)
    assert dsrnet["checkpoint"]["url"].endswith("checkpoint/DSRNet/DSRNet_x2_600000.pth")


@pytest.mark.parametrize("args,message", [
    (["--model", "lesrcnn", "--scale", "5"], "error: lesrcnn has no ×5 model: choose --scale from 2, 3, 4"),
    (["--model", "edsr", "--scale", "2"], "error: unknown model 'edsr'"),
    (["--model", "cfsrcnn", "--scale", "2"], "error: no public checkpoint of cfsrcnn ×2"),
])
def test_eval_errors_are_one_line(tmp_path, args, message):
    result = run_cli("eval", *args, "--dataset", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1
    assert result.stdout == ""


def test_corrupt_checkpoint_is_one_line(tmp_path):
    dataset = need_shared("datasets", "Set5")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x00" * 100)
    result = run_cli("eval", "--model", "lesrcnn", "--scale", "2", "--weights", str(bad), "--dataset", str(dataset))
    assert result.returncode == 2
    assert result.stderr.startswith("error: checkpoint") and result.stderr.count("\n") == 1


def test_eval_json():
    dataset = need_shared("datasets", "Set5")
    result = run_cli("eval", "--model", "fsrcnn", "--scale", "3", "--dataset", str(dataset), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {"model", "scale", "dataset", "psnr", "ssim", "images"}
    assert (report["model"], report["scale"], report["dataset"]) == ("fsrcnn", 3, "Set5")
    assert set(report["images"]) == {"baby", "bird", "butterfly", "head", "woman"}
    assert abs(report["psnr"] - 32.57) <= 0.01 and 0.90 < report["ssim"] < 0.91


def test_export_defaults_scale_2_and_a_printed_output_folder(tmp_path, monkeypatch, cli):
    need_shared("weights", "fsrcnn_x2.pth")
    monkeypatch.chdir(tmp_path)
    result = cli("export", "--model", "fsrcnn")
    assert result.returncode == 0, result.stderr
    assert "output folder: out/fsrcnn_x2_onnx (the default; choose another with --out DIR)" in result.stderr
    assert result.stdout.strip() == "out/fsrcnn_x2_onnx/fsrcnn_x2_fp32.onnx"
    assert (tmp_path / "out" / "fsrcnn_x2_onnx" / "fsrcnn_x2_fp32.onnx").is_file()


@pytest.mark.parametrize("args, message", [
    (["export", "--model", "fsrcnn", "--max-psnr-drop", "-1"], "argument --max-psnr-drop: must be ≥ 0, not -1"),
    (["export", "--model", "fsrcnn", "--scale", "5"], "error: fsrcnn has no ×5 model: choose --scale from 2, 3, 4"),
    (["export", "--model", "fsrcnn", "--model-args", "{}"], "--model-args is for a network of your own"),
    (["export", "--model", "fsrcnn", "--max-shape", "3x"], "shape '3x' is not HxW"),
    (["bench", "--model", "fsrcnn", "--runs", "0"], "argument --runs: must be ≥ 1, not 0"),
    (["bench", "--model", "fsrcnn", "--budget", "0"], "argument --budget: must be > 0, not 0"),
    (["bench", "--model", "fsrcnn", "--threads", "x"], "argument --threads: 'x' is not an integer"),
])
def test_numeric_options_are_checked_before_any_work(tmp_path, monkeypatch, args, message, cli):
    monkeypatch.chdir(tmp_path)
    result = cli(*args)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_export_reports_each_stage_from_its_first_second(tmp_path, cli):
    need_shared("weights", "fsrcnn_x2.pth")
    result = cli("export", "--model", "fsrcnn", "--precision", "fp16", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == "exporting fsrcnn ×2 for onnx (fp16): loading the checkpoint"
    assert lines[1] == "[    0.0 s] fp16 fsrcnn ×2: ONNX graph from PyTorch (torch.export)"
    stages = [line.split("] ", 1)[1] for line in lines if line.startswith("[")]
    assert stages[1:] == ["fp16 fsrcnn ×2: 128 calibration crops from 6 photos",
                          "fp16 fsrcnn ×2: overflow pre-flight: activation peaks (cached after the first export)",
                          "fp16 fsrcnn ×2: accuracy gate: held-out PSNR against FP32 on 24 crops (limit 0.01 dB)"]


def test_cli_reference_page_is_the_commands_help():
    """docs/cli.md is generated from `--help`; a changed option without a regenerated page fails here."""
    from srdeploy.benchmarks import cli_reference

    assert cli_reference.main(["--check"]) == 0, "run python -m srdeploy.benchmarks.cli_reference"
    page = (REPO / "docs" / "cli.md").read_text()
    assert all(f"## srdeploy {c}" in page for c in cli_reference.COMMANDS) and "--max-psnr-drop DB" in page
    fresh = cli_reference.page()
    assert cli_reference.stale(page.replace("--tile-overlap", "--tile-margin"), fresh)
    other_python = page.replace(f"with Python {cli_reference.python_version()}", "with Python 2.7")
    assert not cli_reference.stale(other_python, fresh)  # argparse's wording may differ; the options may not
    assert cli_reference.stale(other_python.replace("--tile-overlap", "--tile-margin"), fresh)
