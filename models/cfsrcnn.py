"""CFSRCNN (Tian et al., IEEE TMM 2020): coarse-to-fine SR CNN.

FEBs (feature extraction blocks): 16 stages of 1×1 compression + ReLU → 3×3, each stage fed the
rectified concatenation of the two previous stages' outputs (the head's features for the first);
EB (enhancement block): a 3×3 fusion of the last pair, added to the head's and every stage's output,
rectified, then five 3×3 + ReLU layers; CB (construction block): sub-pixel upsampling of those features
and of the head's features, summed; FRB (feature refinement block): five 3×3 + ReLU layers and a 3×3 to RGB.

Reference aliasing reproduced: the head output is rectified in place before it enters the long residual
sum, so that sum starts from ``relu(head(x))``; the other stage outputs enter it unrectified.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import MEAN_SHIFT_KEYS, MeanShift, Upsampler, conv, conv_relu, upsampler_key_map

FEATURES = 64
STAGES = 16
ENHANCE_LAYERS = 5
REFINE_LAYERS = 5


def _stage(cin: int) -> nn.Sequential:
    """1×1 compression + ReLU → 3×3 (no activation: the next concatenation is rectified)."""
    return nn.Sequential(conv(cin, FEATURES, 1), nn.ReLU(), conv(FEATURES, FEATURES, 3))


class CFSRCNN(nn.Module):
    def __init__(self, scale: int, branch_scales: tuple[int, ...] | None = None):
        super().__init__()
        self.scale = scale
        self.sub_mean = MeanShift(-1)
        self.head = conv(3, FEATURES)
        self.feb = nn.ModuleList([_stage(FEATURES if i == 0 else 2 * FEATURES) for i in range(STAGES)])
        self.fuse = conv(2 * FEATURES, FEATURES)
        self.enhance = nn.Sequential(*[conv_relu(FEATURES, FEATURES) for _ in range(ENHANCE_LAYERS)])
        self.upsample = Upsampler(FEATURES, scale, branch_scales)
        self.frb = nn.Sequential(*[conv_relu(FEATURES, FEATURES) for _ in range(REFINE_LAYERS)])
        self.tail = conv(FEATURES, 3)
        self.add_mean = MeanShift(+1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shallow = F.relu(self.head(self.sub_mean(x)))
        previous, current = shallow, self.feb[0](shallow)
        long_sum = shallow + current
        for stage in self.feb[1:]:
            previous, current = current, stage(F.relu(torch.cat([previous, current], dim=1)))
            long_sum = long_sum + current
        long_sum = long_sum + self.fuse(F.relu(torch.cat([previous, current], dim=1)))
        deep = self.enhance(F.relu(long_sum))
        fused = F.relu(self.upsample(shallow) + self.upsample(deep))
        return self.add_mean(self.tail(self.frb(fused)))


def official_key_map(scale: int, multi_scale: bool = False) -> dict[str, str]:
    """hellloxiaotian/CFSRCNN layout: conv1…conv41, conv34_1…conv34_5."""
    mapping = {**MEAN_SHIFT_KEYS, "conv1.0.": "head.", "conv34.0.": "fuse.", "conv41.0.": "tail."}
    for i in range(STAGES):
        mapping[f"conv{2 + 2 * i}.0."] = f"feb.{i}.0."
        mapping[f"conv{3 + 2 * i}.0."] = f"feb.{i}.2."
    for j in range(ENHANCE_LAYERS):
        mapping[f"conv{35 + j}.0."] = f"enhance.{j}.0."
    for j in range(REFINE_LAYERS):
        mapping[f"conv34_{j + 1}.0."] = f"frb.{j}.0."
    mapping.update(upsampler_key_map(scale, multi_scale))
    return mapping
