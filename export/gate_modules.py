"""The first two of a whole-image gate's parts (``runtime.global_gate``) as PyTorch modules of their own, for the
exporters that convert each part (Core ML packages, ExecuTorch methods)."""
from __future__ import annotations

import torch
from torch import nn


class GateFeatures(nn.Module):
    """The image → the features the gate averages (N×C×H×W)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.gate_features(x)


class GateMargin(nn.Module):
    """The features' mean, N×C×1×1 → branch 1's logit margin (> 0: branch 1)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, mean: torch.Tensor) -> torch.Tensor:
        return self.network.gate_margin(mean.flatten(1))
