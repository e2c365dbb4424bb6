"""Our INT8 against NNCF, OpenVINO's own quantizer, on OpenVINO: accuracy, executed INT8 share, latency.

    python -m srdeploy.benchmarks.nncf_compare --models fsrcnn:2,lesrcnn:2,dsrnet:2 --datasets ../shared/datasets \\
        --out benchmarks/results

Every quantizer starts from the same FP32 ONNX graph (as the FP32 IR holds it: DSRNet's gate as a per-image
select, which NNCF can quantize, where it fails on an ``If``) and calibrates on the same crops of the same
(scikit-image) photos our export uses. NNCF runs twice: ``nncf.quantize`` with its defaults, and
``nncf.quantize_with_accuracy_control`` with a 0.1 dB absolute budget scored on the held-out crops (the
data our gate uses; never Set5/Set14). Ours is what ``export --target openvino --precision int8`` compiles
(the TensorRT-legal Q/DQ graph with its centred tensors as u8 zero points, DSRNet's gate as a select and each INT8
convolution's channels in the pair order,
``export.openvino.openvino_export.ir_graph``),
and beside it the Q/DQ graph as TensorRT reads it (``export --precision int8``).
Each row: held-out PSNR drop against FP32, Set5/Set14 drop against FP32 (PSNR against the ground truth,
evaluation protocol), the share of conv MACs the compiled model executes in u8/i8, and the median latency
at 256×256 in one process on this CPU (its features recorded), all through OpenVINO at f32 inference
precision, beside ONNX Runtime FP32.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

from .. import models
from ..runtime.quality import crop_psnr, dataset_pairs, evaluate
from ..calib.data import CropSpec, lr_hr_crops, network_batch, source_images
from ..export.onnx.onnx_export import save, to_onnx
from ..export.openvino.openvino_export import ir_graph, pair_order_crops
from ..export.precision import VALIDATION_SPEC, export_precision
from ..runtime.atomic import atomic_path
from ..runtime.sessions.onnxruntime import OnnxSession
from ..runtime.sessions.openvino import ExecutedPrecisions, compile_config, conv_macs, executed_convs
from ..runtime.precision import Precision
from ..runtime.progress import Stages
from ..runtime.tables import markdown_table
from ..runtime.timing import SETTLE_S, interleaved_medians
from .bench import cpu_text, report_header

BUDGET_DB = 0.1
SIZE = 256


def compiled(ov, model):
    """OpenVINO's CPU compilation at f32 inference precision, as the session compiles."""
    return ov.Core().compile_model(model, "CPU", compile_config(cache=False))


def infer_of(model_compiled):
    request = model_compiled.create_infer_request()

    def infer(x: np.ndarray) -> np.ndarray:
        request.infer({0: np.ascontiguousarray(x, np.float32)})
        return request.get_output_tensor(0).data.copy()
    return infer


def nncf_models(ov, fp32: Path, batch: np.ndarray, validation, psnr_of) -> dict:
    """NNCF's default quantization and its accuracy-controlled one (``BUDGET_DB`` on the held-out crops)."""
    import nncf

    source = ov.Core().read_model(fp32)
    calibration = nncf.Dataset([x[None] for x in batch])

    def validate(model_compiled, items) -> float:
        return psnr_of(infer_of(model_compiled), list(items))

    runs = {
        "nncf": lambda: nncf.quantize(source, calibration, subset_size=len(batch)),
        "nncf-accuracy-control": lambda: nncf.quantize_with_accuracy_control(
            source, calibration, nncf.Dataset(validation), validate, max_drop=BUDGET_DB,
            drop_type=nncf.DropType.ABSOLUTE, subset_size=len(batch)),
    }
    found = {}
    for name, run in runs.items():
        try:
            found[name] = run()
        except Exception as exc:  # noqa: BLE001 - a failure of NNCF is a result to report, not a crash
            found[name] = f"NNCF failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:160]}"
    return found


def compare(name: str, scale: int, datasets: Path, work: Path, stage: Stages) -> list[dict]:
    import openvino as ov

    model = models.load(name, scale)
    info = model.info
    rounding = info.eval_rounding
    stage(f"{name} ×{scale}: FP32 graph and our INT8 graph")
    fp32 = save(to_onnx(model), work / f"{name}_x{scale}_fp32.onnx")
    ours_path = save(export_precision(model, "int8", progress=False)[0], work / f"{name}_x{scale}_int8.onnx")
    pairs = lr_hr_crops(source_images(None, "calibration"), scale, CropSpec())
    validation = lr_hr_crops(source_images(None, "validation"), scale, VALIDATION_SPEC)

    def psnr_of(infer, crops) -> float:
        return crop_psnr(infer, crops, scale, info.colour, rounding)

    stage(f"{name} ×{scale}: NNCF (default, then accuracy control at {BUDGET_DB} dB)")
    ir_form = save(ir_graph(onnx.load(ours_path), Precision.INT8, pair_order_crops(None, info))[0],
                   work / f"{name}_x{scale}_int8_ir.onnx")
    fp32_ir = save(ir_graph(onnx.load(fp32), Precision.FP32, None)[0], work / f"{name}_x{scale}_fp32_ir.onnx")
    candidates = {"ours": ov.Core().read_model(ir_form), "ours, TensorRT's form": ov.Core().read_model(ours_path),
                  **nncf_models(ov, fp32_ir, network_batch(pairs, info.colour), validation, psnr_of)}
    reference = OnnxSession(fp32).infer
    held_out_fp32 = psnr_of(reference, validation)
    sets = {d: dataset_pairs(datasets / d, scale) for d in ("Set5", "Set14")}
    set_fp32 = {d: evaluate(reference, p, model=name, scale=scale, colour=info.colour, rounding=rounding,
                            dataset=d, progress=False).psnr for d, p in sets.items()}
    rows = [{"model": f"{name} ×{scale}", "quantizer": quantizer, "held_out_drop_db": 0.0,
             **{f"{d}_drop_db": 0.0 for d in sets}, "int8_executed": 0.0}
            for quantizer in ("ONNX Runtime FP32", "OpenVINO FP32")]
    infers = {"ONNX Runtime FP32": reference, "OpenVINO FP32": infer_of(compiled(ov, ov.Core().read_model(fp32_ir)))}
    for quantizer, candidate in candidates.items():
        stage(f"{name} ×{scale}: scoring {quantizer}")
        row = {"model": f"{name} ×{scale}", "quantizer": quantizer}
        if isinstance(candidate, str):
            rows.append({**row, "failed": candidate})
            continue
        macs = conv_macs(candidate, info.channels, scale=scale)
        model_compiled = compiled(ov, candidate)
        executed = ExecutedPrecisions("f32", executed_convs(model_compiled, macs), None)
        infer = infer_of(model_compiled)
        row["held_out_drop_db"] = held_out_fp32 - psnr_of(infer, validation)
        for d, p in sets.items():
            row[f"{d}_drop_db"] = set_fp32[d] - evaluate(infer, p, model=name, scale=scale, colour=info.colour,
                                                         rounding=rounding, dataset=d, progress=False).psnr
        row["int8_executed"] = executed.int8_mac_fraction
        infers[quantizer] = infer
        rows.append(row)
    stage(f"{name} ×{scale}: latency, interleaved")
    x = np.random.default_rng(0).random((1, info.channels, SIZE, SIZE), dtype=np.float32)
    medians = interleaved_medians(infers, x)
    for row in rows:
        if "failed" not in row:
            row["median_ms"] = medians[row["quantizer"]]
            row["vs_ort_fp32"] = row["median_ms"] / medians["ONNX Runtime FP32"]
    return rows


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"`{report['command']}` — {report['date']}", "",
             f"Machine: {cpu_text(m)}, "
             f"{m['usable_cores']} cores; OpenVINO {m['libraries'].get('openvino')}, NNCF {report['nncf']}, "
             f"ONNX Runtime {m['libraries'].get('onnxruntime')}. OpenVINO at f32 inference precision; latency: median "
             f"of 15 rounds at {SIZE}×{SIZE} LR, batch 1, one process, each round one call of every row in turn, "
             f"each call {SETTLE_S} s after the previous one. Drops are FP32 PSNR minus quantized PSNR "
             f"(positive: a loss); held-out: {VALIDATION_SPEC.count} crops of the held-out photos.", ""]
    rows = []
    for r in report["rows"]:
        if "failed" in r:
            rows.append([r["model"], r["quantizer"], "", "", "", "", "", "", r["failed"]])
            continue
        rows.append([r["model"], r["quantizer"], f"{r['held_out_drop_db']:+.3f}", f"{r['Set5_drop_db']:+.3f}",
                     f"{r['Set14_drop_db']:+.3f}", f"{r['int8_executed']:.1%}", f"{r['median_ms']:.1f}",
                     f"{r['vs_ort_fp32']:.2f}×", ""])
    lines.append(markdown_table(["model", "quantizer", "held-out drop dB", "Set5 drop dB", "Set14 drop dB",
                                 "conv MACs run in u8/i8", "median ms", "vs ORT FP32", "note"], rows))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m srdeploy.benchmarks.nncf_compare", description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="fsrcnn:2,lesrcnn:2,dsrnet:2", help="name:scale,... (default %(default)s)")
    parser.add_argument("--datasets", default="../shared/datasets", help="folder holding Set5/ and Set14/")
    parser.add_argument("--out", default="benchmarks/results", help="folder for nncf_compare_<machine>.{md,json}")
    parser.add_argument("--machine", required=True, help="slug naming the results file, e.g. cpu-amd-epyc-avx2")
    args = parser.parse_args(argv)
    from importlib import metadata


    stage = Stages("nncf compare", True)
    command = "python -m srdeploy.benchmarks.nncf_compare " + " ".join(sys.argv[1:] if argv is None else argv)
    report = {**report_header(command, "", 0, None), "nncf": metadata.version("nncf"), "rows": []}
    with tempfile.TemporaryDirectory() as work:
        for item in args.models.split(","):
            name, scale = item.split(":")
            report["rows"] += compare(name, int(scale), Path(args.datasets), Path(work), stage)
    out = Path(args.out)
    with atomic_path(out / f"nncf_compare_{args.machine}.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    table = markdown(report)
    with atomic_path(out / f"nncf_compare_{args.machine}.md") as tmp:
        tmp.write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
