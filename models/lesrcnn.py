"""LESRCNN (Tian et al., Knowledge-Based Systems 2020): lightweight enhanced SR CNN.

IEEB (information extraction and enhancement block): a 3×3 head and eight residual units
(3×3 + ReLU, 1×1); RB (reconstruction block): sub-pixel upsampling of the deep features and of the head's
features, summed; IRB (information refinement block): four 3×3 + ReLU layers and a 3×3 to RGB.

The reference forward pass applies ``nn.ReLU(inplace=True)`` to tensors that are still referenced by the
next residual addition, so every addition sees the *rectified* running sum: the residual chain is
``s ← relu(s + unit(s))`` starting from ``s = relu(head(x))``. The official weights were trained with
that behaviour, and this module computes it explicitly.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import MEAN_SHIFT_KEYS, MeanShift, Upsampler, conv, conv_relu, upsampler_key_map

FEATURES = 64
UNITS = 8
REFINE_LAYERS = 4


class ResidualUnit(nn.Module):
    """3×3 conv + ReLU → 1×1 conv, added to the input and rectified (post-activation residual)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv(channels, channels, 3), nn.ReLU(), conv(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class LESRCNN(nn.Module):
    def __init__(self, scale: int, branch_scales: tuple[int, ...] | None = None):
        super().__init__()
        self.scale = scale
        self.sub_mean = MeanShift(-1)
        self.head = conv(3, FEATURES)
        self.ieeb = nn.Sequential(*[ResidualUnit(FEATURES) for _ in range(UNITS)])
        self.upsample = Upsampler(FEATURES, scale, branch_scales)
        self.irb = nn.Sequential(*[conv_relu(FEATURES, FEATURES) for _ in range(REFINE_LAYERS)])
        self.tail = conv(FEATURES, 3)
        self.add_mean = MeanShift(+1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shallow = F.relu(self.head(self.sub_mean(x)))
        deep = self.ieeb(shallow)
        fused = F.relu(self.upsample(shallow) + self.upsample(deep))
        return self.add_mean(self.tail(self.irb(fused)))


def official_key_map(scale: int, multi_scale: bool = False) -> dict[str, str]:
    """hellloxiaotian/LESRCNN ``x{2,3,4}/`` and ``lesrcnn_b/`` layouts."""
    mapping = {**MEAN_SHIFT_KEYS, "conv1.0.": "head.", "conv18.0.": "tail."}
    for i in range(UNITS):
        mapping[f"conv{2 + 2 * i}.0."] = f"ieeb.{i}.body.0."
        mapping[f"conv{3 + 2 * i}.0."] = f"ieeb.{i}.body.2."
    for j in range(REFINE_LAYERS):
        mapping[f"conv17_{j + 1}.0."] = f"irb.{j}.0."
    mapping.update(upsampler_key_map(scale, multi_scale))
    return mapping
