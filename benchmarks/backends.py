"""The backends ``bench`` knows: PyTorch's, and each target's from the target table (``runtime.targets``); what
each needs, why it is unavailable here, and how to make its ``infer``.

Every backend's ``infer`` is end to end as a user calls it (numpy in, numpy out); GPU backends return
only after their stream has finished, so wall-clock timing is correct for all of them.
"""
from __future__ import annotations

import importlib.util
import inspect
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..runtime.targets import runnable, targets

Infer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class BenchBackend:
    name: str
    description: str
    precision: str  # the artifact precision it runs (PyTorch: its compute precision)
    target: str | None = None  # the target whose artifact it runs; None: the PyTorch model
    options: dict = field(default_factory=dict)  # the target session's options
    on_gpu: bool = False  # the CPU's FP32 peak says nothing about it

    @property
    def needs_artifact(self) -> bool:
        return self.target is not None


PYTORCH = (
    BenchBackend("torch", "PyTorch eager, CPU, FP32", "fp32"),
    BenchBackend("torch-cuda", "PyTorch eager, CUDA, FP32 tensors (convolutions in TF32: PyTorch's default)", "fp32",
                 on_gpu=True),
    BenchBackend("torch-cuda-fp16", "PyTorch eager, CUDA, FP16, channels-last", "fp16", on_gpu=True),
)


def backends() -> dict[str, BenchBackend]:
    """name → backend: PyTorch's, then each runnable target's, in the table's order."""
    found = {b.name: b for b in PYTORCH}
    for target in runnable():
        found.update((b.name, BenchBackend(b.name, b.description, b.precision, target.name, b.options, b.on_gpu))
                     for b in target.backends)
    return found


def unavailable(backend: BenchBackend) -> str | None:
    """Why ``backend`` cannot run on this machine, or None when it can."""
    if backend.target is not None:
        return targets()[backend.target].unavailable(**backend.options)
    if importlib.util.find_spec("torch") is None:
        return "PyTorch is not installed"
    if "cuda" in backend.name:
        import torch

        if not torch.cuda.is_available():
            return f"no CUDA device for PyTorch (torch {torch.__version__}, cuda {torch.version.cuda})"
    return None


def make_infer(backend: BenchBackend, source: dict, threads: int | None) -> tuple[Infer, Callable[[], float | None], dict]:
    """(infer, peak device memory in MB or None, what the backend reports of itself) for ``backend`` on ``source``
    (model/scale/weights or artifact); OpenVINO reports the share of conv MACs it executes in u8/i8."""
    if backend.target is None:
        return _pytorch(backend, source, threads)
    cls = targets()[backend.target].session_class()
    options = {**backend.options, **({"threads": threads} if threads and "threads" in inspect.signature(cls).parameters
                                     else {})}
    session = cls(source["artifact"], **options)
    details = {}
    if hasattr(session, "executed_precisions"):
        executed = session.executed_precisions()
        details = {"int8_executed": executed.int8_mac_fraction, "inference_precision": executed.inference_precision}
    device_mb = getattr(session, "device_memory_mb", lambda: None)
    return session.infer, device_mb, details


def _pytorch(backend: BenchBackend, source: dict, threads: int | None):
    import torch

    from ..models import load_model

    if threads:
        torch.set_num_threads(threads)
    model = load_model(source["model"], source["scale"], source.get("weights"), source.get("options"),
                       source.get("model_args")).network
    if "cuda" not in backend.name:
        from ..models.torch_runner import TorchRunner

        return TorchRunner(model).infer, lambda: None, {}
    dtype = torch.float16 if backend.precision == "fp16" else torch.float32
    model = model.to("cuda", dtype)
    if backend.precision == "fp16":
        model = model.to(memory_format=torch.channels_last)

    def infer_cuda(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            tensor = torch.from_numpy(x).to("cuda", dtype)
            if backend.precision == "fp16":
                tensor = tensor.contiguous(memory_format=torch.channels_last)
            return model(tensor).float().cpu().numpy()  # .cpu() synchronises

    return infer_cuda, lambda: torch.cuda.max_memory_allocated() / 2**20, {}
