"""Core ML report: every zoo model and scale through ``export --target coreml`` (convert, Linux check,
held-out gate), and the cost of weight compression on Set5 through the FP16-emulating MIL executor.

    python -m srdeploy.benchmarks.coreml_report --fixtures ../shared/fixtures/reference --dataset ../shared/datasets/Set5

Checkpoints: the official ones, or the fixtures' random-weight checkpoints where none is public (their held-out
PSNR is meaningless, so their drop is reported, not gated). Writes ``benchmarks/results/coreml.{md,json}``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from .. import models
from ..runtime.quality import dataset_pairs, evaluate
from ..export.coreml.coreml_export import CoreMLOptions, CoreMLShapes
from ..export.coreml.coreml_package import export_package
from ..export.coreml.coreml_verify import executor_infer
from ..models.registry import architecture, default_checkpoint, list_models
from ..runtime.atomic import atomic_path
from ..runtime.tables import markdown_table
from ..models.torch_runner import TorchRunner

RANDOM = {"lesrcnn_b": "lesrcnn_multiscale_random.pth", "esrgcnn": "esrgcnn_multiscale_random.pth",
          "cfsrcnn": "cfsrcnn_x{s}_random.pth", "dsrnet": "dsrnet_x{s}_random.pth"}
COMPRESSION_CASES = [("none", "iOS16"), ("linear8", "iOS16"), ("palette6", "iOS16"), ("palette6", "iOS18"),
                     ("palette4", "iOS18")]
SHAPES = CoreMLShapes(min=(16, 16), default=(256, 256), max=(540, 960))


def zoo_sweep(fixtures: Path, out: Path) -> list[dict]:
    rows = []
    for entry in tqdm(list_models(), desc="coreml", unit="model"):
        name, scale = entry.architecture.name, entry.scale
        official = default_checkpoint(name, scale) is not None
        weights = None if official else fixtures / RANDOM[name].format(s=scale)
        model = models.load(name, scale, weights)
        start = time.perf_counter()
        path, report = export_package(model, CoreMLOptions(shapes=SHAPES), out, max_drop=None if official else float("inf"))
        cases = report.verification["cases"].values()
        rows.append({"model": name, "scale": scale, "weights": "official" if official else "random (fixture)",
                     "seconds": time.perf_counter() - start, "passed": report.verification["passed"],
                     "tensors": report.verification["constants"]["checked"],
                     "fp32_max_abs": max(c["fp32_max_abs"] for c in cases),
                     "fp16_psnr_min": min(c["fp16_psnr_vs_checkpoint"] for c in cases),
                     "drop_db": report.drop_db if official else None, "size_mb": report.size_mb})
    return rows


def compression_table(dataset: Path, out: Path) -> list[dict]:
    model = models.load("lesrcnn", 2)
    rounding, pairs = architecture("lesrcnn").eval_rounding, dataset_pairs(dataset, 2)
    score = lambda infer: evaluate(infer, pairs, model="lesrcnn", scale=2, colour="rgb", rounding=rounding,  # noqa: E731
                                   dataset=dataset.name, progress=False).psnr
    reference = score(TorchRunner(model.network).infer)
    rows = []
    for compression, target in tqdm(COMPRESSION_CASES, desc="compression", unit="variant"):
        options = CoreMLOptions(shapes=SHAPES, compression=compression, deployment_target=target)
        path, report = export_package(model, options, out, max_drop=float("inf"), name=f"lesrcnn_x2_{compression}_{target}")
        psnr = score(executor_infer(path, "fp16"))
        rows.append({"compression": compression, "target": target, "size_mb": report.size_mb,
                     "held_out_drop_db": report.drop_db, "set5_psnr": psnr, "set5_delta_db": psnr - reference,
                     "set5_psnr_pytorch": reference})
    return rows


def markdown(sweep: list[dict], compression: list[dict], command: str) -> str:
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    zoo = markdown_table(
        ["model", "scale", "weights", "check", "tensors bit-exact", "FP32-mode max abs", "FP16 min PSNR dB",
         "held-out drop dB", "MB", "s"],
        [[r["model"], f"×{r['scale']}", r["weights"], "pass" if r["passed"] else "FAIL", str(r["tensors"]),
          f"{r['fp32_max_abs']:.1e}", f"{r['fp16_psnr_min']:.1f}", fmt(r["drop_db"], "+.4f"), f"{r['size_mb']:.2f}",
          f"{r['seconds']:.0f}"] for r in sweep])
    comp = markdown_table(
        ["weights", "target", "MB", "held-out drop dB", "Set5 PSNR dB", "Set5 Δ vs PyTorch dB"],
        [[r["compression"], r["target"], f"{r['size_mb']:.2f}", f"{r['held_out_drop_db']:+.4f}",
          f"{r['set5_psnr']:.3f}", f"{r['set5_delta_db']:+.4f}"] for r in compression])
    return (f"# Core ML packages (Linux check, NumPy MIL executor)\n\n`{command}`\n\n## Every model and scale "
            f"(FP16, range sizes {SHAPES.min}…{SHAPES.max})\n\n{zoo}\n\n## Weight compression, LESRCNN ×2 "
            f"(FP16-emulated; PyTorch FP32 Set5 {compression[0]['set5_psnr_pytorch']:.3f} dB)\n\n{comp}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", required=True, type=Path, help="folder with the random-weight checkpoints")
    parser.add_argument("--dataset", required=True, type=Path, help="Set5 (BasicSR layout) for the compression table")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    command = "python -m srdeploy.benchmarks.coreml_report " + " ".join(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory() as work:
        sweep, compression = zoo_sweep(args.fixtures, Path(work)), compression_table(args.dataset, Path(work))
    report = {"command": command, "zoo": sweep, "compression": compression}
    with atomic_path(args.results / "coreml.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    with atomic_path(args.results / "coreml.md") as tmp:
        tmp.write_text(markdown(sweep, compression, command))
    print(markdown(sweep, compression, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
