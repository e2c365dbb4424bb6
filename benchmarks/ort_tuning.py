"""ONNX Runtime CPU session options, one change at a time, on one artifact: what each does to latency.

    python -m srdeploy.benchmarks.ort_tuning out/lesrcnn_x2_fp32.onnx out/lesrcnn_x2_int8.onnx --size 256 \\
        --out benchmarks/results/ort_tuning_cpu.md

Each variant gets a fresh session; ``--warmup`` untimed runs, then ``--runs`` timed ones on one
1×C×size×size input. A benchmark: it measures and reports, with the machine.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tqdm import tqdm

from .bench import machine
from ..runtime.atomic import atomic_path
from ..runtime.tables import markdown_table
from ..runtime.timing import measure

LEVELS = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
          "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


def variants(cores: int) -> dict[str, dict]:
    """Name → session settings; the first is ONNX Runtime's default (what ``OnnxSession`` uses)."""
    return {
        "default (all optimizations, threads = cores, arena + memory pattern on)": {},
        "1 intra-op thread": {"threads": 1},
        f"{cores} intra-op threads, spinning off": {"threads": cores, "config": {"session.intra_op.allow_spinning": "0"}},
        "graph optimization basic": {"level": "basic"},
        "graph optimization extended": {"level": "extended"},
        "memory arena off": {"arena": False},
        "memory pattern off": {"pattern": False},
        "memory arena and pattern off": {"arena": False, "pattern": False},
        # ONNX Runtime's x86 CPU provider has no NHWC FP32 convolution; its layout optimisation is NCHWc
        # (channels blocked by the vector width), done by this transformer at level "all"
        "NCHWc blocked layout off (plain NCHW convolutions)": {"disabled": ["NchwcTransformer"]},
    }


def session(path: str, threads: int | None = None, level: str = "all", arena: bool = True, pattern: bool = True,
            config: dict[str, str] | None = None, disabled: list[str] | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = LEVELS[level]
    options.enable_cpu_mem_arena = arena
    options.enable_mem_pattern = pattern
    if threads:
        options.intra_op_num_threads = threads
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled or [])


def ort_cpu_int8(fp32_path: str, output: Path, scale: int, colour: str) -> str:
    """ONNX Runtime's own CPU INT8 format for comparison: QDQ with uint8 asymmetric activations, int8
    per-channel weights, int32 biases, conv outputs quantized too (DQ→Conv→Q units ORT fuses into
    QLinearConv), calibrated (min-max) on srdeploy's default calibration crops. Not TensorRT-compatible."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from ..calib.data import CropSpec, lr_hr_crops, network_batch, source_images

    batch = network_batch(lr_hr_crops(source_images(), scale, CropSpec(size=64, count=16)), colour)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(batch[i : i + 1] for i in range(len(batch)))

        def get_next(self):
            item = next(self.items, None)
            return None if item is None else {"lr": item}

    quantize_static(fp32_path, str(output), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["Conv"])
    return str(output)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("artifacts", nargs="+", help=".onnx files")
    parser.add_argument("--size", type=int, default=256, help="LR height and width")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--ort-int8", metavar="SCALE,COLOUR", help="also time ONNX Runtime's own CPU INT8 format of "
                        "the first artifact (e.g. 2,rgb): what AVX2 integer kernels give")
    parser.add_argument("--out", help="also write the table (markdown)")
    args = parser.parse_args(argv)
    facts = machine()
    cores = facts["usable_cores"]
    rows = []
    jobs = [(path, name, settings) for path in args.artifacts for name, settings in variants(cores).items()]
    if args.ort_int8:
        import tempfile

        scale, colour = args.ort_int8.split(",")
        path = ort_cpu_int8(args.artifacts[0], Path(tempfile.mkdtemp()) / "ort_u8s8_qdq.onnx", int(scale), colour)
        jobs.append((path, "default; ONNX Runtime's own U8S8 QDQ INT8 (not TensorRT's format)", {}))
    for path, name, settings in tqdm(jobs, desc="variants", unit="variant"):
        sess = session(path, **settings)
        input_ = sess.get_inputs()[0]
        x = np.random.default_rng(0).random((1, input_.shape[1], args.size, args.size), dtype=np.float32)
        feed = input_.name
        timing = measure(name, lambda a, s=sess, f=feed: s.run(None, {f: a})[0], x, args.warmup, args.runs)
        baseline = next((r[2] for r in rows if r[0] == Path(path).name), timing.median_ms)
        rows.append([Path(path).name, name, timing.median_ms, timing.p90_ms, timing.min_ms, timing.median_ms / baseline])
    table = markdown_table(["artifact", "session options", "median ms", "p90 ms", "min ms", "vs default"],
                           [[a, n, f"{m:.0f}", f"{p:.0f}", f"{lo:.0f}", f"{r:.2f}×"] for a, n, m, p, lo, r in rows])
    text = (f"Input 1×C×{args.size}×{args.size}, {args.runs} runs after {args.warmup} warm-up. Machine: {facts['cpu']}, "
            f"{cores} cores, onnxruntime {ort.__version__}.\n\n{table}")
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(f"Command: `python -m srdeploy.benchmarks.ort_tuning {' '.join(sys.argv[1:] if argv is None else argv)}`\n\n{text}\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
