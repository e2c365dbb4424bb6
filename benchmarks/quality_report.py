"""Quality report: model × scale × precision → PSNR/SSIM on test sets, ΔPSNR vs FP32, artifact size,
INT8 share of convolution MACs.

    python -m srdeploy.benchmarks.quality_report --datasets ../shared/datasets/Set5,../shared/datasets/Set14 \\
        --out benchmarks/results [--artifacts DIR]

Exports each artifact (calibrated on scikit-image's photos, gated on their held-out split, never on the
test sets), evaluates it on ONNX Runtime CPU with the evaluation protocol, and writes ``quality.md``,
``quality.json`` and ``quality_int8.png`` (ΔPSNR against the INT8 share of MACs).
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

from .. import models
from ..runtime.quality import dataset_pairs, evaluate
from ..export.quant import int8_checker
from ..export.onnx.onnx_export import save
from ..export.precision import export_precision, float_summary
from ..models.registry import CHECKPOINTS, architecture
from ..runtime.atomic import atomic_path
from ..runtime.sessions.onnxruntime import OnnxSession
from ..runtime.tables import markdown_table


def measure(datasets: list[Path], precisions: list[str], names: list[str], artifacts: str | None) -> list[dict]:
    rows = []
    jobs = [(c.model, c.scale, p) for c in CHECKPOINTS if c.model in names for p in precisions]
    with tempfile.TemporaryDirectory() as tmp:
        for name, scale, precision in tqdm(jobs, desc="quality report", unit="artifact"):
            model = models.load(name, scale)
            proto, report = export_precision(model, precision, progress=False, enforce=False)
            path = save(proto, Path(artifacts or tmp) / f"{name}_x{scale}_{precision}.onnx")
            session, arch = OnnxSession(path), architecture(name)
            row = {"model": name, "scale": scale, "precision": precision, "size_bytes": path.stat().st_size,
                   "kept_float": report.kept_float, "heldout_drop_db": report.drop_db,
                   "int8_mac_fraction": report.int8_mac_fraction, "int8_search": report.int8,
                   "tensorrt_qdq_rules": None if precision != "int8" else (int8_checker.check_qdq(proto) or "ok"), "datasets": {}}
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
    header = (["model", "scale", "precision"] + [f"{d} PSNR/SSIM (Δ dB)" for d in datasets]
              + ["held-out Δ dB", "INT8 MACs", "kept float", "size"])
    cells = []
    for r in rows:
        scores = [f"{r['datasets'][d]['psnr']:.3f}/{r['datasets'][d]['ssim']:.4f} ({r['datasets'][d]['delta_psnr_db']:+.4f})"
                  for d in datasets]
        share = "" if r["int8_mac_fraction"] is None else f"{r['int8_mac_fraction']:.1%}"
        cells.append([r["model"], f"×{r['scale']}", r["precision"], *scores, f"{-r['heldout_drop_db']:+.4f}", share,
                      float_summary(r["kept_float"], (r["int8_search"] or {}).get("float_channels", {})),
                      f"{r['size_bytes'] / 1e6:.2f} MB"])
    return markdown_table(header, cells)


def plot(rows: list[dict], datasets: list[str], path: Path, target_db: float = 0.1, min_share: float = 0.8) -> None:
    """ΔPSNR vs FP32 against the INT8 share of convolution MACs, one point per INT8 artifact and test set;
    the shaded box is the target (at most ``target_db`` lost with at least ``min_share`` of MACs in INT8)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    int8_rows = [r for r in rows if r["precision"] == "int8"]
    figure, axes = plt.subplots(figsize=(7.5, 4.5))
    axes.add_patch(plt.Rectangle((100 * min_share, -target_db), 100 * (1 - min_share), target_db + 0.02,
                                 color="tab:green", alpha=0.12, label=f"target: ≤ {target_db} dB, ≥ {min_share:.0%} INT8"))
    for marker, dataset in zip("os^v", datasets):
        points = [(100 * r["int8_mac_fraction"], r["datasets"][dataset]["delta_psnr_db"], r) for r in int8_rows]
        axes.scatter([p[0] for p in points], [p[1] for p in points], marker=marker, label=dataset)
        for x, y, r in points if dataset == datasets[0] else []:  # one label per artifact
            axes.annotate(f"{r['model']} ×{r['scale']}", (x, y), fontsize=7, xytext=(4, -9), textcoords="offset points")
    axes.set_xlabel("convolution MACs in INT8 (%)")
    axes.set_ylabel("ΔPSNR vs FP32 (dB, Y channel)")
    axes.set_title("INT8 Q/DQ (TensorRT placement) on ONNX Runtime CPU")
    axes.legend(fontsize=8, loc="lower right")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", required=True, help="comma-separated BasicSR-layout dataset folders")
    parser.add_argument("--precisions", default="fp32,fp16,int8")
    parser.add_argument("--models", default="lesrcnn,fsrcnn,dsrnet", help="models with official checkpoints")
    parser.add_argument("--out", required=True)
    parser.add_argument("--artifacts", help="keep the exported artifacts in this folder")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    datasets = [Path(d) for d in args.datasets.split(",")]
    rows = measure(datasets, args.precisions.split(","), args.models.split(","), args.artifacts)
    machine = {"cpu": platform.processor() or platform.machine(), "onnxruntime": onnxruntime.__version__}
    out = Path(args.out)
    table = markdown(rows, [d.name for d in datasets])
    with atomic_path(out / "quality.json") as tmp:
        tmp.write_text(json.dumps({"machine": machine, "command": " ".join(["python -m srdeploy.benchmarks.quality_report", *argv]),
                                   "rows": rows}, indent=2))
    with atomic_path(out / "quality.md") as tmp:
        tmp.write_text(f"Measured on ONNX Runtime {onnxruntime.__version__} CPU.\n\n{table}\n")
    if any(r["precision"] == "int8" for r in rows):
        plot(rows, [d.name for d in datasets], out / "quality_int8.png")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
