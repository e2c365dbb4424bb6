"""One forward pass with forward hooks attached: what counting MACs and inspecting a conversion both need."""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

Hook = Callable[[nn.Module, tuple, torch.Tensor], None]


def run_with_hooks(model: nn.Module, x: torch.Tensor, hooks: Iterable[tuple[nn.Module, Hook]]) -> torch.Tensor:
    """``model(x)`` in inference mode with each (module, hook) attached; the hooks are removed afterwards,
    also when the pass fails."""
    handles = [module.register_forward_hook(hook) for module, hook in hooks]
    try:
        with torch.inference_mode():
            return model(x)
    finally:
        for handle in handles:
            handle.remove()
