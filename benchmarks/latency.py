"""Latency of exported artifacts on ONNX Runtime CPU (e.g. FP32 vs FP16 vs INT8): median, p90, spread.

    python -m srdeploy.benchmarks.latency out/lesrcnn_x2_fp32.onnx out/lesrcnn_x2_int8.onnx --size 128 \\
        --out benchmarks/results/latency_cpu.md

A benchmark, not a test: it measures and reports, with the machine it ran on. Each artifact gets its
own session (ONNX Runtime's default threads), ``--warmup`` untimed runs, then ``--runs`` timed ones on
the same 1×C×size×size input.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..runtime.atomic import atomic_path
from ..runtime.sessions.onnxruntime import OnnxSession
from ..runtime.tables import markdown_table
from ..runtime.timing import Timing, measure


def machine() -> str:
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} logical cores, ONNX Runtime {onnxruntime.__version__} CPUExecutionProvider"


def markdown(timings: list[Timing], size: int) -> str:
    base = timings[0].median_ms
    rows = [[t.name, f"{t.median_ms:.1f}", f"{t.p90_ms:.1f}", f"{t.min_ms:.1f}–{t.max_ms:.1f}", str(t.runs),
             f"{t.median_ms / base:.2f}×"] for t in timings]
    table = markdown_table(["artifact", "median ms", "p90 ms", "min–max ms", "runs", "vs first"], rows)
    return f"Input 1×C×{size}×{size} (LR). Machine: {machine()}.\n\n{table}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("artifacts", nargs="+", help=".onnx files; the first is the baseline")
    parser.add_argument("--size", type=int, default=128, help="LR height and width")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", help="also write the table (markdown) and a .json beside it")
    args = parser.parse_args(argv)
    timings = []
    for path in args.artifacts:
        session = OnnxSession(path)
        x = np.random.default_rng(0).random((1, session.channels, args.size, args.size), dtype=np.float32)
        name = Path(path).name
        timings.append(measure(name, session.infer, x, args.warmup, args.runs,
                               lambda it, name=name: tqdm(it, desc=name, unit="run", leave=False)))
    table = markdown(timings, args.size)
    if args.out:
        out = Path(args.out)
        with atomic_path(out) as tmp:
            tmp.write_text(table + "\n")
        with atomic_path(out.with_suffix(".json")) as tmp:
            tmp.write_text(json.dumps({"machine": machine(), "size": args.size, "timings": [asdict(t) for t in timings]},
                                      indent=2))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
