"""The prepared GPU run: is the zoo correct on CUDA, how fast are PyTorch's GPU paths, and does our ctypes
CUDA layer work against a real driver. One command, everything written under ``--out``:

    pip install --no-deps --no-build-isolation -e .   # the checkout as the srdeploy package; downloads nothing
    python -m srdeploy.benchmarks.gpu_run --out DIR [--shared ../shared] [--budget 300]

Steps, each recorded as ok / failed (with the error) / skipped (with the reason); none stops the others:

1. ``environment``: the checkout's modules import with the packages the machine has (nothing is
   installed); torch, CUDA, cuDNN and GPU facts.
2. ``gpu_tests``: ``pytest -m gpu`` (``tests/test_gpu.py``): every golden fixture through PyTorch on the GPU in
   FP32 (TF32 off) and FP16, DSRNet tiled on the device with the whole image's decision, and the ctypes CUDA
   layer under the TensorRT session against the driver; their counts and any failure's first line.
3. ``latency``: LESRCNN ×2, DSRNet ×2 and FSRCNN ×2 at 640×360 and 960×540 LR, in FP32, TF32, FP16,
   FP16 channels-last, and the last with a CUDA graph, ``torch.compile`` and both; timed with CUDA events
   (input already on the GPU), each variant's output checked against FP32 before its time counts; GFLOP/s
   against matrix-product ceilings measured in the same run. ``--budget`` seconds bound the compiles.
4. ``bench``: ``cli.py bench`` for LESRCNN ×2 with the GPU backends (end to end, numpy in and out; the
   ones this machine lacks are listed as skipped), in the usual ``benchmarks/results`` format.

Without CUDA it is a dry run of a few seconds: step 1 runs, step 2 reports the tests skipped, step 3 runs its
eager variants at a tiny size on the CPU, step 4 lists the GPU backends as skipped. Writes ``DIR/gpu_run.json``,
``DIR/gpu_run.md`` and ``DIR/bench/``; exit status 1 when any check failed.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np

from ..runtime.atomic import atomic_path
from ..runtime.compare import TOLERANCES, compare
from ..runtime.cpu import cpu_name
from ..runtime.tables import markdown_table

REPO = Path(__file__).resolve().parent.parent
FP32_RTOL = 1e-5  # tests/test_golden_fixtures.py
MODULES = ("models", "runtime.sessions.cuda", "runtime.sessions.tensorrt", "runtime.compare", "benchmarks.complexity",
           "benchmarks.bench", "benchmarks.backends", "cli")
LATENCY_MODELS = (("lesrcnn", 2), ("dsrnet", 2), ("fsrcnn", 2))
GPU_SIZES = ((640, 360), (960, 540))
DRY_SIZES = ((32, 18),)
GPU_TESTS = ("tests/test_gpu.py",)  # where the tests marked gpu are (the rest of the suite needs packages the
# GPU machine lacks even to be collected)
BENCH_BACKENDS = "torch-cuda,torch-cuda-fp16,onnx-cuda,onnx-trt,trt,trt-fp16"


# ---- steps ---------------------------------------------------------------------------------------

@dataclass
class Step:
    name: str
    status: str = "ok"  # ok | failed | skipped
    reason: str = ""
    seconds: float = 0.0
    detail: object = None


def run_step(name: str, work: Callable[[], tuple[bool | None, object, str]]) -> Step:
    """``work`` returns (passed, detail, note): passed None means skipped with ``note`` as the reason."""
    print(f"[{time.strftime('%H:%M:%S')}] {name} …", flush=True)
    start, step = time.perf_counter(), Step(name)
    try:
        passed, step.detail, note = work()
        step.status = "skipped" if passed is None else "ok" if passed else "failed"
        step.reason = note
    except Exception as exc:  # noqa: BLE001 - a broken step is recorded, and the run goes on
        traceback.print_exc()
        step.status, step.reason = "failed", f"{type(exc).__name__}: {exc}"
    step.seconds = time.perf_counter() - start
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {step.status} in {step.seconds:.1f} s"
          + (f" ({step.reason})" if step.reason else ""), flush=True)
    return step


def no_cuda_reason() -> str | None:
    import torch

    if torch.cuda.is_available():
        return None
    return f"no CUDA device (torch {torch.__version__}, built for CUDA {torch.version.cuda})"


# ---- 1. environment ------------------------------------------------------------------------------

def environment() -> tuple[bool, dict, str]:
    import torch

    facts: dict = {"python": platform.python_version(), "machine": platform.machine(), "torch": torch.__version__,
                   "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                   "cuda_available": torch.cuda.is_available(), "packages": {}, "imports": {}}
    for package in ("numpy", "pillow", "tqdm", "onnx", "onnxruntime", "onnxsim", "tensorrt", "triton"):
        try:
            facts["packages"][package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            facts["packages"][package] = None
    for module in MODULES:
        try:
            importlib.import_module(f"srdeploy.{module}")
            facts["imports"][module] = "ok"
        except Exception as exc:  # noqa: BLE001 - recorded: this step exists to find exactly this
            facts["imports"][module] = f"{type(exc).__name__}: {exc}"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts["gpu"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                        "multiprocessors": props.multi_processor_count, "memory_gib": props.total_memory / 2**30}
        if shutil.which("nvidia-smi"):
            query = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                    "--format=csv,noheader"], capture_output=True, text=True)
            facts["gpu"]["nvidia_smi"] = query.stdout.strip()
    broken = {m: e for m, e in facts["imports"].items() if e != "ok"}
    return not broken, facts, "; ".join(f"{m}: {e}" for m, e in broken.items())


# ---- 2. the tests marked gpu, and the fixture verdicts they use -----------------------------------

def set_tf32(enabled: bool) -> None:
    """TF32 for convolutions (PyTorch's default: on) and matrix products (default: off)."""
    import torch

    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cuda.matmul.allow_tf32 = enabled


def fixture_verdicts(fixture, device: str, precisions=("fp32", "fp16")) -> list[dict]:
    """One row per (precision, case): the fixture's network on ``device`` against the reference output."""
    import torch

    from .. import models
    base = models.load(fixture.model, fixture.scale, fixture.checkpoint, **fixture.options).network
    rows = []
    for precision in precisions:
        dtype = torch.float16 if precision == "fp16" else torch.float32
        model = base.to(device, dtype)
        for i, (x, reference) in enumerate(fixture.cases()):
            with torch.inference_mode():
                ours = model(torch.from_numpy(x).to(device, dtype)).float().cpu().numpy()
            rows.append(verdict(fixture.name, i, precision, ours, reference))
    return rows


def verdict(name: str, case: int, precision: str, ours: np.ndarray, reference: np.ndarray) -> dict:
    row = {"fixture": name, "case": case, "precision": precision, "shape": list(reference.shape)}
    if ours.shape != reference.shape:
        return {**row, "passed": False, "problems": [f"output shape {ours.shape} != {reference.shape}"]}
    c = compare(ours, reference)
    if precision == "fp32":
        problems = [f"{c.nonfinite} NaN/Inf"] if c.nonfinite else []
        if c.max_rel > FP32_RTOL:
            problems.append(f"max rel {c.max_rel:.2e} > {FP32_RTOL:.0e}")
    else:
        tolerance = TOLERANCES[precision]
        if np.abs(reference).max() > 2.0:  # a random-weight network's output is no image: no 8-bit levels
            tolerance = replace(tolerance, max_off_by_level=100.0)
        problems = c.violations(tolerance)
    return {**row, "passed": not problems, "problems": problems, "max_rel": c.max_rel, "psnr_db": c.psnr}


def gpu_tests(shared: Path) -> tuple[bool | None, dict, str]:
    """``pytest -m gpu`` on ``GPU_TESTS`` in the checkout: (all passed, or None when none ran; the outcome of each
    test and the counts; a note with the first failures)."""
    import xml.etree.ElementTree as ElementTree

    with tempfile.TemporaryDirectory() as folder:
        junit = Path(folder) / "gpu.xml"
        done = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                               f"--junitxml={junit}", *GPU_TESTS], cwd=REPO, capture_output=True, text=True, timeout=1200,
                              env={**os.environ, "SRDEPLOY_WEIGHTS_DIR": str(Path(shared).resolve() / "weights")})
        if not junit.is_file():
            return False, {"output": done.stdout[-2000:] + done.stderr[-2000:]}, "pytest did not run"
        cases = ElementTree.parse(junit).getroot().iter("testcase")
        outcome = {}
        for case in cases:
            verdict = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
            outcome[f"{case.get('classname')}::{case.get('name')}"] = (verdict, next(
                (child.get("message", "") for child in case if child.tag != "system-out"), ""))
    counts = {v: sum(1 for o, _ in outcome.values() if o == v) for v in ("passed", "failure", "error", "skipped")}
    bad = [f"{name}: {message.splitlines()[0] if message else verdict}" for name, (verdict, message) in outcome.items()
           if verdict in ("failure", "error")]
    note = ", ".join(f"{n} {v}" for v, n in counts.items() if n) + "".join(f"; {b}" for b in bad[:3])
    if not counts["passed"] and not bad:
        return None, {"tests": outcome, **counts}, note
    return not bad, {"tests": outcome, **counts}, note


# ---- 3. latency ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    name: str
    half: bool
    tf32: bool = False
    channels_last: bool = False
    graph: bool = False
    compiled: bool = False

    @property
    def precision(self) -> str:
        return "fp16" if self.half else "tf32" if self.tf32 else "fp32"


VARIANTS = (
    Variant("fp32", False),
    Variant("tf32", False, tf32=True),  # PyTorch's default for convolutions
    Variant("fp16", True),
    Variant("fp16-cl", True, channels_last=True),
    Variant("fp16-cl-graph", True, channels_last=True, graph=True),
    Variant("fp16-cl-compile", True, channels_last=True, compiled=True),
    Variant("fp16-cl-compile-graph", True, channels_last=True, compiled=True, graph=True),
)


def matmul_ceilings(device: str) -> dict[str, float]:
    """TFLOP/s of a large matrix product per precision, measured here: the ceilings GFLOP/s is read against."""
    import torch

    if device != "cuda":
        return {}
    ceilings = {}
    n = 8192
    for precision, dtype, tf32 in (("fp32", torch.float32, False), ("tf32", torch.float32, True),
                                   ("fp16", torch.float16, False)):
        set_tf32(tf32)
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        ms = event_times(lambda: a @ b, warmup=3, runs=10)
        ceilings[precision] = 2 * n**3 / (np.median(ms) / 1000) / 1e12
    set_tf32(False)
    return ceilings


def event_times(call: Callable[[], object], warmup: int, runs: int) -> list[float]:
    """Milliseconds of each of ``runs`` calls on the current CUDA stream (events), after ``warmup`` calls."""
    import torch

    for _ in range(warmup):
        call()
    pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(runs)]
    for start, end in pairs:
        start.record()
        call()
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) for start, end in pairs]


def wall_times(call: Callable[[], object], warmup: int, runs: int) -> list[float]:
    """The CPU twin of ``event_times`` (the dry run)."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(1000 * (time.perf_counter() - start))
    return times


def prepare(model, variant: Variant, x, device: str) -> tuple[Callable[[], object], float]:
    """(one call producing the output, seconds the first call took: compile and capture included)."""
    import torch

    set_tf32(variant.tf32)
    model = model.to(device, torch.float16 if variant.half else torch.float32)
    if variant.channels_last:
        model = model.to(memory_format=torch.channels_last)
    run = torch.compile(model, dynamic=False) if variant.compiled else model
    start = time.perf_counter()
    if not variant.graph:
        run(x)
        return lambda: run(x), time.perf_counter() - start
    side = torch.cuda.Stream()  # warm-up on a side stream, as torch.cuda.graphs asks
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            run(x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = run(x)

    def replay():
        graph.replay()
        return static_out

    replay()
    torch.cuda.synchronize()
    return replay, time.perf_counter() - start


def latency(shared: Path, device: str, sizes, budget_s: float, ceilings: dict[str, float]) -> tuple[bool, list[dict], str]:
    import torch

    from .. import models
    from .complexity import conv_macs
    from .complexity import measure as complexity

    torch.backends.cudnn.benchmark = True
    began, rows = time.perf_counter(), []
    for width, height in sizes:
        for name, scale in LATENCY_MODELS:
            weights = Path(shared) / "weights" / f"{name}_x{scale}.pth"
            loaded = models.load(name, scale, weights if weights.is_file() else None)
            base = loaded.network
            per_pixel = complexity(name, scale).macs_per_output_pixel
            x32 = torch.rand(1, loaded.info.channels, height, width, generator=torch.Generator().manual_seed(0)).to(device)
            set_tf32(False)
            with torch.inference_mode():
                reference = base.to(device, torch.float32)(x32).float().cpu().numpy()
            for variant in VARIANTS:
                row = {"model": f"{name} ×{scale}", "size": f"{width}x{height}", "output": f"{width * scale}x{height * scale}",
                       "variant": variant.name, "precision": variant.precision}
                rows.append(row)
                if device != "cuda" and (variant.graph or variant.compiled):
                    row.update(status="skipped", reason="needs CUDA")
                    continue
                if variant.compiled and time.perf_counter() - began > budget_s:
                    row.update(status="skipped", reason=f"over the {budget_s:.0f} s budget before compiling")
                    continue
                model, row["gate"] = base, None
                macs = per_pixel
                if name == "dsrnet" and (variant.graph or variant.compiled):
                    # torch.cond's host-side branch cannot be captured: both branches run, selected per image
                    model = models.load(name, scale, weights if weights.is_file() else None).network
                    model.gate_execution = "select"
                    row["gate"] = "select (both branches run)"
                    probe = torch.rand(1, 64, 24, 24)
                    macs += conv_macs(model.branch0, probe) / (24 * scale) ** 2
                try:
                    row.update(measure_variant(model, variant, x32, device, reference))
                except Exception as exc:  # noqa: BLE001 - one variant failing must not end the table
                    traceback.print_exc()
                    row.update(status="failed", reason=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                    continue
                finally:
                    if variant.compiled:
                        torch._dynamo.reset()
                if row["status"] == "ok":
                    flops = 2 * macs * width * height * scale * scale
                    row["gflops"] = flops / (row["median_ms"] / 1000) / 1e9
                    peak = ceilings.get(variant.precision)
                    row["of_peak_pct"] = 100 * row["gflops"] / 1000 / peak if peak else None
                print(f"    {row['model']} {row['size']} {variant.name}: {row['status']} "
                      + (f"{row['median_ms']:.3f} ms, {row['check']}" if row["status"] == "ok" else row.get("reason", "")),
                      flush=True)
            del base, loaded
            if device == "cuda":
                torch.cuda.empty_cache()
    set_tf32(False)
    failed = [r for r in rows if r["status"] == "failed"]
    ran = [r for r in rows if r["status"] == "ok"]
    return not failed, rows, f"{len(ran)} timed, {len(failed)} failed, {len(rows) - len(ran) - len(failed)} skipped"


def measure_variant(model, variant: Variant, x32, device: str, reference: np.ndarray) -> dict:
    """Time one variant; its output is checked against FP32 first (a wrong output gets no time)."""
    import torch

    x = x32.half() if variant.half else x32
    if variant.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        call, first_s = prepare(model, variant, x, device)
        out = call().float().cpu().numpy()
        c = compare(out, reference)
        if variant.precision == "fp32":
            problems = [f"max rel {c.max_rel:.1e} > 1e-4"] if c.max_rel > TOLERANCES["fp32"].max_rel else []
        else:  # TF32 and FP16 against FP32: the FP16 artifact tolerance
            problems = c.violations(TOLERANCES["fp16"])
        check = f"{c.psnr:.1f} dB vs FP32" if np.isfinite(c.psnr) else "identical to FP32"
        if problems:
            return {"status": "failed", "reason": f"wrong output: {', '.join(problems)}", "check": check}
        if device == "cuda":  # about 1 s of timed calls, 10 to 200 of them
            runs = int(np.clip(1000 / max(float(np.median(event_times(call, 2, 3))), 1e-3), 10, 200))
            ms = np.asarray(event_times(call, 3, runs))
        else:  # the dry run: the code path, not a measurement
            ms = np.asarray(wall_times(call, 0, 2))
    return {"status": "ok", "check": check, "first_call_s": first_s, "median_ms": float(np.median(ms)),
            "p90_ms": float(np.percentile(ms, 90)), "min_ms": float(ms.min()), "runs": len(ms),
            "peak_mem_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None}


# ---- 6. cli.py bench -----------------------------------------------------------------------------

def bench(out: Path, shared: Path, sizes) -> tuple[bool, dict, str]:
    folder = out / "bench"
    command = [sys.executable, "cli.py", "bench", "--model", "lesrcnn", "--scale", "2", "--backends", BENCH_BACKENDS,
               "--sizes", ",".join(f"{w}x{h}" for w, h in sizes), "--warmup", "5", "--runs", "100",
               "--budget", "3", "--out", str(folder)]
    env = {**os.environ, "SRDEPLOY_WEIGHTS_DIR": str(Path(shared).resolve() / "weights")}
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    if done.returncode != 0:
        return False, {"stderr": done.stderr[-2000:]}, (done.stderr.strip().splitlines() or ["no output"])[-1]
    report = json.loads((folder / "bench.json").read_text())
    shutil.rmtree(folder / "artifacts", ignore_errors=True)
    failed = [r for r in report["results"] if r["status"] == "failed"]
    statuses = ", ".join(f"{r['backend']} {r['size']} {r['status']}" for r in report["results"])
    return not failed, report["results"], statuses


# ---- the report ----------------------------------------------------------------------------------

def _f(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def markdown(report: dict) -> str:
    env = report["steps"].get("environment", {}).get("detail") or {}
    gpu = env.get("gpu") or {}
    lines = [f"`{report['command']}` — {report['date']}", "",
             f"GPU: {gpu.get('nvidia_smi') or gpu.get('name') or 'none'}; torch {env.get('torch')} (CUDA "
             f"{env.get('torch_cuda')}, cuDNN {env.get('cudnn')}), Python {env.get('python')}; CPU {report['cpu']}.",
             "Measured matrix-product ceilings (8192³): " + (", ".join(
                 f"{k.upper()} {v:.0f} TFLOP/s" for k, v in report["ceilings"].items()) or "none (no GPU)") + ".", "",
             markdown_table(["step", "status", "seconds", "note"],
                            [[name, s["status"], f"{s['seconds']:.1f}", s["reason"]] for name, s in report["steps"].items()]),
             ""]
    rows = report["steps"].get("latency", {}).get("detail") or []
    if rows:
        lines += ["Median latency in ms (CUDA events, input on the device, batch 1; * DSRNet's gate as a per-image "
                  "select, both branches computed, where a CUDA graph or torch.compile is used):", "",
                  summary_table(rows), ""]
        lines += ["Latency on the GPU, input already on the device, CUDA events, batch 1 "
                  "(check: the variant's output against FP32 on the same input):", "", markdown_table(
                      ["model", "LR → output", "variant", "status", "median ms", "p90 ms", "min ms", "runs", "GFLOP/s",
                       "of ceiling", "first call s", "peak MB", "check / reason"],
                      [[r["model"], f"{r['size']} → {r['output']}", r["variant"] + (" (gate: select)" if r.get("gate") else ""),
                        r["status"], _f(r.get("median_ms"), ".3f"), _f(r.get("p90_ms"), ".3f"), _f(r.get("min_ms"), ".3f"),
                        _f(r.get("runs"), "d"), _f(r.get("gflops"), ",.0f"),
                        "" if r.get("of_peak_pct") is None else f"{r['of_peak_pct']:.0f}%",
                        _f(r.get("first_call_s"), ".1f"), _f(r.get("peak_mem_mb"), ".0f"),
                        r.get("check", "") if r["status"] == "ok" else r.get("reason", "")] for r in rows]), ""]
    tests = (report["steps"].get("gpu_tests", {}).get("detail") or {}).get("tests") or {}
    if tests:
        lines += ["`pytest -m gpu` (tests/test_gpu.py):", "",
                  markdown_table(["test", "outcome"], [[name, verdict] for name, (verdict, _) in tests.items()]), ""]
    return "\n".join(lines)


def summary_table(rows: list[dict]) -> str:
    """One line per (model, size), one column per variant: the medians."""
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    lines: dict[tuple[str, str], dict[str, str]] = {}
    for r in rows:
        cell = f"{r['median_ms']:.3f}{'*' if r.get('gate') else ''}" if r["status"] == "ok" else r["status"]
        lines.setdefault((r["model"], f"{r['size']} → {r['output']}"), {})[r["variant"]] = cell
    return markdown_table(["model", "LR → output", *variants],
                          [[m, size, *(cells.get(v, "") for v in variants)] for (m, size), cells in lines.items()])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for gpu_run.json, gpu_run.md and bench/")
    parser.add_argument("--shared", default=str(REPO.parent / "shared"),
                        help="the shared/ folder (weights, fixtures); default ../shared")
    parser.add_argument("--budget", type=float, default=300.0,
                        help="seconds after which the latency step compiles nothing more (default 300)")
    args = parser.parse_args(argv)
    out, shared = Path(args.out), Path(args.shared)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SRDEPLOY_WEIGHTS_DIR", str(shared.resolve() / "weights"))

    import torch

    missing = no_cuda_reason()
    device = "cpu" if missing else "cuda"
    print(f"gpu_run: {'DRY RUN on the CPU: ' + missing if missing else torch.cuda.get_device_name(0)}; "
          f"shared data {shared} ({'found' if shared.is_dir() else 'absent'})", flush=True)
    report = {"command": "python -m srdeploy.benchmarks.gpu_run " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "dry_run": bool(missing),
              "cpu": cpu_name(), "ceilings": {}, "steps": {}}
    plan: list[tuple[str, Callable[[], Step]]] = [
        ("environment", lambda: run_step("environment", environment)),
        ("gpu_tests", lambda: run_step("gpu_tests", lambda: gpu_tests(shared))),
        ("latency", lambda: run_step("latency", lambda: latency(shared, device, DRY_SIZES if missing else GPU_SIZES,
                                                               args.budget, report["ceilings"]))),
        ("bench", lambda: run_step("bench", lambda: bench(out, shared, DRY_SIZES if missing else GPU_SIZES))),
    ]
    for name, step in plan:
        if name == "latency":
            try:
                report["ceilings"] = matmul_ceilings(device)
            except Exception:  # noqa: BLE001 - without ceilings the table has no "of ceiling" column
                traceback.print_exc()
        report["steps"][name] = vars(step())
        save(report, out)  # after every step: a run cut short still leaves what it measured
    print(markdown(report))
    return 1 if any(s["status"] == "failed" for s in report["steps"].values()) else 0


def save(report: dict, out: Path) -> None:
    with atomic_path(out / "gpu_run.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=str))
    with atomic_path(out / "gpu_run.md") as tmp:
        tmp.write_text(markdown(report) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
