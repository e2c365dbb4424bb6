"""ExecuTorch INT8: the project's search carried over to XNNPACK against XNNPACKQuantizer's defaults (the anchor), on
Set5, Set14 and the held-out crops, through ExecuTorch's runtime; and the speed of each against ONNX Runtime FP32 in
one run (issue 38's INT8 table and performance item).

    python -m srdeploy.benchmarks.executorch_int8 --out benchmarks/results [--models fsrcnn:2,lesrcnn:2]

Ours: what ``export --target executorch --precision int8`` lowers (``pte_int8.int8_module`` at the default target),
measured here without the gate so that every checkpoint has its numbers; the gate's verdict at 0.1 dB is a
column (the same held-out crops, through ExecuTorch). The anchor: the same sub-pixel network,
``XNNPACKQuantizer`` with ``get_symmetric_quantization_config(is_per_channel=True)`` (static, histogram ranges),
calibrated on the same calibration crops, lowered alike (weights a second convolution reads are copied: without that
XNNPACK refuses LESRCNN's program, ``pte_int8.unshared_weights``). Set5/Set14: Y PSNR, the evaluation protocol,
tiles of 256 with 32 pixels of context. Speed: LR 256×256, 2 threads, interleaved rounds. x86 timings do not
predict ARM phones. Writes ``executorch_int8_<machine>.{md,json}``.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
import tempfile
from pathlib import Path

import numpy as np

from .bench import cpu_text, report_header, write_results
from ..calib.data import CropSpec, lr_hr_crops, network_batch, source_images
from ..export.options import ExportOptions, Progress
from ..export.precision import VALIDATION_SPEC
from ..models.spec import ModelSpec
from ..models.torch_runner import TorchRunner
from ..runtime.quality import crop_psnr, dataset_pairs, evaluate
from ..runtime.sessions.executorch import ExecuTorchSession, ProgramRunner
from ..runtime.sessions.onnxruntime import OnnxSession
from ..runtime.tables import markdown_table
from ..runtime.targets import target
from ..runtime.tiling import tiled_infer
from ..runtime.timing import interleaved_medians

MODELS = ("fsrcnn:2", "fsrcnn:3", "fsrcnn:4", "lesrcnn:2", "lesrcnn:3", "lesrcnn:4")
DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
SIZE, TILE, CONTEXT, THREADS = 256, 256, 32, 2


def programs(net) -> tuple[ProgramRunner, ProgramRunner, dict]:
    """Ours (``pte_int8.int8_module`` at the default target, not gated here: the gate's verdict is measured) and the
    anchor (XNNPACKQuantizer's defaults on the same calibration crops), lowered alike; ours' report."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)

    from ..export.executorch.pte_export import exporter, lower, subpixel_network
    from ..export.executorch.pte_int8 import calibrated, int8_module, unshared_weights

    info = net.info
    exported = exporter(info.channels, info.export.min_size, TILE + 2 * CONTEXT, TILE + 2 * CONTEXT)
    module_of = lambda network: unshared_weights(exported(network).module())  # noqa: E731
    parts, report = int8_module(net, lambda n: subpixel_network(n)[0], module_of, None, None, progress=True)
    ours = parts["forward"]  # the models here have no whole-image gate
    calibration = network_batch(lr_hr_crops(source_images(None, "calibration"), info.scale, CropSpec()), info.colour)
    anchor = calibrated(module_of(subpixel_network(net.network)[0]),
                        XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True)), calibration)
    return ProgramRunner(lower(exported(ours))), ProgramRunner(lower(exported(anchor))), asdict(report)


def measure(name: str, scale: int, folder: Path, rounds: int) -> dict:
    net = ModelSpec(name, scale).load()
    info = net.info
    ours, anchor, int8 = programs(net)
    fp32 = target("executorch").export(net, ExportOptions(precision="fp32"), folder / "fp32", Progress(False))
    onnx = target("onnx").export(net, ExportOptions(precision="fp32"), folder / "onnx", Progress(False))
    runners = {"pytorch_fp32": TorchRunner(net.network).infer, "ours": ours.infer, "anchor": anchor.infer}
    tiled = {k: (lambda x, f=f: tiled_infer(x, f, scale, TILE, CONTEXT, info.export.min_size))
             for k, f in runners.items()}
    crops = lr_hr_crops(source_images(None, "validation"), scale, VALIDATION_SPEC)
    row = {"model": f"{name} ×{scale}", "int8": int8,
           "held_out_db": {k: crop_psnr(f, crops, scale, info.colour, info.eval_rounding) for k, f in runners.items()},
           "datasets": {}}
    row["gate_at_0.1"] = row["held_out_db"]["pytorch_fp32"] - row["held_out_db"]["ours"] <= 0.1
    for dataset in ("Set5", "Set14"):
        pairs = dataset_pairs(DATASETS / dataset, scale)
        row["datasets"][dataset] = {k: evaluate(f, pairs, model=name, scale=scale, colour=info.colour,
                                                rounding=info.eval_rounding, dataset=dataset, progress=False).psnr
                                    for k, f in tiled.items()}
    x = np.random.default_rng(0).random((1, info.channels, SIZE, SIZE), dtype=np.float32)
    row["ms"] = interleaved_medians({
        "onnxruntime_fp32": OnnxSession(onnx.artifacts[0], providers=["CPUExecutionProvider"], threads=THREADS).infer,
        "executorch_fp32": ExecuTorchSession(fp32.artifacts[0], threads=THREADS).infer,
        "ours": ours.infer, "anchor": anchor.infer}, x, rounds)
    return row


def drop(row: dict, where: str, key: str) -> str:
    values = row["held_out_db"] if where == "held-out" else row["datasets"][where]
    return f"{values['pytorch_fp32'] - values[key]:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--models", default=",".join(MODELS), help="NAME:SCALE,... (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    models = [(m.split(":")[0], int(m.split(":")[1])) for m in args.models.split(",")]
    report = report_header("python -m srdeploy.benchmarks.executorch_int8", args.models, THREADS, None)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, scale in models:
            rows.append(measure(name, scale, Path(scratch) / f"{name}_x{scale}", args.rounds))
            print(json.dumps(rows[-1]), flush=True)
    report["rows"] = rows
    machine = report["machine"]
    places = ("held-out", "Set5", "Set14")
    text = "\n".join([
        f"`{report['command']}` — {report['date']}", "",
        f"Machine: {cpu_text(machine)}, {machine['usable_cores']} usable cores; "
        f"{', '.join(f'{k} {v}' for k, v in machine['libraries'].items())}. PSNR drop (dB, Y) against PyTorch FP32, "
        "through ExecuTorch's runtime; ours = the project's search carried over, anchor = XNNPACKQuantizer's "
        f"defaults. Speed: LR {SIZE}×{SIZE}, {THREADS} threads, median of {args.rounds} interleaved rounds, as a "
        "share of ONNX Runtime FP32's time. x86 timings do not predict ARM phones.", "",
        markdown_table(
            ["model", "activations", "INT8 MACs"] + [f"{p} ours / anchor" for p in places]
            + ["gate 0.1 dB", "ORT FP32 ms", "ours", "anchor", "ExecuTorch FP32"],
            [[r["model"], r["int8"]["activations"], f"{r['int8']['int8_mac_fraction']:.1%}"]
             + [f"{drop(r, p, 'ours')} / {drop(r, p, 'anchor')}" for p in places]
             + ["passes" if r["gate_at_0.1"] else "refused", f"{r['ms']['onnxruntime_fp32']:.1f}"]
             + [f"{r['ms'][k] / r['ms']['onnxruntime_fp32']:.2f}×" for k in ("ours", "anchor", "executorch_fp32")]
             for r in rows])])
    write_results(args.out, "executorch_int8", report, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
