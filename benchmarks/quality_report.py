"""Quality report: model × scale × precision → PSNR/SSIM on test sets, ΔPSNR vs FP32, artifact size.

    python -m benchmarks.quality_report --datasets ../shared/datasets/Set5,../shared/datasets/Set14 \\
        --out benchmarks/results

Exports each artifact (calibrated on the held-out-split photos, never on the test sets), evaluates it on
ONNX Runtime CPU with the evaluation protocol, and writes ``quality.md`` and ``quality.json``.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import onnxruntime
from tqdm import tqdm

import models
from benchmarks.quality import dataset_pairs, evaluate
from export.onnx_export import save
from export.precision import export_precision
from models.registry import CHECKPOINTS, architecture
from runtime.atomic import atomic_path
from runtime.onnx_backend import OnnxSession


def measure(datasets: list[Path], precisions: list[str], names: list[str]) -> list[dict]:
    rows = []
    jobs = [(c.model, c.scale, p) for c in CHECKPOINTS if c.model in names for p in precisions]
    with tempfile.TemporaryDirectory() as tmp:
        for name, scale, precision in tqdm(jobs, desc="quality report", unit="artifact"):
            model = models.load(name, scale)
            proto, report = export_precision(model, precision, max_drop=float("inf"), progress=False)
            path = save(proto, Path(tmp) / f"{name}_x{scale}_{precision}.onnx")
            session, arch = OnnxSession(path), architecture(name)
            row = {"model": name, "scale": scale, "precision": precision, "size_bytes": path.stat().st_size,
                   "kept_float": len(report.kept_float), "heldout_drop_db": report.drop_db, "datasets": {}}
            for root in datasets:
                result = evaluate(session.infer, dataset_pairs(root, scale), model=name, scale=scale,
                                  colour=arch.colour, rounding=arch.eval_rounding, dataset=root.name, progress=False)
                row["datasets"][root.name] = {"psnr": result.psnr, "ssim": result.ssim}
            rows.append(row)
    for row in rows:
        base = next(r for r in rows if (r["model"], r["scale"], r["precision"]) == (row["model"], row["scale"], "fp32"))
        for name, values in row["datasets"].items():
            values["delta_psnr_db"] = values["psnr"] - base["datasets"][name]["psnr"]
    return rows


def markdown(rows: list[dict], datasets: list[str]) -> str:
    header = ["model", "scale", "precision"] + [f"{d} PSNR/SSIM (Δ dB)" for d in datasets] + ["held-out Δ dB", "size"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["model"], f"×{r['scale']}", r["precision"]]
        for d in datasets:
            v = r["datasets"][d]
            cells.append(f"{v['psnr']:.3f}/{v['ssim']:.4f} ({v['delta_psnr_db']:+.4f})")
        cells += [f"{r['heldout_drop_db']:+.4f}", f"{r['size_bytes'] / 1e6:.2f} MB"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", required=True, help="comma-separated BasicSR-layout dataset folders")
    parser.add_argument("--precisions", default="fp32,fp16")
    parser.add_argument("--models", default="lesrcnn,fsrcnn,dsrnet", help="models with official checkpoints")
    parser.add_argument("--out", required=True)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    datasets = [Path(d) for d in args.datasets.split(",")]
    rows = measure(datasets, args.precisions.split(","), args.models.split(","))
    machine = {"cpu": platform.processor() or platform.machine(), "onnxruntime": onnxruntime.__version__}
    out = Path(args.out)
    table = markdown(rows, [d.name for d in datasets])
    with atomic_path(out / "quality.json") as tmp:
        tmp.write_text(json.dumps({"machine": machine, "command": " ".join(["python -m benchmarks.quality_report", *argv]),
                                   "rows": rows}, indent=2))
    with atomic_path(out / "quality.md") as tmp:
        tmp.write_text(f"Measured on ONNX Runtime {onnxruntime.__version__} CPU.\n\n{table}\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
