"""One latency harness for every backend: ``srdeploy bench`` (see ``--help``).

Each (backend, size) runs in its own Python process, so peak RSS and thread settings belong to that
backend alone: ``warmup`` untimed calls, then timed calls until ``runs`` or the ``budget`` in seconds
(at least 3). Reported: median / p90 / p99 / min latency, images/s, output megapixels/s, achieved
GFLOP/s (2 × the model's MACs per call / median), peak host RSS, peak device memory where there is a
device, the held-out PSNR drop of the artifact, and the machine. A benchmark measures; it asserts nothing.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

from .backends import backends, make_infer, unavailable
from ..runtime.cpu import features, int8_dot, usable_cores
from ..runtime.targets import runnable
from ..runtime.tables import markdown_table
from ..runtime.timing import measure

MIN_RUNS = 3


@dataclass(frozen=True)
class BenchOptions:
    """What ``bench`` measures and how long."""

    backends: str = "torch,onnx,onnx-fp16,onnx-int8"  # comma-separated names of ``backends.backends()``
    sizes: str = "256x256"  # LR input sizes, WxH, comma-separated
    warmup: int = 2  # untimed calls first
    runs: int = 30  # most timed calls per measurement
    budget: float = 20.0  # seconds of timed calls per measurement, at least 3 calls
    threads: int | None = None  # CPU threads per backend (None: each library's own default)


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` of the LR input → (width, height)."""
    from ..runtime.errors import SrDeployError

    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SrDeployError(f"size {text!r} is not WxH (e.g. 256x256 or 1280x720)") from None
    if width < 1 or height < 1:
        raise SrDeployError(f"size {text!r} must be positive")
    return width, height


# ---- the machine ---------------------------------------------------------------------------------

def _cpuinfo() -> dict[str, str]:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines) if k.strip()}


def fp32_peak() -> dict:
    """The machine's FP32 peak: a theoretical figure from the CPU's vector units and clock, and a
    measured ceiling (numpy's float32 matrix product, best of 5)."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    cores = usable_cores()
    ghz = float(info.get("cpu MHz", 0.0)) / 1000
    if {"avx512f", "fma"} <= flags:
        per_cycle, unit = 64, "AVX-512: 2 FMA units × 16 floats × 2"
    elif {"avx2", "fma"} <= flags:
        per_cycle, unit = 32, "AVX2: 2 FMA units × 8 floats × 2"
    else:
        per_cycle, unit = 8, "SSE: 4 floats × 2 (no FMA)"
    a = np.random.default_rng(0).random((2048, 2048), dtype=np.float32)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    return {
        "theoretical_gflops": cores * ghz * per_cycle,
        "theoretical_how": f"{cores} cores × {ghz:.2f} GHz (/proc/cpuinfo 'cpu MHz') × {per_cycle} FLOP/cycle ({unit})",
        "measured_gflops": 2 * 2048**3 / best / 1e9,
        "measured_how": "numpy float32 2048×2048 matrix product, best of 5, all cores",
    }


def machine() -> dict:
    info = _cpuinfo()
    facts = {
        "cpu": info.get("model name", platform.processor() or platform.machine()),
        "cpu_features": features(set(info.get("flags", "").split())),
        "int8_dot": int8_dot(set(info.get("flags", "").split())),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "libraries": {},
        "gpu": None,
    }
    for package in ("numpy", "torch", *(t.package for t in runnable() if t.package)):
        try:
            facts["libraries"][package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    if shutil.which("nvidia-smi"):
        query = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                               capture_output=True, text=True)
        facts["gpu"] = query.stdout.strip() or None
    facts["fp32_peak"] = fp32_peak()
    return facts


# ---- one measurement, in a child process ---------------------------------------------------------

def worker(spec: dict) -> dict:
    """Run in the child: build the backend, time it, report (see ``bench_one``)."""
    backend = backends()[spec["backend"]]
    infer, device_mb, details = make_infer(backend, spec["source"], spec.get("threads"))
    width, height = spec["size"]
    x = np.random.default_rng(0).random((1, spec["channels"], height, width), dtype=np.float32)
    start = time.perf_counter()
    for _ in range(spec["warmup"]):
        infer(x)
    first = (time.perf_counter() - start) / max(1, spec["warmup"])
    runs = int(min(spec["runs"], max(MIN_RUNS, spec["budget_s"] / max(first, 1e-6))))
    timing = measure(backend.name, infer, x, 0, runs)
    threads = None
    if backend.target is None:
        import torch

        threads = torch.get_num_threads()
    return {"timing": vars(timing), "peak_rss_mb": peak_rss_mb(),
            "device_mem_mb": device_mb(), "threads": threads, **details}


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM (reset by exec, unlike ru_maxrss, which Linux carries over
    from the parent that spawned us), else ru_maxrss."""
    try:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_one(backend_name: str, size: tuple[int, int], source: dict, channels: int, scale: int, macs: float | None,
              warmup: int, runs: int, budget_s: float, threads: int | None, psnr_drop: float | None) -> dict:
    """One result row in the schema ``bench --json`` prints."""
    backend = backends()[backend_name]
    row = {"backend": backend_name, "description": backend.description, "size": f"{size[0]}x{size[1]}",
           "output": f"{size[0] * scale}x{size[1] * scale}", "status": "ok", "reason": None,
           **dict.fromkeys(("median_ms", "p90_ms", "p99_ms", "min_ms", "images_per_s", "mpix_per_s", "gflops",
                            "peak_rss_mb", "device_mem_mb", "runs", "threads", "int8_executed")),
           "psnr_drop_db": psnr_drop,
           "macs_per_output_pixel": None if macs is None else macs / (size[0] * size[1] * scale * scale)}
    reason = unavailable(backend) or source.get("unavailable")
    if reason:
        return {**row, "status": "skipped", "reason": reason}
    spec = {"backend": backend_name, "size": size, "source": source, "channels": channels, "warmup": warmup,
            "runs": runs, "budget_s": budget_s, "threads": threads}
    done = subprocess.run([sys.executable, "-m", "srdeploy.benchmarks.bench", json.dumps(spec)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()] or ["no output"]
        return {**row, "status": "failed", "reason": lines[-1][:300]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    t = result["timing"]
    median_s = t["median_ms"] / 1000
    output_mpix = size[0] * size[1] * scale * scale / 1e6
    return {**row, **{k: t[k] for k in ("median_ms", "p90_ms", "p99_ms", "min_ms", "runs")},
            "images_per_s": 1 / median_s, "mpix_per_s": output_mpix / median_s,
            "gflops": None if macs is None else 2 * macs / median_s / 1e9,
            "peak_rss_mb": result["peak_rss_mb"], "device_mem_mb": result["device_mem_mb"], "threads": result["threads"],
            "int8_executed": result.get("int8_executed")}


# ---- the report ----------------------------------------------------------------------------------

def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def markdown(report: dict) -> str:
    m, peak = report["machine"], report["machine"]["fp32_peak"]
    lines = [
        f"`{report['command']}` — {report['date']}",
        "",
        f"Machine: {m['cpu']}"
        + (f" ({', '.join(m['cpu_features'])}; int8 dot product: {m['int8_dot']})" if "cpu_features" in m else "")
        + f", {m['usable_cores']} usable cores ({m['logical_cores']} logical), {m['os']}, "
        f"Python {m['python']}; GPU: {m['gpu'] or 'none'}; "
        + ", ".join(f"{k} {v}" for k, v in m["libraries"].items()) + ".",
        f"CPU FP32 peak (the 'of measured CPU peak' column; none for GPU backends): theoretical {peak['theoretical_gflops']:.0f} GFLOP/s ({peak['theoretical_how']}); measured "
        f"{peak['measured_gflops']:.0f} GFLOP/s ({peak['measured_how']}).",
        f"Model: {report['model']} ×{report['scale']}, "
        + ("MACs unknown (no PyTorch here), so no GFLOP/s" if report["macs_per_output_pixel"] is None else
           f"{report['macs_per_output_pixel']:,.0f} MACs per output pixel as the architecture is written"
           + "".join(f"; {macs:,.0f} in the exported graph ({', '.join(names)})" for macs, names in _rewritten_counts(report))
           + " (GFLOP/s = 2 × MACs of what the backend runs / median)")
        + ". Latency is end to end (numpy in, numpy out), batch 1.",
        "",
    ]
    rows, known = [], backends()
    for r in report["results"]:
        backend = known.get(r["backend"])
        rows.append([r["backend"], f"{r['size']} → {r['output']}", r["status"], _fmt(r["median_ms"], ".1f"),
                     _fmt(r["p90_ms"], ".1f"), _fmt(r["p99_ms"], ".1f"), _fmt(r["min_ms"], ".1f"),
                     _fmt(r["runs"], "d"), _fmt(r["images_per_s"], ".2f"), _fmt(r["mpix_per_s"], ".2f"),
                     _fmt(r["gflops"], ".0f"),
                     # an FP32 peak says nothing of GPUs, nor of int8 arithmetic
                     "" if r["gflops"] is None or backend is None or backend.on_gpu or backend.precision == "int8"
                     else f"{100 * r['gflops'] / peak['measured_gflops']:.0f}%",
                     _fmt(r["peak_rss_mb"], ".0f"), _fmt(r.get("int8_executed"), ".1%"),
                     _fmt(r["psnr_drop_db"], "+.3f") if r["psnr_drop_db"] is not None else "",
                     r["reason"] or ""])
    lines.append(markdown_table(
        ["backend", "LR → output", "status", "median ms", "p90 ms", "p99 ms", "min ms", "runs", "img/s", "out MP/s",
         "GFLOP/s", "of measured CPU peak", "peak RSS MB", "conv MACs run in u8/i8", "PSNR loss dB (held-out)",
         "reason"], rows))
    return "\n".join(lines)


def _rewritten_counts(report: dict) -> list[tuple[float, list[str]]]:
    """(MACs per output pixel, backends) where a backend's graph computes other than the architecture."""
    found: dict[float, list[str]] = {}
    for r in report["results"]:
        macs = r.get("macs_per_output_pixel")
        if macs is not None and abs(macs - report["macs_per_output_pixel"]) > 0.5 and r["backend"] not in found.get(macs, []):
            found.setdefault(macs, []).append(r["backend"])
    return list(found.items())


def bar_chart(report: dict, path: Path) -> Path | None:
    """Median latency per backend and size; None when matplotlib is missing (the table still stands)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    ok = [r for r in report["results"] if r["status"] == "ok"]
    if not ok:
        return None
    sizes = list(dict.fromkeys(r["size"] for r in ok))
    backends = list(dict.fromkeys(r["backend"] for r in ok))
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(backends) * len(sizes), 3.8))
    width = 0.8 / len(sizes)
    for i, size in enumerate(sizes):
        values = [next((r["median_ms"] for r in ok if r["backend"] == b and r["size"] == size), 0) for b in backends]
        bars = ax.bar(np.arange(len(backends)) + i * width, values, width, label=f"LR {size}")
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set_xticks(np.arange(len(backends)) + width * (len(sizes) - 1) / 2, backends)
    ax.set_ylabel("median latency (ms)")
    ax.set_title(f"{report['model']} ×{report['scale']} — {report['machine']['cpu']}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    from ..runtime.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def cpu_text(m: dict) -> str:
    """``CPU (features; int8 dot product: …)`` of a ``machine()`` record."""
    return f"{m['cpu']} ({', '.join(m['cpu_features'])}; int8 dot product: {m['int8_dot']})"


def report_header(command: str, model: str, scale: int, macs_per_output_pixel: float | None) -> dict:
    return {"command": command, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "model": model,
            "scale": scale, "macs_per_output_pixel": macs_per_output_pixel, "machine": machine(), "results": []}


def write_doc_block(doc: Path, marks: tuple[str, str], text: str) -> None:
    """``text`` between the two marker lines of the page ``doc`` (a generated table inside a hand-written page)."""
    page = doc.read_text()
    start, end = page.index(marks[0]) + len(marks[0]), page.index(marks[1])
    doc.write_text(f"{page[:start]}\n{text}\n{page[end:]}")
    print(text)


def write_results(out: str | Path, stem: str, report: dict, text: str) -> Path:
    """``report`` as ``OUT/STEM_<machine>.json`` and ``text`` as its ``.md``, each written atomically; the shared
    path without suffix (for a chart beside them)."""
    from ..runtime.atomic import atomic_path

    slug = "cpu-" + "-".join(report["machine"]["cpu"].lower().replace("(r)", "").split()[:3])
    base = Path(out) / f"{stem}_{slug}"
    base.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(base.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    with atomic_path(base.with_suffix(".md")) as tmp:
        tmp.write_text(text.rstrip("\n") + "\n")
    print(text)
    return base


if __name__ == "__main__":  # the child process of bench_one
    print(json.dumps(worker(json.loads(sys.argv[1]))))
