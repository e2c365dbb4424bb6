"""SRVGGNetCompact ("Compact"), the small network of Real-ESRGAN's realesr-general models (Wang et al., 2021),
written out for ``srdeploy export --model docs/examples/compact.py:SRVGGNetCompact``.

The module names follow BasicSR's ``basicsr/archs/srvgg_arch.py`` so its checkpoints (``params`` or ``params_ema``)
load as they are: convolutions and PReLUs in one ``body`` list, a pixel shuffle, and the nearest-upsampled input
added as a skip.
"""
from torch import nn
from torch.nn import functional as F


class SRVGGNetCompact(nn.Module):
    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_conv: int = 16,
                 upscale: int = 4):
        super().__init__()
        self.upscale = upscale
        self.body = nn.ModuleList([nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), nn.PReLU(num_parameters=num_feat)])
        for _ in range(num_conv):
            self.body.extend([nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.PReLU(num_parameters=num_feat)])
        self.body.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.upsampler = nn.PixelShuffle(upscale)

    def forward(self, x):
        out = x
        for layer in self.body:
            out = layer(out)
        return self.upsampler(out) + F.interpolate(x, scale_factor=self.upscale, mode="nearest")
