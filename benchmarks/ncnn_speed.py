"""ncnn on this x86 CPU against ONNX Runtime, side by side in one run (issue 37's performance item): LESRCNN ×2 and
FSRCNN ×2 at 256×256, 1 and 2 threads, FP32, FP16 and INT8 ncnn folders and the FP32 ONNX, exported here first
(INT8 through its own gate; its held-out drop is reported beside its time).

    python -m srdeploy.benchmarks.ncnn_speed --out benchmarks/results

Each runtime is given the same thread count; the calls are interleaved in rounds (``runtime.timing``). The target:
ncnn CPU FP32 ≤ 1.5× ONNX Runtime FP32. x86 timings do not predict ARM phones (ncnn's kernels there are its
NEON/FP16 ones, and its FP16 arithmetic runs only there); lavapipe's Vulkan timings are a CPU emulating a GPU and
are not reported. Writes ``ncnn_speed_<machine>.{md,json}``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .bench import cpu_text, report_header, write_results
from ..export.options import ExportOptions, Progress
from ..models.spec import ModelSpec
from ..runtime.sessions.ncnn import NcnnSession
from ..runtime.sessions.onnxruntime import OnnxSession
from ..runtime.tables import markdown_table
from ..runtime.targets import target
from ..runtime.timing import interleaved_medians

MODELS = (("lesrcnn", 2), ("fsrcnn", 2))
SIZE = 256
TARGET_RATIO = 1.5  # ncnn CPU FP32 / ONNX Runtime FP32
LABELS = {"onnx": "onnxruntime fp32", "ncnn-fp32": "ncnn fp32", "ncnn-fp16": "ncnn fp16", "ncnn-int8": "ncnn int8"}


def artifacts(model: str, scale: int, folder: Path) -> dict[str, Path]:
    """The FP32 ONNX and the FP32, FP16 and INT8 ncnn folders of the official checkpoint, exported into ``folder``."""
    net = ModelSpec(model, scale).load()
    made = {"onnx": target("onnx").export(net, ExportOptions(precision="fp32"), folder, Progress(False))}
    made["ncnn-int8"] = target("ncnn").export(net, ExportOptions(precision="int8"), folder, Progress(False))
    for precision in ("fp32", "fp16"):
        made[f"ncnn-{precision}"] = target("ncnn").export(net, ExportOptions(precision=precision, max_psnr_drop=0.05),
                                                          folder, Progress(False))
    return {name: result.artifacts[0] for name, result in made.items()}


def measure(paths: dict[str, Path], channels: int, threads: int, rounds: int) -> dict[str, float]:
    """Median ms of each artifact in ``paths`` (``artifacts``' names, or some of them), interleaved."""
    x = np.random.default_rng(0).random((1, channels, SIZE, SIZE), dtype=np.float32)
    infers = {LABELS[name]: (OnnxSession(path, providers=["CPUExecutionProvider"], threads=threads) if name == "onnx"
                             else NcnnSession(path, threads=threads)).infer for name, path in paths.items()}
    return interleaved_medians(infers, x, rounds)


HUGE_PAGES = "glibc.malloc.hugetlb=1"  # glibc ≥ 2.35: malloc asks for transparent huge pages (madvise)


def with_huge_pages(paths: dict[str, Path], channels: int, threads: int, rounds: int) -> dict[str, float] | None:
    """``measure`` of the FP32 ONNX and the FP32 ncnn folder in a fresh process whose malloc takes transparent huge
    pages (``GLIBC_TUNABLES``, read only when a process starts); None where the C library is not glibc ≥ 2.35."""
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        return None
    if not version.startswith("glibc ") or tuple(map(int, version.split()[1].split(".")[:2])) < (2, 35):
        return None
    command = [sys.executable, "-m", "srdeploy.benchmarks.ncnn_speed", "--pair", str(paths["onnx"]),
               str(paths["ncnn-fp32"]), str(channels), str(threads), str(rounds)]
    done = subprocess.run(command, env={**os.environ, "GLIBC_TUNABLES": HUGE_PAGES}, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results", help="folder for the .md and .json")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--pair", nargs=5, metavar=("ONNX", "NCNN", "CHANNELS", "THREADS", "ROUNDS"),
                        help=argparse.SUPPRESS)  # the huge-page child process: prints measure's JSON
    args = parser.parse_args(argv)
    if args.pair:
        onnx, ncnn_folder, channels, threads, rounds = args.pair
        fp32 = {"onnx": Path(onnx), "ncnn-fp32": Path(ncnn_folder)}
        print(json.dumps(measure(fp32, int(channels), int(threads), int(rounds))))
        return 0
    report = report_header("python -m srdeploy.benchmarks.ncnn_speed", "lesrcnn, fsrcnn", 2, None)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for model, scale in MODELS:
            paths = artifacts(model, scale, Path(folder) / model)
            channels = NcnnSession(paths["ncnn-fp32"]).channels
            int8 = json.loads(NcnnSession(paths["ncnn-int8"]).metadata["ncnn_report"])
            for threads in (1, 2):
                medians = measure(paths, channels, threads, args.rounds)
                base = medians["onnxruntime fp32"]
                huge = with_huge_pages(paths, channels, threads, args.rounds)
                rows.append({"model": f"{model} ×{scale}", "threads": threads, **{k: round(v, 2) for k, v in medians.items()},
                             "ncnn_fp32_ratio": medians["ncnn fp32"] / base, "ncnn_fp16_ratio": medians["ncnn fp16"] / base,
                             "ncnn_int8_ratio": medians["ncnn int8"] / base, "int8_drop_db": round(int8["drop_db"], 4),
                             "int8_mac_fraction": round(int8["int8_mac_fraction"], 4),
                             "huge_pages": huge and {k: round(v, 2) for k, v in huge.items()},
                             "huge_pages_fp32_ratio": huge and huge["ncnn fp32"] / huge["onnxruntime fp32"]})
                print(rows[-1], flush=True)
    report["results"] = rows
    machine = report["machine"]
    table = markdown_table(
        ["model", "threads", "ONNX Runtime FP32 ms", "ncnn FP32 ms", "ncnn FP16 ms", "ncnn INT8 ms", "ncnn FP32 / ORT",
         "ncnn FP16 / ORT", "ncnn INT8 / ORT", "INT8 held-out drop (MACs in INT8)",
         f"FP32 target ≤ {TARGET_RATIO}×", "huge pages: ORT / ncnn FP32 ms", "huge pages: ncnn FP32 / ORT"],
        [[r["model"], str(r["threads"]), f"{r['onnxruntime fp32']:.1f}", f"{r['ncnn fp32']:.1f}",
          f"{r['ncnn fp16']:.1f}", f"{r['ncnn int8']:.1f}", f"{r['ncnn_fp32_ratio']:.2f}×", f"{r['ncnn_fp16_ratio']:.2f}×",
          f"{r['ncnn_int8_ratio']:.2f}×", f"{r['int8_drop_db']:.3f} dB ({r['int8_mac_fraction']:.1%})",
          "met" if r["ncnn_fp32_ratio"] <= TARGET_RATIO else "missed",
          (f"{r['huge_pages']['onnxruntime fp32']:.1f} / {r['huge_pages']['ncnn fp32']:.1f}" if r["huge_pages"]
           else "–"),
          f"{r['huge_pages_fp32_ratio']:.2f}×" if r["huge_pages"] else "–"] for r in rows])
    text = (f"`{report['command']}` — {report['date']}\n\nMachine: {cpu_text(machine)}, {machine['usable_cores']} usable "
            f"cores; {', '.join(f'{k} {v}' for k, v in machine['libraries'].items())}.\nLR {SIZE}×{SIZE}, batch 1, "
            f"median of {args.rounds} interleaved rounds; FP16 on this x86 CPU is FP16 weights with FP32 arithmetic "
            "(ncnn's FP16 arithmetic runs on ARM); x86 timings do not predict ARM phones. Huge pages: ONNX Runtime "
            f"FP32 and ncnn FP32 again, interleaved, in a process started with GLIBC_TUNABLES={HUGE_PAGES} (malloc "
            "asks for transparent huge pages).\n\n" + table + "\n")
    write_results(args.out, "ncnn_speed", report, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
