"""The CPU's vector and integer-dot-product features, recorded beside every number measured on it."""
from __future__ import annotations

import os
from pathlib import Path

FEATURES = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8",
            "amx_bf16")


def cpu_flags() -> set[str]:
    """The flags of /proc/cpuinfo (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((x for x in text.splitlines() if x.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def threads_cap() -> int | None:
    """``OMP_NUM_THREADS`` when it names a positive count (the cap PyTorch honours; ONNX Runtime, OpenVINO and ncnn do
    not read it, so their sessions are given it), else None: each library's own default."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity), not the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), or the platform's word for it."""
    import platform

    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def features(flags: set[str] | None = None) -> list[str]:
    """The ``FEATURES`` this CPU has."""
    flags = cpu_flags() if flags is None else flags
    return [f for f in FEATURES if f in flags]


def int8_dot(flags: set[str] | None = None) -> str:
    """How the CPU multiplies int8: ``amx``, ``vnni`` (int32 accumulation), or ``pairwise-int16`` (AVX2 and
    AVX-512F without VNNI: vpmaddubsw adds two products in int16, which can saturate)."""
    flags = cpu_flags() if flags is None else flags
    if "amx_int8" in flags:
        return "amx"
    if {"avx512_vnni", "avx_vnni"} & flags:
        return "vnni"
    return "pairwise-int16"
