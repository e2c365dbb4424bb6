"""OpenVINO's speed targets (issue 16) on this CPU, from exported artifacts and without torch: for a machine that
has only the runtimes, such as a lent GPU machine's host CPU (VNNI or AMX, which these sessions' CPUs lack).

    python -m srdeploy.benchmarks.openvino_targets ARTIFACTS --datasets DIR --cores 2 --out benchmarks/results

``ARTIFACTS`` holds, per model, what ``export`` writes: ``NAME_xS_fp32.onnx`` (the ONNX Runtime FP32 reference),
and ``NAME_xS_fp32.xml`` and ``NAME_xS_int8.xml`` (``export --target openvino``). Per model: the INT8 IR's Set5
loss against the FP32 ONNX and the share of conv MACs it executes in u8/i8, and the median latency at 256×256 of
all three on ``--cores`` cores (the process pinned to them, each runtime given as many threads), interleaved
in rounds (``runtime.timing.interleaved_medians``), against the targets for this CPU's int8 dot product:
INT8 ≤ 0.35× ONNX Runtime FP32 for LESRCNN/DSRNet and ≤ 0.7× for FSRCNN with VNNI or AMX, 0.6× / 0.9× without;
OpenVINO FP32 ≤ 1×; INT8 within 0.10 dB on Set5. Writes ``openvino_targets_<machine>.{md,json}``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from ..runtime.atomic import atomic_path
from ..runtime.cpu import int8_dot
from ..runtime.errors import SrDeployError
from ..runtime.sessions.onnxruntime import OnnxSession
from ..runtime.sessions.openvino import OpenVinoSession
from ..runtime.quality import dataset_pairs, evaluate
from ..runtime.tables import markdown_table
from ..runtime.timing import SETTLE_S, interleaved_medians
from .bench import cpu_text, report_header

SIZE = 256
SET5_LIMIT_DB = 0.10
# INT8 IR latency / ONNX Runtime FP32, per int8 dot product: (LESRCNN and DSRNet, FSRCNN)
INT8_TARGETS = {"vnni": (0.35, 0.7), "amx": (0.35, 0.7), "pairwise-int16": (0.6, 0.9)}


def pin(cores: int) -> list[int]:
    """Pin this process to its first ``cores`` allowed CPUs; the CPUs."""
    chosen = sorted(os.sched_getaffinity(0))[:cores]
    os.sched_setaffinity(0, chosen)
    return chosen


def measure_model(stem: str, folder: Path, set5: Path, threads: int) -> dict:
    """One model's row: Set5 PSNR of the FP32 ONNX and the INT8 IR, executed INT8 share, interleaved latency."""
    paths = {"ONNX Runtime FP32": folder / f"{stem}_fp32.onnx", "OpenVINO FP32": folder / f"{stem}_fp32.xml",
             "OpenVINO INT8": folder / f"{stem}_int8.xml"}
    sessions = {"ONNX Runtime FP32": OnnxSession(paths["ONNX Runtime FP32"], threads=threads),
                "OpenVINO FP32": OpenVinoSession(paths["OpenVINO FP32"], threads=threads, cache=False),
                "OpenVINO INT8": OpenVinoSession(paths["OpenVINO INT8"], threads=threads, cache=False)}
    reference = sessions["ONNX Runtime FP32"]
    pairs = dataset_pairs(set5, reference.scale)

    def set5_psnr(session) -> float:
        return evaluate(session.infer, pairs, model=stem, scale=session.scale, colour=session.colour,
                        rounding=session.metadata["eval_rounding"], dataset="Set5", progress=False).psnr

    fp32, int8 = set5_psnr(reference), set5_psnr(sessions["OpenVINO INT8"])
    x = np.random.default_rng(0).random((1, reference.channels, SIZE, SIZE), dtype=np.float32)
    medians = interleaved_medians({name: s.infer for name, s in sessions.items()}, x)
    base = medians["ONNX Runtime FP32"]
    return {"model": stem, "set5_fp32_db": fp32, "set5_int8_db": int8, "set5_drop_db": fp32 - int8,
            "int8_executed": sessions["OpenVINO INT8"].executed_precisions().int8_mac_fraction,
            "median_ms": medians, "vs_ort_fp32": {name: ms / base for name, ms in medians.items()}}


def verdicts(row: dict, dot: str) -> dict[str, bool]:
    """Each target of issue 16 for this row, on a CPU with int8 dot product ``dot``."""
    dense, small = INT8_TARGETS[dot]
    limit = small if row["model"].startswith("fsrcnn") else dense
    return {f"INT8 ≤ {limit}× ORT FP32": row["vs_ort_fp32"]["OpenVINO INT8"] <= limit,
            "OpenVINO FP32 ≤ 1× ORT FP32": row["vs_ort_fp32"]["OpenVINO FP32"] <= 1.0,
            f"INT8 Set5 loss ≤ {SET5_LIMIT_DB} dB": row["set5_drop_db"] <= SET5_LIMIT_DB}


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"`{report['command']}` — {report['date']}", "",
             f"Machine: {cpu_text(m)}; pinned to "
             f"{len(report['cores'])} cores, as many threads per runtime; OpenVINO {m['libraries'].get('openvino')}, ONNX "
             f"Runtime {m['libraries'].get('onnxruntime')}; f32 inference precision. Latency: median of 15 rounds at "
             f"{SIZE}×{SIZE} LR, batch 1, one call of each artifact per round, each {SETTLE_S} s after the previous one.",
             ""]
    rows = []
    for r in report["rows"]:
        met = ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in r["verdicts"].items())
        rows.append([r["model"], f"{r['median_ms']['ONNX Runtime FP32']:.1f}",
                     f"{r['median_ms']['OpenVINO FP32']:.1f} ({r['vs_ort_fp32']['OpenVINO FP32']:.2f}×)",
                     f"{r['median_ms']['OpenVINO INT8']:.1f} ({r['vs_ort_fp32']['OpenVINO INT8']:.2f}×)",
                     f"{r['int8_executed']:.1%}", f"{r['set5_drop_db']:+.3f}", met])
    lines.append(markdown_table(["model", "ORT FP32 ms", "OpenVINO FP32 ms", "OpenVINO INT8 ms", "INT8 MACs in u8/i8",
                                 "INT8 Set5 drop dB", "targets"], rows))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m srdeploy.benchmarks.openvino_targets",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("artifacts", help="folder with NAME_xS_fp32.onnx, NAME_xS_fp32.xml, NAME_xS_int8.xml")
    parser.add_argument("--datasets", default="../shared/datasets", help="folder holding Set5/")
    parser.add_argument("--cores", type=int, default=2, help="CPUs to pin to, and threads per runtime (default 2)")
    parser.add_argument("--out", default="benchmarks/results", help="folder for openvino_targets_<machine>.{md,json}")
    parser.add_argument("--machine", required=True, help="slug naming the results file, e.g. cpu-intel-xeon-amx")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    before = os.sched_getaffinity(0)
    try:
        return run(args, pin(args.cores))
    except SrDeployError as exc:  # a missing or damaged artifact, no Set5: one line, nothing written
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        os.sched_setaffinity(0, before)


def run(args: argparse.Namespace, cores: list[int]) -> int:
    """``main`` pinned to ``cores``."""
    folder = Path(args.artifacts)
    stems = sorted(p.name.removesuffix("_fp32.onnx") for p in folder.glob("*_fp32.onnx"))
    if not stems:
        print(f"error: {folder} holds no NAME_xS_fp32.onnx: export the artifacts first", file=sys.stderr)
        return 2
    command = "python -m srdeploy.benchmarks.openvino_targets " + " ".join(args.argv)
    report = {**report_header(command, "", 0, None), "cores": cores, "rows": []}
    dot = int8_dot()
    for stem in stems:
        print(f"{stem} ...", file=sys.stderr, flush=True)
        row = measure_model(stem, folder, Path(args.datasets) / "Set5", len(cores))
        row["verdicts"] = verdicts(row, dot)
        report["rows"].append(row)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for suffix, text in (("json", json.dumps(report, indent=1)), ("md", markdown(report) + "\n")):
        with atomic_path(out / f"openvino_targets_{args.machine}.{suffix}") as tmp:
            Path(tmp).write_text(text)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
