"""The PyTorch reference backend: a torch ``nn.Module`` behind the runtime's ``infer()`` interface."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .global_gate import GateSplit


class TorchRunner:
    """Runs an eval-mode module on float32 N×C×H×W numpy arrays (CPU, or ``device``)."""

    def __init__(self, model: nn.Module, device: str = "cpu"):
        self.model = model.eval().to(device)
        self.device = device

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)).to(self.device)

    def infer(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model(self._tensor(x.astype(np.float32, copy=False))).cpu().numpy()

    @property
    def has_global_gate(self) -> bool:
        return bool(getattr(self.model, "has_global_gate", False))

    def gate_split(self) -> GateSplit:
        """The model's gate features, decision and forced forward (a model with ``has_global_gate``)."""
        model = self.model

        def run(function, *arrays: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return function(*[self._tensor(a) for a in arrays]).cpu().numpy()

        return GateSplit(lambda x: run(model.gate_features, x.astype(np.float32, copy=False)),
                         lambda mean: run(model.decide, mean.astype(np.float32)),
                         lambda x, decision: run(model, x.astype(np.float32, copy=False), decision.astype(bool)))
