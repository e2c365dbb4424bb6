"""ExecuTorch (XNNPACK) on this x86 CPU against ONNX Runtime, side by side in one run (issue 38's performance
item), and the memory of each shape policy.

    python -m srdeploy.benchmarks.executorch_speed --out benchmarks/results

Speed: FSRCNN ×2 and LESRCNN ×2 at 256×256, FP32 and FP16 ``.pte`` (the default bound, 320×320) and FP32 ONNX, 1
and 2 threads, calls interleaved in rounds (``runtime.timing``); FP16 exported with a 0.05 dB gate so that both
models have one, its held-out drop reported beside it. Memory: the peak RSS (``VmHWM``) of a process that opens
the program and runs one 256×256 input, per shape policy: fixed 256×256, bounded to 320×320 (the default), bounded
to 1024×1024; and of ONNX Runtime doing the same. x86 timings do not predict ARM phones (XNNPACK's ARM kernels are
other code). Writes ``executorch_speed_<machine>.{md,json}``.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .bench import cpu_text, report_header, write_results
from ..export.options import ExportOptions, Progress
from ..models.spec import ModelSpec
from ..runtime.sessions.executorch import ExecuTorchSession
from ..runtime.sessions.onnxruntime import OnnxSession
from ..runtime.tables import markdown_table
from ..runtime.targets import target
from ..runtime.timing import interleaved_medians

MODELS = ("fsrcnn", "lesrcnn")
SIZE = 256
FP16_MAX_DROP = 0.05  # dB: the FP16 programs timed here, whatever the default 0.01 dB gate says of them
PEAK = """import sys, numpy as np
kind, path, channels = sys.argv[1], sys.argv[2], int(sys.argv[3])
x = np.random.default_rng(0).random((1, channels, 256, 256), dtype=np.float32)
if kind == "pte":
    import torch
    from executorch.runtime import Runtime
    method = Runtime.get().load_program(path).load_method("forward")
    method.execute([torch.from_numpy(x)])
else:
    from srdeploy.runtime.sessions.onnxruntime import OnnxSession
    OnnxSession(path).infer(x)
from srdeploy.benchmarks.bench import peak_rss_mb
print(peak_rss_mb())
"""


def fixed_program(model: str, folder: Path) -> Path:
    """The network as a .pte for exactly 1×C×256×256 (the fixed-shape policy, for its memory)."""
    import torch

    from ..export.executorch.pte_export import import_executorch, subpixel_network

    to_edge_transform_and_lower, partitioner = import_executorch()
    net = ModelSpec(model, 2).load()
    network, _ = subpixel_network(net.network)
    with torch.no_grad():
        program = torch.export.export(network, (torch.rand(1, net.info.channels, SIZE, SIZE),))
    path = folder / f"{model}_fixed.pte"
    path.write_bytes(to_edge_transform_and_lower(program, partitioner=[partitioner()]).to_executorch().buffer)
    return path


def peak_mb(kind: str, path: Path, channels: int) -> float:
    done = subprocess.run([sys.executable, "-c", PEAK, kind, str(path), str(channels)], capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"memory probe failed: {done.stderr[-400:]}")
    return float(done.stdout.split()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    report = report_header("python -m srdeploy.benchmarks.executorch_speed", ", ".join(MODELS), 2, None)
    speed, memory = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for model in MODELS:
            folder = Path(scratch) / model
            net = ModelSpec(model, 2).load()
            onnx = target("onnx").export(net, ExportOptions(precision="fp32"), folder, Progress(False)).artifacts[0]
            pte = target("executorch").export(net, ExportOptions(precision="fp32"), folder, Progress(False)).artifacts[0]
            half = target("executorch").export(net, ExportOptions(precision="fp16", max_psnr_drop=FP16_MAX_DROP),
                                               folder / "fp16", Progress(False))
            wide = target("executorch").export(net, ExportOptions(precision="fp32", max_shape="1024x1024"),
                                               folder / "wide", Progress(False)).artifacts[0]
            channels = net.info.channels
            x = np.random.default_rng(0).random((1, channels, SIZE, SIZE), dtype=np.float32)
            for threads in (1, 2):
                medians = interleaved_medians({
                    "onnxruntime": OnnxSession(onnx, providers=["CPUExecutionProvider"], threads=threads).infer,
                    "executorch": ExecuTorchSession(pte, threads=threads).infer,
                    "executorch_fp16": ExecuTorchSession(half.artifacts[0], threads=threads).infer}, x, args.rounds)
                speed.append({"model": f"{model} ×2", "threads": threads, "onnxruntime_ms": medians["onnxruntime"],
                              "executorch_ms": medians["executorch"], "executorch_fp16_ms": medians["executorch_fp16"],
                              "ratio": medians["executorch"] / medians["onnxruntime"],
                              "fp16_ratio": medians["executorch_fp16"] / medians["onnxruntime"],
                              "fp16_drop_db": half.report.drop_db,
                              "fp16_kept_float": half.details["executorch"]["fp16"]["kept_float"]})
                print(speed[-1], flush=True)
            fixed = fixed_program(model, folder)
            memory.append({"model": f"{model} ×2", "onnxruntime_mb": peak_mb("onnx", onnx, channels),
                           "fixed_256_mb": peak_mb("pte", fixed, channels),
                           "bounded_320_mb": peak_mb("pte", pte / "model.pte", channels),
                           "bounded_1024_mb": peak_mb("pte", wide / "model.pte", channels)})
            print(memory[-1], flush=True)
    report["speed"], report["memory"] = speed, memory
    machine = report["machine"]
    text = "\n".join([
        f"`{report['command']}` — {report['date']}", "",
        f"Machine: {cpu_text(machine)}, {machine['usable_cores']} usable cores; "
        f"{', '.join(f'{k} {v}' for k, v in machine['libraries'].items())}. LR {SIZE}×{SIZE}, batch 1, ONNX Runtime FP32, "
        f"median of {args.rounds} interleaved rounds; FP16 drop: held-out crops through ExecuTorch against PyTorch FP32 "
        "(the default gate is 0.01 dB). x86 timings do not predict ARM phones.", "",
        markdown_table(["model", "threads", "ONNX Runtime ms", "ExecuTorch FP32 ms", "FP32 / ORT", "ExecuTorch FP16 ms",
                        "FP16 / ORT", "FP16 drop dB", "FP16: in FP32"],
                       [[r["model"], str(r["threads"]), f"{r['onnxruntime_ms']:.1f}", f"{r['executorch_ms']:.1f}",
                         f"{r['ratio']:.2f}×", f"{r['executorch_fp16_ms']:.1f}", f"{r['fp16_ratio']:.2f}×",
                         f"{r['fp16_drop_db']:.4f}", ", ".join(r["fp16_kept_float"]) or "–"] for r in speed]), "",
        "Peak RSS (MB) of a process that opens the program and runs one 256×256 input:", "",
        markdown_table(["model", "ONNX Runtime", ".pte fixed 256×256", ".pte bounded 320×320 (default)",
                        ".pte bounded 1024×1024"],
                       [[r["model"], f"{r['onnxruntime_mb']:.0f}", f"{r['fixed_256_mb']:.0f}", f"{r['bounded_320_mb']:.0f}",
                         f"{r['bounded_1024_mb']:.0f}"] for r in memory])])
    write_results(args.out, "executorch_speed", report, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
