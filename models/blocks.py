"""Building blocks shared by the zoo's networks.

Every network here is bias-free except where the official checkpoints carry biases (the mean shifts,
the upsamplers, FSRCNN, DSRNet's gate), so the helpers take ``bias`` explicitly.
"""
from __future__ import annotations

import torch
from torch import nn

# DIV2K RGB mean used by the LESRCNN family (the checkpoints store it in their mean-shift layers).
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def conv(cin: int, cout: int, kernel: int = 3, bias: bool = False) -> nn.Conv2d:
    """A 'same'-padded stride-1 convolution."""
    return nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=bias)


def conv_relu(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    """Convolution followed by ReLU (bias-free, as in the reference networks)."""
    return nn.Sequential(conv(cin, cout, kernel), nn.ReLU())


class MeanShift(nn.Conv2d):
    """Adds or subtracts the dataset mean as a 1×1 convolution, as the checkpoints store it.

    Kept as a convolution (not a constant) so the checkpoint's own values are what runs.
    """

    def __init__(self, sign: int, mean: tuple[float, ...] = DIV2K_RGB_MEAN):
        super().__init__(3, 3, 1)
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.bias.copy_(sign * torch.tensor(mean))
        self.requires_grad_(False)


def pixel_shuffle_upsampler(channels: int, scale: int) -> nn.Sequential:
    """Sub-pixel upsampling: one (conv 3×3 → PixelShuffle(2)) per factor 2, or one ×3 stage."""
    if scale == 3:
        factors = [3]
    elif scale in (2, 4, 8):
        factors = [2] * (scale.bit_length() - 1)
    else:
        raise ValueError(f"sub-pixel upsampler supports ×2, ×3, ×4, ×8, not ×{scale}")
    layers: list[nn.Module] = []
    for f in factors:
        layers += [nn.Conv2d(channels, f * f * channels, 3, padding=1), nn.PixelShuffle(f)]
    return nn.Sequential(*layers)


class Upsampler(nn.Module):
    """The reference upsampling block: one sub-pixel branch, or one branch per scale (multi-scale).

    A multi-scale network keeps all its branches (so its checkpoint loads exactly) and runs the one
    for ``scale``.
    """

    def __init__(self, channels: int, scale: int, branch_scales: tuple[int, ...] | None = None):
        super().__init__()
        self.scale = scale
        scales = branch_scales or (scale,)
        if scale not in scales:
            raise ValueError(f"×{scale} is not among the branches {scales}")
        self.branches = nn.ModuleDict({f"x{s}": pixel_shuffle_upsampler(channels, s) for s in scales})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branches[f"x{self.scale}"](x)


def upsampler_key_map(scale: int, multi_scale: bool) -> dict[str, str]:
    """Official ``upsample.*`` keys → ``upsample.branches.*`` (single- or multi-scale layout)."""
    if multi_scale:
        return {f"upsample.up{s}.body.": f"upsample.branches.x{s}." for s in (2, 3, 4)}
    return {"upsample.up.body.": f"upsample.branches.x{scale}."}


MEAN_SHIFT_KEYS = {"sub_mean.shifter.": "sub_mean.", "add_mean.shifter.": "add_mean."}
