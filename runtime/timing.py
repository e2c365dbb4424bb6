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
