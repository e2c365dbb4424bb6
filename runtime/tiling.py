"""Tiled inference: bounded memory for any image size, identical to whole-image inference.

Each tile is run with a context margin of ``overlap`` LR pixels on every side (clipped at the image
border) and only its core is kept. With ``overlap`` ≥ the network's receptive radius, every kept output
pixel saw exactly the input it sees in a whole-image run, so there are no seams to blend away; the
results agree up to floating-point noise.

A network whose gate reads a global average (DSRNet) is tiled in two passes: the average of the gate's
features is summed over the tile cores (exact: the whole image's average), the decision taken once from it,
and every tile then run with that decision (``runtime.global_gate``).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

import numpy as np

from .global_gate import GateSplit
from .pipeline import Infer


def _spans(length: int, tile: int, overlap: int, min_size: int) -> Iterator[tuple[int, int, int, int]]:
    """(core start, core end, context start, context end) along one axis."""
    for start in range(0, length, tile):
        end = min(start + tile, length)
        lo, hi = max(start - overlap, 0), min(end + overlap, length)
        while hi - lo < min(min_size, length):  # widen small edge windows to the artifact's minimum
            lo, hi = max(lo - 1, 0), min(hi + 1, length)
        yield start, end, lo, hi


def tiled_infer(x: np.ndarray, infer: Infer, scale: int, tile: int, overlap: int, min_size: int = 1,
                gate: Callable[[], GateSplit] | None = None, workers: int = 1) -> np.ndarray:
    """``infer`` applied tile by tile to float32 N×C×H×W; returns N×C×(s·H)×(s·W) float32.

    ``gate``: for a network whose gate reads the whole image, what gives its GateSplit (asked for only when
    the image needs more than one tile); the decision is then taken once, on the whole image. ``workers`` > 1:
    that many tiles in flight at once, on threads (an ``infer`` that may be called concurrently); each tile's
    result is the same as when they run one after another."""
    n, c, height, width = x.shape
    if tile <= 0 or (height <= tile and width <= tile):
        return infer(x)
    if gate is not None:
        split = gate()
        decision = split.decide(whole_image_mean(x, split.features, tile, overlap, min_size))
        infer = lambda part: split.forced(part, decision)  # noqa: E731
    out = np.empty((n, c, height * scale, width * scale), dtype=np.float32)
    tiles = [(row, column) for row in _spans(height, tile, overlap, min_size)
             for column in _spans(width, tile, overlap, min_size)]

    def run(spans: tuple[tuple[int, int, int, int], tuple[int, int, int, int]]) -> None:
        (y0, y1, ya, yb), (x0, x1, xa, xb) = spans
        patch = infer(np.ascontiguousarray(x[:, :, ya:yb, xa:xb]))
        out[:, :, y0 * scale : y1 * scale, x0 * scale : x1 * scale] = patch[
            :, :, (y0 - ya) * scale : (y1 - ya) * scale, (x0 - xa) * scale : (x1 - xa) * scale
        ]

    if workers > 1:
        with ThreadPoolExecutor(min(workers, len(tiles))) as pool:
            list(pool.map(run, tiles))  # list: a tile's exception is raised here
    else:
        for spans in tiles:
            run(spans)
    return out


def whole_image_mean(x: np.ndarray, features: Infer, tile: int, overlap: int, min_size: int = 1) -> np.ndarray:
    """The mean over H×W of ``features(x)`` (N×C), computed tile by tile: each tile's core summed in float64."""
    height, width = x.shape[2:]
    return _mean_over_cores(x, features, list(_spans(height, tile, overlap, min_size)),
                            list(_spans(width, tile, overlap, min_size)))


def _mean_over_cores(x: np.ndarray, features: Infer, rows: list[tuple[int, int, int, int]],
                     columns: list[tuple[int, int, int, int]]) -> np.ndarray:
    """The mean over H×W of ``features(x)`` from its windows, (core start, core end, window start, window end) per
    axis: each window's core summed in float64."""
    total = 0.0
    for y0, y1, ya, yb in rows:
        for x0, x1, xa, xb in columns:
            part = features(np.ascontiguousarray(x[:, :, ya:yb, xa:xb]))
            total = total + part[:, :, y0 - ya:y1 - ya, x0 - xa:x1 - xa].sum(axis=(2, 3), dtype=np.float64)
    return total / (x.shape[2] * x.shape[3])


def _fixed_spans(length: int, window: int, overlap: int) -> Iterator[tuple[int, int, int]]:
    """(core start, core end, window start) along one axis for windows of exactly ``window`` pixels: cores of
    ``window - 2·overlap``, each window shifted inward at the image borders (so it stays inside the image).
    A window that spans the whole axis is one tile."""
    if window >= length:
        yield 0, length, 0
        return
    core = window - 2 * overlap
    if core < 1:
        raise ValueError(f"a {window}-pixel window leaves no core after {overlap} pixels of context per side")
    for start in range(0, length, core):
        yield start, min(start + core, length), min(max(start - overlap, 0), length - window)


def windowed_infer(x: np.ndarray, infer: Infer, scale: int, window: tuple[int, int], overlap: int,
                   gate: Callable[[], GateSplit] | None = None) -> np.ndarray:
    """Tiled inference with windows of one fixed size (H, W) ≤ the image: the rule of the iOS bundle's Swift
    code, for models compiled for enumerated sizes. Every kept output pixel has ``overlap`` LR pixels of real
    context or lies at the image border, exactly as in a whole-image run. ``gate``: as for ``tiled_infer``, the
    features summed over the same windows' cores (the Swift code's ``tileModel``)."""
    n, c, height, width = x.shape
    if window[0] > height or window[1] > width:
        raise ValueError(f"window {window} is larger than the image {height}×{width}")
    rows, columns = list(_fixed_spans(height, window[0], overlap)), list(_fixed_spans(width, window[1], overlap))
    if gate is not None and len(rows) * len(columns) > 1:
        split = gate()
        decision = split.decide(_mean_over_cores(x, split.features, [(*r, r[2] + window[0]) for r in rows],
                                                 [(*col, col[2] + window[1]) for col in columns]))
        infer = lambda part: split.forced(part, decision)  # noqa: E731
    out = np.empty((n, c, height * scale, width * scale), dtype=np.float32)
    for y0, y1, ya in rows:
        for x0, x1, xa in columns:
            patch = infer(np.ascontiguousarray(x[:, :, ya:ya + window[0], xa:xa + window[1]]))
            out[:, :, y0 * scale:y1 * scale, x0 * scale:x1 * scale] = patch[
                :, :, (y0 - ya) * scale:(y1 - ya) * scale, (x0 - xa) * scale:(x1 - xa) * scale]
    return out
