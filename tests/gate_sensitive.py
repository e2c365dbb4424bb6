"""A DSRNet ×2 checkpoint whose gate flips between tiles: the official weights with the gate's branch-1 bias moved
so that the whole butterfly image (Set5, ×2 LR) takes branch 1 while some of its 48-pixel tiles, alone, would
take branch 0. Used by the tiling tests and the GPU run (``benchmarks.gpu_run``)."""
from __future__ import annotations

from pathlib import Path

import torch

TILE = 48  # LR tile core


def tile_windows(length: int, radius: int) -> list[tuple[int, int]]:
    """The context window of each LR tile along one axis: the core ± the receptive radius, clipped."""
    return [(max(start - radius, 0), min(start + TILE + radius, length)) for start in range(0, length, TILE)]


def gate_sensitive_state(network: torch.nn.Module, state: dict, x: torch.Tensor, radius: int) -> dict:
    """``state`` (the official checkpoint) with the bias moved half-way between the whole image's margin and the
    lowest tile's, so the whole image ``x`` takes branch 1 and that tile branch 0."""

    def margin(part: torch.Tensor) -> float:  # logit of branch 1 minus branch 0, computed here from the layers
        x2 = network.reb[1](network.reb[0](network.sub_mean(part)))
        features = network.web[1](network.web[0](x2 + network.reb[3](network.reb[2](x2))))
        logits = network.gate.fc2(torch.relu(network.gate.fc1(features.mean((2, 3)))))
        return float(logits[0, 1] - logits[0, 0])

    with torch.no_grad():
        whole = margin(x)
        tiles = [margin(x[..., ya:yb, xa:xb]) for ya, yb in tile_windows(x.shape[2], radius)
                 for xa, xb in tile_windows(x.shape[3], radius)]
    if not min(tiles) < whole:
        raise AssertionError("no tile of this image leans towards branch 0")
    state = dict(state)
    state["gate.fc2.bias"] = state["gate.fc2.bias"].clone()
    state["gate.fc2.bias"][1] -= (whole + min(tiles)) / 2  # whole image: branch 1; the lowest tile: branch 0
    return state


def butterfly(shared: Path) -> Path:
    return shared / "datasets" / "Set5" / "LR_bicubic" / "X2" / "butterflyx2.png"
