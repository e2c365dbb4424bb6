"""RGB image ↔ network tensors, for RGB networks and for Y-channel networks (FSRCNN). numpy only."""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from . import images

Infer = Callable[[np.ndarray], np.ndarray]
Window = Callable[[int, int, int, int], np.ndarray]  # (ya, yb, xa, xb) → float32 N×C×(yb−ya)×(xb−xa) of the input


def network_input(rgb: np.ndarray, colour: str) -> np.ndarray:
    """RGB uint8 H×W×3 → the network's float32 1×C×H×W input in [0, 1] (C = 3 RGB, or 1 = BT.601 Y)."""
    if colour == "y":
        return images.rgb_to_ycbcr(rgb / 255.0, channels=(0,))[..., 0].astype(np.float32)[None, None]
    return images.to_unit_float(rgb)


def upscale_rgb(rgb: np.ndarray, infer: Infer, colour: str) -> np.ndarray:
    """Upscale an RGB uint8 image end to end; returns RGB uint8 (rounded).

    Y-channel networks upscale the luminance; chroma (Cb, Cr) is upscaled bicubically, as in the
    FSRCNN paper and its reference code.
    """
    return upscale_picture(images.Picture(rgb), infer, colour).rgb


def upscale_picture(picture: images.Picture, infer: Infer, colour: str) -> images.Picture:
    """``upscale_rgb`` on the colour; alpha (where there is one) resized bicubically to the output size; the
    colour profile carried over, so the output looks as the input does. The whole image at once: the rows of
    ``upscale_bands`` put together."""
    rows = np.concatenate(list(upscale_bands(picture, whole(infer), colour)))
    alpha = rows[..., 3] if picture.alpha is not None else None
    return images.Picture(np.ascontiguousarray(rows[..., :3]), alpha, picture.icc_profile)


Bands = Callable[[Window, int, int], Iterator[np.ndarray]]  # (input window, H, W) → the output, band by band
CHUNK = 64  # output rows whose colour is made at a time


def whole(infer: Infer) -> Bands:
    """``infer`` on the whole input, as one band."""
    return lambda window, height, width: iter([infer(window(0, height, 0, width))])


def upscale_bands(picture: images.Picture, bands: Bands, colour: str) -> Iterator[np.ndarray]:
    """The upscaled picture from the top, a few rows at a time as ``bands`` computes them (``tiling.tiled_bands``
    holds one row of tiles): uint8 rows×(s·W)×3, or ×4 with the alpha resized bicubically. The network's input is
    made window by window, and the colour of each ``CHUNK`` of output rows apart (luma networks' chroma and the
    alpha resized over those rows only: ``images.bicubic_rows``, Pillow's bicubic to the bit), so no whole-image
    plane is held beyond the picture itself."""
    rgb = picture.rgb
    height, width = rgb.shape[:2]
    out_row = 0
    for band in bands(lambda ya, yb, xa, xb: network_input(rgb[ya:yb, xa:xb], colour), height, width):
        out_width = band.shape[3]
        out_height = height * (out_width // width)
        for start in range(0, band.shape[2], CHUNK):
            rows = band[0, :, start:start + CHUNK]
            y0 = out_row + start
            y1 = y0 + rows.shape[1]
            if colour == "rgb":
                colours = images.to_uint8(rows.transpose(1, 2, 0))
            else:
                chroma = images.bicubic_rows(lambda a, b: images.rgb_to_ycbcr(rgb[a:b] / 255.0, channels=(1, 2)),
                                             width, height, out_width, out_height, y0, y1)
                colours = images.to_uint8(images.planes_to_rgb(rows[0], chroma[..., 0], chroma[..., 1]))
            if picture.alpha is None:
                yield colours
                continue
            alpha = images.bicubic_rows(lambda a, b: picture.alpha[a:b] / 255.0, width, height, out_width, out_height,
                                        y0, y1)
            yield np.dstack([colours, images.to_uint8(alpha)])
        out_row += band.shape[2]
