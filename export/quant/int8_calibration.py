"""Activation ranges for INT8: tensors of the flattened graph run on calibration crops, |x| histograms, and the
range each method (``minmax``, ``percentile``, ``mse``) takes from them; per-channel ranges."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..onnx.onnx_export import cpu_session
from .int8_graph import QMAX, flatten, layer_macs, layers

BINS = 2048
METHODS = ("minmax", "percentile", "mse")
PERCENTILE = 99.99


def tensor_runs(proto: onnx.ModelProto, names: list[str], batch: np.ndarray, chunk: int = 8) -> Iterator[dict[str, np.ndarray]]:
    """The values of ``names`` (float tensors of the flattened graph), ``chunk`` images at a time."""
    probe = flatten(proto)
    existing = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names if n not in existing)
    session = cpu_session(probe)
    input_name = session.get_inputs()[0].name
    for start in range(0, len(batch), chunk):
        yield dict(zip(names, session.run(names, {input_name: batch[start : start + chunk]})))


def activation_histograms(proto: onnx.ModelProto, batch: np.ndarray, histograms: bool = True) -> dict[str, dict]:
    """Per conv input tensor: peak |x| and a BINS-bin histogram of |x| over [0, peak] (``histograms=False``:
    None, which saves a second pass over ``batch``: the "minmax" range needs the peak only); MACs per image."""
    sites = layers(proto)
    names = sorted({s.activation for s in sites} | {s.output for s in sites})
    peaks = dict.fromkeys(names, 0.0)
    shapes: dict[str, tuple[int, ...]] = {}
    for values in tensor_runs(proto, names, batch):
        for name, value in values.items():
            peaks[name] = max(peaks[name], float(np.abs(value).max(initial=0.0)))
            shapes[name] = value.shape
    counts = {s.activation: np.zeros(BINS, np.int64) for s in sites}
    for values in tensor_runs(proto, list(counts), batch) if histograms else ():
        for name, value in values.items():
            counts[name] += np.histogram(np.abs(value), BINS, (0.0, max(peaks[name], 1e-12)))[0]
    weights = {w.name: w.dims for w in proto.graph.initializer}
    stats = {name: {"peak": peaks[name], "histogram": counts[name].tolist() if histograms else None} for name in counts}
    stats["macs"] = {s.key: layer_macs(s, weights[s.weight], shapes[s.activation], shapes[s.output]) for s in sites}
    return stats


def activation_amax(histogram: list[int], peak: float, method: str) -> float:
    """The clipping range of one tensor from its |x| histogram."""
    if method == "minmax" or peak == 0.0:
        return peak
    counts = np.asarray(histogram, np.float64)
    edges = np.linspace(0.0, peak, BINS + 1)
    if method == "percentile":
        cumulative = np.cumsum(counts) / counts.sum()
        return float(edges[1 + np.searchsorted(cumulative, PERCENTILE / 100)])
    if method == "mse":
        centres = (edges[:-1] + edges[1:]) / 2
        candidates = edges[BINS // 16 :: 8][:, None]
        step = candidates / QMAX
        error = (centres - np.minimum(np.round(centres / step), QMAX) * step) ** 2
        return float(candidates[np.argmin(error @ counts), 0])
    raise ValueError(f"calibration method must be one of {METHODS}, not {method!r}")


def channel_ranges(proto: onnx.ModelProto, names: list[str], batch: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-channel (min, max) of ``names`` over ``batch``."""
    ranges: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for values in tensor_runs(proto, names, batch):
        for name, value in values.items():
            low, high = value.min(axis=(0, 2, 3)), value.max(axis=(0, 2, 3))
            if name in ranges:
                low, high = np.minimum(ranges[name][0], low), np.maximum(ranges[name][1], high)
            ranges[name] = low, high
    return ranges


def channel_peaks(proto: onnx.ModelProto, names: list[str], batch: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel max |x| of ``names`` over ``batch``."""
    return {name: np.maximum(-low, high) for name, (low, high) in channel_ranges(proto, names, batch).items()}
