"""The PyTorch reference backend: a torch ``nn.Module`` behind the runtime's ``infer()`` interface."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


class TorchRunner:
    """Runs an eval-mode module on float32 N×C×H×W numpy arrays (CPU, or ``device``)."""

    def __init__(self, model: nn.Module, device: str = "cpu"):
        self.model = model.eval().to(device)
        self.device = device

    def infer(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)).cpu().numpy()
