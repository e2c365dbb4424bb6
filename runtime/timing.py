"""Latency measurement for any ``infer``: warm-up, timed runs, median / p90 / p99 / min / max (numpy only).

Each timed call is end to end as a user sees it: host input in, host output back (the GPU backends
synchronise their stream before returning), so wall-clock timing is correct for every backend.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np


@dataclass
class Timing:
    name: str
    median_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    runs: int


def measure(
    name: str, infer: Callable[[np.ndarray], np.ndarray], x: np.ndarray, warmup: int, runs: int,
    progress: Callable[[Iterable], Iterable] = lambda it: it,
) -> Timing:
    """``warmup`` untimed calls, then ``runs`` (≥ 1) timed ones on the same input."""
    for _ in range(warmup):
        infer(x)
    seconds = []
    for _ in progress(range(max(1, runs))):
        start = time.perf_counter()
        infer(x)
        seconds.append(time.perf_counter() - start)
    ms = 1000 * np.asarray(seconds)
    return Timing(name, float(np.median(ms)), float(np.percentile(ms, 90)), float(np.percentile(ms, 99)),
                  float(ms.min()), float(ms.max()), len(ms))


# Pause before each timed call of ``interleaved_medians``: the previous runtime's worker threads keep spinning
# after a call returns (ONNX Runtime's intra-op pool, OpenVINO's), and a call right after them shares the cores
# with them. FSRCNN ×2 on ONNX Runtime FP32 read 91 ms right after an OpenVINO call, 55 ms after 0.1 s (0.5 s:
# 58 ms), AVX2 EPYC.
SETTLE_S = 0.1


def interleaved_medians(infers: dict[str, Callable[[np.ndarray], np.ndarray]], x: np.ndarray, rounds: int = 15,
                        settle_s: float = SETTLE_S) -> dict[str, float]:
    """Median ms of each ``infer`` on ``x``, one call of each per round after 3 untimed ones: a neighbour's load
    on a shared machine drifts over minutes (measured one after another, the same graph read 10 % apart), so
    every round sees the same load. Each call waits ``settle_s`` first."""
    for infer in infers.values():
        measure("", infer, x, 3, 1)
    ms: dict[str, list[float]] = {name: [] for name in infers}
    for _ in range(rounds):
        for name, infer in infers.items():
            time.sleep(settle_s)
            ms[name].append(measure("", infer, x, 0, 1).median_ms)
    return {name: float(np.median(values)) for name, values in ms.items()}
