"""RGB image ↔ network tensors, for RGB networks and for Y-channel networks (FSRCNN). numpy only."""
from __future__ import annotations

from typing import Callable

import numpy as np

from . import images

Infer = Callable[[np.ndarray], np.ndarray]


def network_input(rgb: np.ndarray, colour: str) -> np.ndarray:
    """RGB uint8 H×W×3 → the network's float32 1×C×H×W input in [0, 1] (C = 3 RGB, or 1 = BT.601 Y)."""
    if colour == "y":
        return images.rgb_to_ycbcr(rgb / 255.0)[..., 0].astype(np.float32)[None, None]
    return images.to_unit_float(rgb)


def upscale_rgb(rgb: np.ndarray, infer: Infer, colour: str) -> np.ndarray:
    """Upscale an RGB uint8 image end to end; returns RGB uint8 (rounded).

    Y-channel networks upscale the luminance; chroma (Cb, Cr) is upscaled bicubically, as in the
    FSRCNN paper and its reference code.
    """
    output = infer(network_input(rgb, colour))
    if colour == "rgb":
        return images.to_uint8(output[0].transpose(1, 2, 0))
    luma = output[0, 0].astype(np.float64)
    height, width = luma.shape
    ycbcr = images.rgb_to_ycbcr(rgb / 255.0)
    chroma = [images.bicubic_resize(ycbcr[..., c], width, height) for c in (1, 2)]
    return images.to_uint8(images.ycbcr_to_rgb(np.dstack([luma, *chroma])))


def upscale_picture(picture: images.Picture, infer: Infer, colour: str) -> images.Picture:
    """``upscale_rgb`` on the colour; alpha (where there is one) resized bicubically to the output size; the
    colour profile carried over, so the output looks as the input does."""
    rgb = upscale_rgb(picture.rgb, infer, colour)
    alpha = None
    if picture.alpha is not None:
        height, width = rgb.shape[:2]
        alpha = images.to_uint8(images.bicubic_resize(picture.alpha / 255.0, width, height))
    return images.Picture(rgb, alpha, picture.icc_profile)
