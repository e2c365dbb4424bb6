"""The PyTorch reference backend: a torch ``nn.Module`` behind the runtime's ``infer()`` interface."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from torch import nn

from ..runtime.global_gate import GateSplit


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


@contextmanager
def tiles_of_one_thread() -> Iterator[int]:
    """As many tiles at once as PyTorch has threads, each tile computed by one thread for the duration (PyTorch's
    CPU kernels sum in another order at another thread count: one thread per tile gives the same bytes here, on
    Ray's one-CPU workers and on a machine with any number of cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield threads
    finally:
        torch.set_num_threads(threads)
