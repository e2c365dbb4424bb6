"""FSRCNN (Dong, Loy & Tang, ECCV 2016): d=56, s=12, m=4 on the luminance (Y) channel.

feature extraction (5×5) → shrinking (1×1) → m mapping layers (3×3) → expanding (1×1), each followed by
PReLU → a 9×9 transposed convolution of stride ``scale`` that produces the HR image.
Module names follow the paper (and the second public key layout); the yjn870 layout is mapped onto them.
"""
from __future__ import annotations

import torch
from torch import nn


def _conv_prelu(cin: int, cout: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2), nn.PReLU(cout))


class FSRCNN(nn.Module):
    def __init__(self, scale: int, channels: int = 1, d: int = 56, s: int = 12, m: int = 4):
        super().__init__()
        self.scale = scale
        self.feature_extraction = _conv_prelu(channels, d, 5)
        self.shrink = _conv_prelu(d, s, 1)
        self.map = nn.Sequential(*[layer for _ in range(m) for layer in _conv_prelu(s, s, 3)])
        self.expand = _conv_prelu(s, d, 1)
        self.deconv = nn.ConvTranspose2d(d, channels, 9, stride=scale, padding=4, output_padding=scale - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.feature_extraction(x)
        x = self.shrink(x)
        x = self.map(x)
        x = self.expand(x)
        return self.deconv(x)


def yjn870_key_map(scale: int) -> dict[str, str]:
    """yjn870/FSRCNN-pytorch: ``first_part``, ``mid_part.0..11``, ``last_part``."""
    mapping = {"first_part.": "feature_extraction.", "last_part.": "deconv."}
    mapping.update({f"mid_part.{i}.": f"shrink.{i}." for i in (0, 1)})
    mapping.update({f"mid_part.{i}.": f"map.{i - 2}." for i in range(2, 10)})
    mapping.update({f"mid_part.{i}.": f"expand.{i - 10}." for i in (10, 11)})
    return mapping


def paper_key_map(scale: int) -> dict[str, str]:
    """Lornatang/FSRCNN-PyTorch (the FSRCNN seed): already the paper's names."""
    return {f"{name}.": f"{name}." for name in ("feature_extraction", "shrink", "map", "expand", "deconv")}
