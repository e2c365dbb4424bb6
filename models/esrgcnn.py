"""ESRGCNN (Tian et al., IEEE TNNLS 2022): enhanced SR group CNN, multi-scale (one network, ×2/×3/×4).

A 3×3 + ReLU head, six multi-level feature-distillation modules (MFC), a 3×3 + ReLU merge, a sub-pixel
branch per scale, ReLU, and a 3×3 to RGB.

Each MFC splits every 3×3 output into 16 distilled and 48 remaining channels. The remaining channels are
rectified in place by the reference and then added to the next level, so the chain is
``s ← relu(r + s)`` (rectified sums); the last level's sum is left unrectified. Distilled parts are summed,
concatenated with that sum, rectified, passed through two 3×3 + ReLU layers and added to the module input.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import MEAN_SHIFT_KEYS, MeanShift, Upsampler, conv, conv_relu, upsampler_key_map

FEATURES = 64
DISTILLED = 16
LEVELS = 4
MODULES = 6


class FeatureDistillation(nn.Module):
    """The reference ``MFCModule``."""

    def __init__(self, channels: int = FEATURES, distilled: int = DISTILLED):
        super().__init__()
        self.split_sizes = (distilled, channels - distilled)
        remaining = channels - distilled
        self.levels = nn.ModuleList([conv(channels if i == 0 else remaining, channels) for i in range(LEVELS)])
        self.fuse = nn.Sequential(conv_relu(channels, channels), conv_relu(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        distilled, remaining = torch.split(self.levels[0](x), self.split_sizes, dim=1)
        running = F.relu(remaining)
        for i, level in enumerate(self.levels[1:], start=1):
            d, r = torch.split(level(running), self.split_sizes, dim=1)
            distilled = distilled + d
            running = r + running if i == LEVELS - 1 else F.relu(r + running)
        return x + self.fuse(F.relu(torch.cat([distilled, running], dim=1)))


class ESRGCNN(nn.Module):
    def __init__(self, scale: int, branch_scales: tuple[int, ...] | None = (2, 3, 4)):
        super().__init__()
        self.scale = scale
        self.sub_mean = MeanShift(-1)
        self.head = conv_relu(3, FEATURES)
        self.body = nn.Sequential(*[FeatureDistillation() for _ in range(MODULES)])
        self.merge = conv_relu(FEATURES, FEATURES)
        self.upsample = Upsampler(FEATURES, scale, branch_scales)
        self.tail = conv(FEATURES, 3)
        self.add_mean = MeanShift(+1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.merge(self.body(self.head(self.sub_mean(x))))
        return self.add_mean(self.tail(F.relu(self.upsample(features))))


def official_key_map(scale: int, multi_scale: bool = True) -> dict[str, str]:
    """hellloxiaotian/ESRGCNN layout: conv1_1, b1…b6 (conv1_1…conv1_6 each), conv2, conv3."""
    mapping = {**MEAN_SHIFT_KEYS, "conv1_1.0.": "head.0.", "conv2.0.": "merge.0.", "conv3.0.": "tail."}
    for m in range(MODULES):
        for level in range(LEVELS):
            mapping[f"b{m + 1}.conv1_{level + 1}.0."] = f"body.{m}.levels.{level}."
        mapping[f"b{m + 1}.conv1_5.0."] = f"body.{m}.fuse.0.0."
        mapping[f"b{m + 1}.conv1_6.0."] = f"body.{m}.fuse.1.0."
    mapping.update(upsampler_key_map(scale, multi_scale))
    return mapping
