"""What a network of your own is, measured on the network itself: what the zoo's ``ExportConfig`` states by hand.

- **channels**: the input it runs on, 3 (RGB) or 1 (luma), with as many channels out;
- **scale**: output size ÷ input size, an integer, the same for every size tried;
- **min size**: the smallest LR side from which every size runs (odd ones too: artifacts take any H×W);
- **receptive radius**: an impulse probe in float64 (one LR pixel changed, which HR pixels move), the margin tiles
  need; where the changes reach the image border at every probe size, an output pixel depends on the whole image
  (global pooling, attention) and the network is **never tiled**;
- a **tiling check**: tiles with that margin must reproduce the whole-image output, else whole-image only.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..runtime.errors import SrDeployError
from ..runtime.tiling import tiled_infer

PROBE_SIZE = 24  # LR side of the shape probes
ODD_SIZE = (19, 23)  # a non-square, odd LR size every artifact must take
MAX_MIN_SIZE = 40  # sizes from here down to the smallest that runs are tried
IMPULSE_SIZES = (48, 96, 192)  # LR sides of the impulse probe, grown while the changes reach the border
IMPULSE_SEEDS = (0, 1, 2)  # random backgrounds: a dead ReLU on one does not hide a path on all
TILE_CHECK = (64, 80, 20)  # LR height, width and tile of the tiling check
TILE_TOLERANCE = 1e-9  # float64 tiles vs whole, relative to the output's peak


@dataclass(frozen=True)
class Measured:
    channels: int
    scale: int
    min_size: int
    receptive_radius: int
    whole_image: bool  # an output pixel depends on the whole image: never tiled
    why_whole: str = ""  # for people, when whole_image


def _run(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out = network(x)
    if not isinstance(out, torch.Tensor):
        raise SrDeployError(f"the network returns {type(out).__name__}, not one tensor: return the upscaled N×C×H×W "
                            "image from forward()")
    return out


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:160]}" if text else type(exc).__name__


def input_channels(network: nn.Module, name: str) -> int:
    """3 if the network runs on RGB, else 1 if it runs on luma; the output has as many channels."""
    failures = {}
    for channels in (3, 1):
        try:
            out = _run(network, torch.rand(1, channels, PROBE_SIZE, PROBE_SIZE, generator=torch.Generator().manual_seed(0)))
        except SrDeployError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's forward() may raise anything on the wrong input
            failures[channels] = _first_line(exc)
            continue
        if out.ndim != 4 or out.shape[1] != channels:
            raise SrDeployError(f"{name} maps {channels} channels to an output of shape {tuple(out.shape)}: srdeploy "
                                f"needs N×C×H×W in and N×C×(s·H)×(s·W) out, C = 3 (RGB) or 1 (luma)")
        return channels
    raise SrDeployError(f"{name} runs neither on 1×3×{PROBE_SIZE}×{PROBE_SIZE} RGB ({failures[3]}) nor on 1-channel luma "
                        f"({failures[1]}): check --model-args")


def upscale_factor(network: nn.Module, channels: int, name: str) -> int:
    """The integer output/input size ratio, the same at a square and at an odd non-square size."""
    ratios = set()
    for height, width in ((PROBE_SIZE, PROBE_SIZE), ODD_SIZE):
        try:
            out = _run(network, torch.rand(1, channels, height, width))
        except Exception as exc:  # noqa: BLE001
            raise SrDeployError(f"{name} fails on a {height}×{width} input ({_first_line(exc)}): srdeploy's artifacts "
                                "take any H×W; pad inside forward() to the multiple the network needs") from None
        out_h, out_w = out.shape[2:]
        if out_h % height or out_w % width or out_h // height != out_w // width:
            raise SrDeployError(f"{name} turns {height}×{width} into {out_h}×{out_w}: not one integer scale")
        ratios.add(out_h // height)
    if len(ratios) != 1 or min(ratios) < 1:
        raise SrDeployError(f"{name}'s upscaling factor changes with the input size ({sorted(ratios)})")
    return ratios.pop()


def smallest_size(network: nn.Module, channels: int, scale: int) -> int:
    """The smallest LR side from which every side up to ``MAX_MIN_SIZE`` runs at ``scale``."""
    for side in range(MAX_MIN_SIZE, 0, -1):
        try:
            out = _run(network, torch.rand(1, channels, side, side + 1))
        except Exception:  # noqa: BLE001
            return side + 1
        if tuple(out.shape[2:]) != (side * scale, (side + 1) * scale):
            return side + 1
    return 1


def _influence(network: nn.Module, channels: int, scale: int, size: int) -> tuple[int, bool]:
    """(LR radius of the HR pixels one centre LR pixel moves, whether they reach the image border)."""
    centre, radius, border = size // 2, 0, False
    for seed in IMPULSE_SEEDS:
        x = torch.rand(1, channels, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        base = _run(network, x)
        for delta in (0.5, -0.5):
            moved = x.clone()
            moved[:, :, centre, centre] += delta
            changed = (_run(network, moved) != base).any(dim=1)[0].nonzero()
            if not len(changed):
                continue
            rows, cols = changed[:, 0], changed[:, 1]
            first, last = centre * scale, centre * scale + scale - 1
            reach = max(first - int(rows.min()), int(rows.max()) - last, first - int(cols.min()), int(cols.max()) - last, 0)
            radius = max(radius, math.ceil(reach / scale))
            edge = size * scale - 1
            border |= int(rows.min()) == 0 or int(cols.min()) == 0 or int(rows.max()) == edge or int(cols.max()) == edge
    return radius, border


def tiles_match(network: nn.Module, channels: int, scale: int, overlap: int, min_size: int) -> float:
    """Largest |tiled − whole| relative to the output's peak, float64, tiles with ``overlap`` LR pixels of context."""
    height, width, tile = TILE_CHECK
    x = np.random.default_rng(0).random((1, channels, height, width))

    def infer(part: np.ndarray) -> np.ndarray:
        return _run(network, torch.from_numpy(part).double()).numpy()

    whole = infer(x).astype(np.float32)
    tiled = tiled_infer(x, infer, scale, tile, overlap, min_size)
    return float(np.abs(tiled - whole).max() / max(np.abs(whole).max(), 1e-12))


def measure(network: nn.Module, name: str) -> Measured:
    """Channels, scale, smallest size, receptive radius and tileability of an eval-mode ``network``."""
    channels = input_channels(network, name)
    scale = upscale_factor(network, channels, name)
    min_size = smallest_size(network, channels, scale)
    twin = copy.deepcopy(network).double()
    for size in IMPULSE_SIZES:
        radius, border = _influence(twin, channels, scale, size)
        if not border:
            break
    else:
        return Measured(channels, scale, min_size, radius, True,
                        f"one LR pixel changes output pixels at the border of a {size}×{size} image: an output pixel "
                        "depends on the whole image (global pooling or attention)")
    error = tiles_match(twin, channels, scale, radius, min_size)
    if error > TILE_TOLERANCE:
        return Measured(channels, scale, min_size, radius, True,
                        f"tiles with {radius} pixels of context differ from the whole image by {error:.2g} of its peak")
    return Measured(channels, scale, min_size, radius, False)
