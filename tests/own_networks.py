"""Networks that are not in the zoo, written for the tests of ``--model FILE.py:NAME`` (random weights)."""
import torch
from torch import nn


class ESPCN(nn.Module):
    """ESPCN (Shi et al., CVPR 2016) on luma: two tanh convolutions, then a sub-pixel convolution."""

    def __init__(self, scale: int, features: int = 16):
        super().__init__()
        self.feature = nn.Sequential(nn.Conv2d(1, features, 5, padding=2), nn.Tanh(),
                                     nn.Conv2d(features, features // 2, 3, padding=1), nn.Tanh())
        self.sub_pixel = nn.Sequential(nn.Conv2d(features // 2, scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, x):
        return self.sub_pixel(self.feature(x))


class MeanShift(nn.Conv2d):
    """EDSR's fixed 1×1 convolution that subtracts (sign −1) or adds (+1) the DIV2K RGB mean."""

    def __init__(self, sign: int, mean=(0.4488, 0.4371, 0.4040)):
        super().__init__(3, 3, 1)
        self.weight.data = torch.eye(3).view(3, 3, 1, 1)
        self.bias.data = sign * torch.tensor(mean)
        self.requires_grad_(False)


class ResBlock(nn.Module):
    def __init__(self, features: int, res_scale: float):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(features, features, 3, padding=1), nn.ReLU(True),
                                  nn.Conv2d(features, features, 3, padding=1))
        self.res_scale = res_scale

    def forward(self, x):
        return x + self.body(x) * self.res_scale


class EDSRBaseline(nn.Module):
    """EDSR-baseline (Lim et al., CVPRW 2017), narrow: mean shift, residual blocks, two ×2 pixel shuffles."""

    def __init__(self, features: int = 16, blocks: int = 2, res_scale: float = 1.0):
        super().__init__()
        self.sub_mean, self.add_mean = MeanShift(-1), MeanShift(+1)
        self.head = nn.Conv2d(3, features, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(features, res_scale) for _ in range(blocks)],
                                  nn.Conv2d(features, features, 3, padding=1))
        self.tail = nn.Sequential(nn.Conv2d(features, 4 * features, 3, padding=1), nn.PixelShuffle(2),
                                  nn.Conv2d(features, 4 * features, 3, padding=1), nn.PixelShuffle(2),
                                  nn.Conv2d(features, 3, 3, padding=1))

    def forward(self, x):
        x = self.head(self.sub_mean(x))
        return self.add_mean(self.tail(x + self.body(x)))


class ChannelAttention(nn.Module):
    """RCAN's channel attention: global average pooling, a bottleneck, a sigmoid gate per channel."""

    def __init__(self, features: int, reduction: int = 4):
        super().__init__()
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(features, features // reduction, 1), nn.ReLU(True),
                                  nn.Conv2d(features // reduction, features, 1), nn.Sigmoid())

    def forward(self, x):
        return x * self.gate(x)


class AttentionSR(nn.Module):
    """An RCAN-style ×2 network: every output pixel depends on the whole image through the pooled attention."""

    def __init__(self, features: int = 16):
        super().__init__()
        self.head = nn.Conv2d(3, features, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(features, features, 3, padding=1), nn.ReLU(True),
                                   nn.Conv2d(features, features, 3, padding=1), ChannelAttention(features))
        self.tail = nn.Sequential(nn.Conv2d(features, 12, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, x):
        x = self.head(x)
        return self.tail(x + self.block(x))


def espcn(scale: int = 3) -> ESPCN:
    """A factory, as a package would offer one."""
    return ESPCN(scale)
