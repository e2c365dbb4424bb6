"""The backends ``bench`` knows: what each needs, why it is unavailable here, and how to make its ``infer``.

Every backend's ``infer`` is end to end as a user calls it (numpy in, numpy out); GPU backends return
only after their stream has finished, so wall-clock timing is correct for all of them.
"""
from __future__ import annotations

import importlib.util
import platform
from dataclasses import dataclass
from typing import Callable

import numpy as np

Infer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Backend:
    name: str
    description: str
    precision: str  # the artifact precision it runs (torch backends: their compute precision)
    kind: str  # torch | onnx | openvino | trt | coreml
    inference_precision: str = "f32"  # openvino: the compute precision it is compiled for

    @property
    def needs_artifact(self) -> bool:
        return self.kind in ("onnx", "openvino", "trt", "coreml")

    @property
    def on_gpu(self) -> bool:
        """Runs on an NVIDIA GPU (the CPU's FP32 peak says nothing about it)."""
        return "cuda" in self.name or self.kind == "trt" or self.name == "onnx-trt"


BACKENDS = {b.name: b for b in (
    Backend("torch", "PyTorch eager, CPU, FP32", "fp32", "torch"),
    Backend("torch-cuda", "PyTorch eager, CUDA, FP32 tensors (convolutions in TF32: PyTorch's default)", "fp32",
            "torch"),
    Backend("torch-cuda-fp16", "PyTorch eager, CUDA, FP16, channels-last", "fp16", "torch"),
    Backend("onnx", "ONNX Runtime CPU, FP32 artifact", "fp32", "onnx"),
    Backend("onnx-fp16", "ONNX Runtime CPU, FP16 artifact", "fp16", "onnx"),
    Backend("onnx-int8", "ONNX Runtime CPU, INT8 Q/DQ artifact", "int8", "onnx"),
    Backend("openvino", "OpenVINO CPU, FP32 artifact, f32 inference precision", "fp32", "openvino"),
    Backend("openvino-bf16", "OpenVINO CPU, FP32 artifact, bf16 inference precision", "fp32", "openvino", "bf16"),
    Backend("openvino-int8", "OpenVINO CPU, INT8 Q/DQ artifact (u8/i8 convolutions), f32 inference precision", "int8",
            "openvino"),
    Backend("onnx-cuda", "ONNX Runtime CUDA execution provider, FP32 artifact", "fp32", "onnx"),
    Backend("onnx-trt", "ONNX Runtime TensorRT execution provider, FP32 artifact", "fp32", "onnx"),
    Backend("trt", "TensorRT engine, FP32", "fp32", "trt"),
    Backend("trt-fp16", "TensorRT engine, FP16", "fp16", "trt"),
    Backend("trt-int8", "TensorRT engine, INT8 Q/DQ", "int8", "trt"),
    Backend("coreml", "Core ML (macOS), FP16 package, all compute units", "fp16", "coreml"),
)}
ORT_PROVIDERS = {"onnx-cuda": "CUDAExecutionProvider", "onnx-trt": "TensorrtExecutionProvider"}


def unavailable(backend: Backend) -> str | None:
    """Why ``backend`` cannot run on this machine, or None when it can."""
    if backend.kind == "torch":
        if importlib.util.find_spec("torch") is None:
            return "PyTorch is not installed"
        if "cuda" in backend.name:
            import torch

            if not torch.cuda.is_available():
                return f"no CUDA device for PyTorch (torch {torch.__version__}, cuda {torch.version.cuda})"
        return None
    if backend.kind == "onnx":
        if importlib.util.find_spec("onnxruntime") is None:
            return "onnxruntime is not installed"
        import onnxruntime

        provider = ORT_PROVIDERS.get(backend.name)
        if provider and provider not in onnxruntime.get_available_providers():
            return (f"onnxruntime {onnxruntime.__version__} here has no {provider} "
                    f"(it has {', '.join(onnxruntime.get_available_providers())})")
        return None
    if backend.kind == "openvino":
        if importlib.util.find_spec("openvino") is None:
            return "OpenVINO is not installed: pip install openvino"
        from ..runtime.openvino_backend import cpu_supports

        if not cpu_supports(backend.inference_precision):
            return f"this CPU has no native {backend.inference_precision} (OpenVINO would compute in f32)"
        return None
    if backend.kind == "trt":
        from ..runtime.cuda import Cuda
        from ..runtime.errors import SrDeployError
        from ..runtime.trt_backend import require_tensorrt

        try:
            require_tensorrt()
            Cuda()
        except SrDeployError as exc:
            return str(exc).split(":")[0]
        return None
    if platform.system() != "Darwin":
        return "Core ML runs models only on macOS (export --target coreml checks packages on Linux; it cannot time them)"
    if importlib.util.find_spec("coremltools") is None:
        return "coremltools is not installed: pip install -e '.[coreml]'"
    return None


def make_infer(backend: Backend, source: dict, threads: int | None) -> tuple[Infer, Callable[[], float | None], dict]:
    """(infer, peak device memory in MB or None, what the backend reports of itself) for ``backend`` on ``source``
    (model/scale/weights or artifact); OpenVINO reports the share of conv MACs it executes in u8/i8."""
    if backend.kind == "torch":
        import torch

        from ..models import load_model
        if threads:
            torch.set_num_threads(threads)
        model = load_model(source["model"], source["scale"], source.get("weights"),
                           model_args=source.get("model_args")).network
        if "cuda" not in backend.name:
            from ..runtime.torch_runner import TorchRunner

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
    if backend.kind == "onnx":
        from ..runtime.onnx_backend import OnnxSession

        provider = ORT_PROVIDERS.get(backend.name, "CPUExecutionProvider")
        session = OnnxSession(source["artifact"], providers=[provider], threads=threads)
        return session.infer, lambda: None, {}
    if backend.kind == "openvino":
        from ..runtime.openvino_backend import OpenVinoSession

        session = OpenVinoSession(source["artifact"], backend.inference_precision, threads=threads)
        executed = session.executed_precisions()
        return session.infer, lambda: None, {"int8_executed": executed.int8_mac_fraction,
                                             "inference_precision": executed.inference_precision}
    if backend.kind == "coreml":
        from ..runtime.coreml_backend import CoreMLSession

        return CoreMLSession(source["artifact"]).infer, lambda: None, {}
    from ..runtime.trt_backend import TrtSession

    session = TrtSession(source["artifact"])

    def device_mb() -> float:
        free, total = session.cuda.memory_info()
        return (total - free) / 2**20

    return session.infer, device_mb, {}
