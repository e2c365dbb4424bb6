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
from .pipeline import Infer, Window


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
    """``infer`` applied tile by tile to float32 N×C×H×W; returns N×C×(s·H)×(s·W) float32 (``tiled_bands``, put
    together).

    ``gate``: for a network whose gate reads the whole image, what gives its GateSplit (asked for only when
    the image needs more than one tile); the decision is then taken once, on the whole image. ``workers`` > 1:
    that many tiles in flight at once, on threads (an ``infer`` that may be called concurrently); each tile's
    result is the same as when they run one after another."""
    n, c, height, width = x.shape
    if tile <= 0 or (height <= tile and width <= tile):
        return infer(x)
    out = np.empty((n, c, height * scale, width * scale), dtype=np.float32)
    row = 0
    for band in tiled_bands(lambda ya, yb, xa, xb: np.ascontiguousarray(x[:, :, ya:yb, xa:xb]), height, width, infer,
                            scale, tile, overlap, min_size, gate, workers):
        out[:, :, row:row + band.shape[2]] = band
        row += band.shape[2]
    return out


def tiled_bands(window: Window, height: int, width: int, infer: Infer, scale: int, tile: int, overlap: int,
                min_size: int = 1, gate: Callable[[], GateSplit] | None = None, workers: int = 1) -> Iterator[np.ndarray]:
    """The output of ``infer`` over an H×W input read through ``window``, one row of tiles at a time from the top:
    float32 N×C×(s·rows)×(s·W) per row of tiles (one band, whatever the whole image's size: the memory is the
    tile's, not the image's). Tiles as ``tiled_infer`` (``gate``, ``workers``); the whole image at once where it is
    no larger than a tile."""
    if tile <= 0 or (height <= tile and width <= tile):
        yield infer(window(0, height, 0, width))
        return
    rows, columns = list(_spans(height, tile, overlap, min_size)), list(_spans(width, tile, overlap, min_size))
    if gate is not None:
        split = gate()
        decision = split.decide(_mean_over_cores(window, split.features, rows, columns, height * width))
        infer = lambda part: split.forced(part, decision)  # noqa: E731
    for y0, y1, ya, yb in rows:
        band: list[np.ndarray | None] = [None] * len(columns)

        def run(index: int) -> None:
            x0, x1, xa, xb = columns[index]
            patch = infer(window(ya, yb, xa, xb))
            # a copy: a runtime may hand out its own output buffer, which its next call overwrites
            band[index] = patch[:, :, (y0 - ya) * scale:(y1 - ya) * scale, (x0 - xa) * scale:(x1 - xa) * scale].copy()

        if workers > 1 and len(columns) > 1:
            with ThreadPoolExecutor(min(workers, len(columns))) as pool:
                list(pool.map(run, range(len(columns))))  # list: a tile's exception is raised here
        else:
            for index in range(len(columns)):
                run(index)
        yield np.concatenate(band, axis=3)


def whole_image_mean(x: np.ndarray, features: Infer, tile: int, overlap: int, min_size: int = 1) -> np.ndarray:
    """The mean over H×W of ``features(x)`` (N×C), computed tile by tile: each tile's core summed in float64."""
    height, width = x.shape[2:]
    return _mean_over_cores(lambda ya, yb, xa, xb: np.ascontiguousarray(x[:, :, ya:yb, xa:xb]), features,
                            list(_spans(height, tile, overlap, min_size)), list(_spans(width, tile, overlap, min_size)),
                            height * width)


def _mean_over_cores(window: Window, features: Infer, rows: list[tuple[int, int, int, int]],
                     columns: list[tuple[int, int, int, int]], pixels: int) -> np.ndarray:
    """The mean over the image's ``pixels`` of ``features`` from its windows, (core start, core end, window start,
    window end) per axis: each window's core summed in float64."""
    total = 0.0
    for y0, y1, ya, yb in rows:
        for x0, x1, xa, xb in columns:
            part = features(window(ya, yb, xa, xb))
            total = total + part[:, :, y0 - ya:y1 - ya, x0 - xa:x1 - xa].sum(axis=(2, 3), dtype=np.float64)
    return total / pixels


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
        decision = split.decide(_mean_over_cores(
            lambda ya, yb, xa, xb: np.ascontiguousarray(x[:, :, ya:yb, xa:xb]), split.features,
            [(*r, r[2] + window[0]) for r in rows], [(*col, col[2] + window[1]) for col in columns], height * width))
        infer = lambda part: split.forced(part, decision)  # noqa: E731
    out = np.empty((n, c, height * scale, width * scale), dtype=np.float32)
    for y0, y1, ya in rows:
        for x0, x1, xa in columns:
            patch = infer(np.ascontiguousarray(x[:, :, ya:ya + window[0], xa:xa + window[1]]))
            out[:, :, y0 * scale:y1 * scale, x0 * scale:x1 * scale] = patch[
                :, :, (y0 - ya) * scale:(y1 - ya) * scale, (x0 - xa) * scale:(x1 - xa) * scale]
    return out
