"""ExecuTorch (XNNPACK) on this x86 CPU against ONNX Runtime, side by side in one run (issue 38's performance
item), and the memory of each shape policy.

    python -m srdeploy.benchmarks.executorch_speed --out benchmarks/results

Speed: FSRCNN ×2 and LESRCNN ×2 at 256×256, FP32 ``.pte`` (the default bound, 320×320) and FP32 ONNX, 1 and 2
threads, calls interleaved in rounds (``runtime.timing``). Memory: the peak RSS (``VmHWM``) of a process that opens
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
            wide = target("executorch").export(net, ExportOptions(precision="fp32", max_shape="1024x1024"),
                                               folder / "wide", Progress(False)).artifacts[0]
            channels = net.info.channels
            x = np.random.default_rng(0).random((1, channels, SIZE, SIZE), dtype=np.float32)
            for threads in (1, 2):
                medians = interleaved_medians({
                    "onnxruntime": OnnxSession(onnx, providers=["CPUExecutionProvider"], threads=threads).infer,
                    "executorch": ExecuTorchSession(pte, threads=threads).infer}, x, args.rounds)
                speed.append({"model": f"{model} ×2", "threads": threads, "onnxruntime_ms": medians["onnxruntime"],
                              "executorch_ms": medians["executorch"],
                              "ratio": medians["executorch"] / medians["onnxruntime"]})
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
        f"{', '.join(f'{k} {v}' for k, v in machine['libraries'].items())}. LR {SIZE}×{SIZE}, batch 1, FP32, median of "
        f"{args.rounds} interleaved rounds. x86 timings do not predict ARM phones.", "",
        markdown_table(["model", "threads", "ONNX Runtime ms", "ExecuTorch ms", "ExecuTorch / ORT"],
                       [[r["model"], str(r["threads"]), f"{r['onnxruntime_ms']:.1f}", f"{r['executorch_ms']:.1f}",
                         f"{r['ratio']:.2f}×"] for r in speed]), "",
        "Peak RSS (MB) of a process that opens the program and runs one 256×256 input:", "",
        markdown_table(["model", "ONNX Runtime", ".pte fixed 256×256", ".pte bounded 320×320 (default)",
                        ".pte bounded 1024×1024"],
                       [[r["model"], f"{r['onnxruntime_mb']:.0f}", f"{r['fixed_256_mb']:.0f}", f"{r['bounded_320_mb']:.0f}",
                         f"{r['bounded_1024_mb']:.0f}"] for r in memory])])
    write_results(args.out, "executorch_speed", report, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
