"""The latency harness and the complexity counter: MACs against hand counts, the bench report's schema,
skipped backends with reasons, and benchmarking existing artifacts. (Timings are reported, never asserted.)"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from srdeploy.benchmarks.bench import parse_size
from srdeploy.benchmarks.complexity import measure
from srdeploy.runtime.errors import SrDeployError
from tests.conftest import REPO, weights


def test_fsrcnn_complexity_matches_a_hand_count():
    # d=56, s=12, m=4: feature 5×5 1→56, shrink 1×1 56→12, 4 × map 3×3 12→12, expand 1×1 12→56, all per LR pixel,
    # and the 9×9 deconvolution 56→1, whose MACs are counted per LR (input) pixel: 56·81
    per_lr_pixel = 25 * 56 + 56 * 12 + 4 * 9 * 12 * 12 + 12 * 56 + 56 * 81
    params = (25 * 56 + 56) + (56 * 12 + 12) + 4 * (9 * 144 + 12) + (12 * 56 + 56) + (56 * 81 + 1) + (56 + 12 + 4 * 12 + 56)
    for scale in (2, 3, 4):
        found = measure("fsrcnn", scale)
        assert found.params == params == 12809
        assert found.macs_per_output_pixel == pytest.approx(per_lr_pixel / scale**2)


def test_lesrcnn_x2_costs_what_the_issue_measured():
    # "LESRCNN ×2 costs about 1.22 M multiply-accumulates per input pixel" (issue 7)
    assert 1.20e6 < measure("lesrcnn", 2).macs_per_output_pixel * 4 < 1.24e6


def test_sizes_are_width_by_height():
    assert parse_size("1280x720") == (1280, 720)
    for bad in ("1280", "axb", "0x5"):
        with pytest.raises(SrDeployError):
            parse_size(bad)


def _bench(*args: str) -> dict:
    result = subprocess.run([sys.executable, "cli.py", "bench", *args, "--sizes", "48x32", "--runs", "3", "--budget", "1",
                             "--warmup", "1", "--json"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_bench_reports_every_backend_it_was_asked_for(tmp_path):
    weights("fsrcnn_x3.pth")
    report = _bench("--model", "fsrcnn", "--scale", "3", "--backends", "torch,onnx,onnx-fp16,onnx-cuda,trt-int8,coreml,openvino",
                    "--out", str(tmp_path))
    machine, results = report["machine"], report["results"]
    assert machine["cpu"] and machine["fp32_peak"]["measured_gflops"] > 0 and "theoretical_how" in machine["fp32_peak"]
    assert [r["backend"] for r in results] == ["torch", "onnx", "onnx-fp16", "onnx-cuda", "trt-int8", "coreml", "openvino"]
    keys = {"backend", "size", "status", "reason", "median_ms", "p90_ms", "p99_ms", "min_ms", "mpix_per_s", "gflops",
            "peak_rss_mb", "psnr_drop_db"}
    for row in results:
        assert keys <= set(row) and row["size"] == "48x32"
        if row["status"] == "ok":
            assert row["min_ms"] <= row["median_ms"] <= row["p90_ms"] <= row["p99_ms"] and row["gflops"] > 0
            assert row["mpix_per_s"] == pytest.approx(48 * 32 * 9 / 1e6 / (row["median_ms"] / 1000))
            assert 0 < row["peak_rss_mb"] < 4000
        else:
            assert row["status"] == "skipped" and row["reason"]
    ok = {r["backend"] for r in results if r["status"] == "ok"}
    assert {"torch", "onnx", "onnx-fp16", "openvino"} <= ok  # OpenVINO runs the IR `export --target openvino` writes
    fp16 = next(r for r in results if r["backend"] == "onnx-fp16")
    assert fp16["psnr_drop_db"] is not None and abs(fp16["psnr_drop_db"]) < 0.01
    assert {p.name for p in tmp_path.iterdir()} >= {"bench.md", "bench.json", "bench.png", "artifacts"}
    assert {p.name for p in (tmp_path / "artifacts").iterdir()} >= {"fsrcnn_x3_fp32.onnx", "fsrcnn_x3_fp32.xml"}
    again = _bench(str(tmp_path / "artifacts" / "fsrcnn_x3_fp32.onnx"))
    assert [(r["backend"], r["status"]) for r in again["results"]] == [("onnx", "ok")]


def test_bench_refuses_an_unknown_backend():
    result = subprocess.run([sys.executable, "cli.py", "bench", "--model", "fsrcnn", "--scale", "3", "--backends", "tpu"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and "unknown backend tpu" in result.stderr


def test_readme_bench_section_is_generated_from_the_committed_results():
    from srdeploy.benchmarks import readme_section

    assert readme_section.main(["--check"]) == 0, "run python -m srdeploy.benchmarks.readme_section"
