"""The prepared GPU run: is the zoo correct on CUDA, how fast are PyTorch's GPU paths, and does our ctypes
CUDA layer work against a real driver. One command, everything written under ``--out``:

    pip install --no-deps --no-build-isolation -e .   # the checkout as the srdeploy package; downloads nothing
    python -m srdeploy.benchmarks.gpu_run --out DIR [--shared ../shared] [--budget 300]

Steps, each recorded as ok / failed (with the error) / skipped (with the reason); none stops the others:

1. ``environment``: the checkout's modules import with the packages the machine has (nothing is
   installed); torch, CUDA, cuDNN and GPU facts.
2. ``correctness``: every golden fixture of ``shared/fixtures/reference`` through PyTorch on the GPU,
   FP32 with TF32 off (max|ours − ref| ≤ 1e-5·max|ref|, the CPU test's tolerance) and FP16 (the FP16
   artifact tolerance of ``runtime.compare``; its 8-bit-level statistic only where the output is an image,
   not a random-weight network's), so no GPU number comes from a wrong network.
3. ``gate_tiling``: DSRNet ×2 with a gate that flips between 48-pixel tiles of a Set5 image, tiled on the
   device with the whole image's decision shared: equal to the whole image, unlike tiles deciding alone.
4. ``cuda_layer``: ``runtime/cuda.py`` and the TensorRT session's buffers against the driver, without
   TensorRT: device facts checked against PyTorch's, pinned round trips, copies into PyTorch's device
   memory, events, a captured and replayed CUDA graph, a failed capture that leaves the stream usable, and
   CUDA's error text (PyTorch unaffected after each failure); which libcudart candidates work.
5. ``latency``: LESRCNN ×2, DSRNet ×2 and FSRCNN ×2 at 640×360 and 960×540 LR, in FP32, TF32, FP16,
   FP16 channels-last, and the last with a CUDA graph, ``torch.compile`` and both; timed with CUDA events
   (input already on the GPU), each variant's output checked against FP32 before its time counts; GFLOP/s
   against matrix-product ceilings measured in the same run. ``--budget`` seconds bound the compiles.
6. ``bench``: ``cli.py bench`` for LESRCNN ×2 with the GPU backends (end to end, numpy in and out; the
   ones this machine lacks are listed as skipped), in the usual ``benchmarks/results`` format.

Without CUDA it is a dry run of a few seconds: steps 1, 2 (a few fixtures), 3 and 6 run on the CPU, step 5
runs its eager variants at a tiny size, and the rest say why they are skipped. Writes
``DIR/gpu_run.json``, ``DIR/gpu_run.md`` and ``DIR/bench/``; exit status 1 when any check failed.
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
import time
import traceback
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np

from ..runtime.atomic import atomic_path
from ..runtime.compare import TOLERANCES, compare
from ..runtime.tables import markdown_table

REPO = Path(__file__).resolve().parent.parent
FP32_RTOL = 1e-5  # tests/test_golden_fixtures.py
MODULES = ("models", "runtime.cuda", "runtime.trt_backend", "runtime.compare", "benchmarks.complexity",
           "benchmarks.bench", "benchmarks.backends", "cli")
LATENCY_MODELS = (("lesrcnn", 2), ("dsrnet", 2), ("fsrcnn", 2))
GPU_SIZES = ((640, 360), (960, 540))
DRY_SIZES = ((32, 18),)
DRY_FIXTURES = ("fsrcnn_x2_official", "lesrcnn_x2_official", "dsrnet_x2_official")
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


# ---- 2. correctness on the golden fixtures -------------------------------------------------------

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


def correctness(shared: Path, device: str, only: tuple[str, ...] | None) -> tuple[bool | None, list[dict], str]:
    from .reference_fixtures import load_fixtures

    fixtures = [f for f in load_fixtures(shared) if only is None or f.name in only]
    if not fixtures:
        return None, [], f"no golden fixtures under {shared}/fixtures/reference (pass --shared PATH)"
    set_tf32(False)
    rows = []
    for fixture in fixtures:
        rows += fixture_verdicts(fixture, device)
    failed = [r for r in rows if not r["passed"]]
    note = f"{len(rows) - len(failed)}/{len(rows)} cases pass on {device}"
    return not failed, rows, note + "".join(f"; {r['fixture']} {r['precision']}: {', '.join(r['problems'])}"
                                            for r in failed[:5])


# ---- 3. a whole-image gate, tiled on the device ----------------------------------------------------

def gate_tiling(shared: Path, device: str) -> tuple[bool | None, dict, str]:
    """DSRNet ×2 whose gate flips between 48-pixel tiles of a Set5 image (``tests.gate_sensitive``), tiled on
    ``device`` with the whole image's decision shared (``TorchRunner.gate_split``): = the whole image ≥ 60 dB,
    each tile deciding alone < 50 dB, and the device's whole image = the CPU's ≥ 60 dB (8-bit outputs)."""
    import tempfile

    import torch

    from .. import models
    from ..models.registry import architecture
    from ..runtime import images, metrics
    from ..runtime.tiling import tiled_infer
    from ..runtime.torch_runner import TorchRunner

    try:
        from tests.gate_sensitive import TILE, butterfly, gate_sensitive_state
    except ImportError as exc:
        return None, {}, f"tests/gate_sensitive.py does not import ({exc}): run from the repository root"
    image, checkpoint = butterfly(shared), shared / "weights" / "dsrnet_x2.pth"
    if not (image.is_file() and checkpoint.is_file()):
        return None, {}, f"needs {image} and {checkpoint} (pass --shared PATH)"
    set_tf32(False)
    radius = architecture("dsrnet").export.receptive_radius
    lr = images.read_rgb(image)
    x = images.to_unit_float(lr)
    state = gate_sensitive_state(models.load("dsrnet", 2, checkpoint).network,
                                 torch.load(checkpoint, map_location="cpu", weights_only=True), torch.from_numpy(x), radius)
    with tempfile.TemporaryDirectory() as folder:
        torch.save(state, Path(folder) / "dsrnet_gate_sensitive.pth")
        network = models.load("dsrnet", 2, Path(folder) / "dsrnet_gate_sensitive.pth").network
    cpu = TorchRunner(network).infer(x)
    runner = TorchRunner(network, device)

    def sr(output: np.ndarray) -> np.ndarray:
        return images.to_uint8(output[0].transpose(1, 2, 0))

    whole = sr(runner.infer(x))
    detail = {"device": device, "image": f"{image.name} {x.shape[2]}×{x.shape[3]} LR", "tile": TILE, "radius": radius,
              "shared_decision_psnr_db": metrics.psnr(sr(tiled_infer(x, runner.infer, 2, TILE, radius, 8,
                                                                     gate=runner.gate_split)), whole),
              "each_tile_alone_psnr_db": metrics.psnr(sr(tiled_infer(x, runner.infer, 2, TILE, radius, 8)), whole),
              "device_vs_cpu_psnr_db": metrics.psnr(whole, sr(cpu))}
    passed = (detail["shared_decision_psnr_db"] >= 60 and detail["each_tile_alone_psnr_db"] < 50
              and detail["device_vs_cpu_psnr_db"] >= 60)
    return passed, detail, ("shared decision {shared_decision_psnr_db:.1f} dB, each tile alone "
                            "{each_tile_alone_psnr_db:.1f} dB, {device} vs CPU {device_vs_cpu_psnr_db:.1f} dB").format(**detail)


# ---- 4. the ctypes CUDA layer --------------------------------------------------------------------

def cuda_layer() -> tuple[bool | None, dict, str]:
    import ctypes

    import torch

    from ..runtime.cuda import Cuda, _candidates, load_cudart
    from ..runtime.errors import SrDeployError
    from ..runtime.trt_backend import _Buffer

    try:
        library = load_cudart()
    except SrDeployError as exc:
        return None, {}, str(exc)
    cuda = Cuda(0, library)
    checks: dict[str, object] = {"libcudart": library._name,
                                 "candidates": ", ".join(f"{n}: {_probe(n)}" for n in _candidates())}
    version = ctypes.c_int()
    cuda._call("cudaRuntimeGetVersion", ctypes.byref(version))
    checks["runtime_version"] = version.value
    cuda._call("cudaDriverGetVersion", ctypes.byref(version))
    checks["driver_version"] = version.value
    props = torch.cuda.get_device_properties(0)
    checks["device_name"] = cuda.device_name()
    checks["device_name_matches_torch"] = checks["device_name"] == props.name
    checks["capability_matches_torch"] = cuda.compute_capability() == f"{props.major}.{props.minor}"
    free, total = cuda.memory_info()
    checks["total_memory_matches_torch"] = total == torch.cuda.mem_get_info(0)[1]

    stream = cuda.stream()
    source, target = _Buffer(cuda), _Buffer(cuda)
    nbytes = 256 * 2**20
    source.reserve(nbytes), target.reserve(nbytes)
    count = nbytes // 4
    data = np.random.default_rng(0).random(count, dtype=np.float32)
    source.host_array((count,), np.dtype(np.float32))[...] = data
    start, end = cuda.event(), cuda.event()
    cuda.record(start, stream)
    cuda.copy_async(source.device, source.host, nbytes, 1, stream)
    cuda.record(end, stream)
    checks["h2d_gb_per_s"] = nbytes / cuda.elapsed_ms(start, end) / 1e6
    cuda.record(start, stream)
    cuda.copy_async(target.host, source.device, nbytes, 2, stream)
    cuda.record(end, stream)
    checks["d2h_gb_per_s"] = nbytes / cuda.elapsed_ms(start, end) / 1e6
    cuda.synchronize(stream)
    checks["round_trip_exact"] = bool(np.array_equal(target.host_array((count,), np.dtype(np.float32)), data))

    tensor = torch.empty(count, dtype=torch.float32, device="cuda")  # PyTorch's own device memory
    cuda.copy_async(tensor.data_ptr(), source.host, nbytes, 1, stream)
    cuda.synchronize(stream)
    checks["copy_into_torch_memory_exact"] = bool(torch.equal(tensor.cpu(), torch.from_numpy(data)))

    small = 4 * 2**20

    def copies() -> None:
        cuda.copy_async(source.device, source.host, small, 1, stream)
        cuda.copy_async(target.host, source.device, small, 2, stream)

    graph = cuda.capture(stream, copies)
    fresh = np.random.default_rng(1).random(small // 4, dtype=np.float32)
    source.host_array((small // 4,), np.dtype(np.float32))[...] = fresh  # the graph copies what is there now
    cuda.launch(graph, stream)
    cuda.synchronize(stream)
    checks["graph_replay_exact"] = bool(np.array_equal(target.host_array((small // 4,), np.dtype(np.float32)), fresh))
    cuda.destroy_graph(graph)

    try:  # synchronising a capturing stream is illegal: the capture fails, and must leave the stream usable
        cuda.capture(stream, lambda: cuda.synchronize(stream))
        checks["failed_capture_raises"] = False
    except SrDeployError as exc:
        checks["failed_capture_raises"] = True
        checks["failed_capture_error"] = str(exc)
    copies()
    cuda.synchronize(stream)
    checks["stream_usable_after_failed_capture"] = bool(
        np.array_equal(target.host_array((small // 4,), np.dtype(np.float32)), fresh))
    checks["torch_unaffected_after_failed_capture"] = float(torch.ones(4, device="cuda").sum().item()) == 4.0
    try:
        cuda.free(0x10)  # not an allocation: CUDA must say so, and we must name the call
        checks["error_text"] = "no error raised"
    except SrDeployError as exc:
        checks["error_text"] = str(exc)
    checks["error_names_call"] = "cudaFree" in str(checks["error_text"])
    checks["torch_unaffected_after_error"] = float(torch.ones(4, device="cuda").sum().item()) == 4.0
    for event in (start, end):
        cuda.destroy_event(event)
    source.release(), target.release()
    cuda.destroy_stream(stream)
    del tensor
    failed = [k for k, v in checks.items() if v is False]
    return not failed, checks, "failed: " + ", ".join(failed) if failed else f"libcudart {library._name}"


def _probe(name: str) -> str:
    """What one libcudart candidate is on this machine: absent, or usable, or why not."""
    import ctypes

    from ..runtime.cuda import _unusable

    try:
        library = ctypes.CDLL(name)
    except OSError:
        return "absent"
    return _unusable(library) or "usable"


# ---- 5. latency ----------------------------------------------------------------------------------

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
    rows = report["steps"].get("correctness", {}).get("detail") or []
    if rows:
        by_fixture: dict[tuple[str, str], list[dict]] = {}
        for r in rows:
            by_fixture.setdefault((r["fixture"], r["precision"]), []).append(r)
        lines += ["Correctness on the golden fixtures (FP32: max rel ≤ 1e-5, TF32 off; FP16: PSNR ≥ 60 dB, "
                  "max rel ≤ 5e-3):", "", markdown_table(
                      ["fixture", "precision", "cases", "worst max rel", "worst PSNR dB", "verdict"],
                      [[f, p, str(len(rs)), f"{max(r.get('max_rel', np.inf) for r in rs):.1e}",
                        f"{min(r.get('psnr_db', -np.inf) for r in rs):.1f}",
                        "PASS" if all(r["passed"] for r in rs) else "FAIL"] for (f, p), rs in by_fixture.items()]), ""]
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
    layer = report["steps"].get("cuda_layer", {}).get("detail") or {}
    if layer:
        lines += ["ctypes CUDA layer (runtime/cuda.py) against the driver:", "",
                  markdown_table(["check", "result"], [[k, str(v)] for k, v in layer.items()]), ""]
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


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


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
        ("correctness", lambda: run_step("correctness", lambda: correctness(shared, device, DRY_FIXTURES if missing else None))),
        ("gate_tiling", lambda: run_step("gate_tiling", lambda: gate_tiling(shared, device))),
        ("cuda_layer", lambda: run_step("cuda_layer", cuda_layer) if not missing else Step("cuda_layer", "skipped", missing)),
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
