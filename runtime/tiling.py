"""Tiled inference: bounded memory for any image size, identical to whole-image inference.

Each tile is run with a context margin of ``overlap`` LR pixels on every side (clipped at the image
border) and only its core is kept. With ``overlap`` ≥ the network's receptive radius, every kept output
pixel saw exactly the input it sees in a whole-image run, so there are no seams to blend away; the
results agree up to floating-point noise. (DSRNet's gate also sees a global average, so its tiles may
gate differently from the whole image.)
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from runtime.pipeline import Infer


def _spans(length: int, tile: int, overlap: int, min_size: int) -> Iterator[tuple[int, int, int, int]]:
    """(core start, core end, context start, context end) along one axis."""
    for start in range(0, length, tile):
        end = min(start + tile, length)
        lo, hi = max(start - overlap, 0), min(end + overlap, length)
        while hi - lo < min(min_size, length):  # widen small edge windows to the artifact's minimum
            lo, hi = max(lo - 1, 0), min(hi + 1, length)
        yield start, end, lo, hi


def tiled_infer(x: np.ndarray, infer: Infer, scale: int, tile: int, overlap: int, min_size: int = 1) -> np.ndarray:
    """``infer`` applied tile by tile to float32 N×C×H×W; returns N×C×(s·H)×(s·W) float32."""
    n, c, height, width = x.shape
    if tile <= 0 or (height <= tile and width <= tile):
        return infer(x)
    out = np.empty((n, c, height * scale, width * scale), dtype=np.float32)
    for y0, y1, ya, yb in _spans(height, tile, overlap, min_size):
        for x0, x1, xa, xb in _spans(width, tile, overlap, min_size):
            patch = infer(np.ascontiguousarray(x[:, :, ya:yb, xa:xb]))
            out[:, :, y0 * scale : y1 * scale, x0 * scale : x1 * scale] = patch[
                :, :, (y0 - ya) * scale : (y1 - ya) * scale, (x0 - xa) * scale : (x1 - xa) * scale
            ]
    return out
