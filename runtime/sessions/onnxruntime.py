"""ONNX Runtime backend: ``OnnxSession(path).infer(x)`` — numpy and onnxruntime only, never torch.

Execution providers are picked from what the installed onnxruntime offers: TensorRT, then CUDA, then CPU.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import digest
from ..artifact import ArtifactSession, refuse_external_data, srdeploy_metadata
from ..cpu import threads_cap, usable_cores
from ..errors import SrDeployError, command
from ..global_gate import GateSplit, onnxruntime_split

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def unavailable(providers: list[str] | None = None, **_) -> str | None:
    """Why ONNX Runtime cannot run here (with ``providers``), or None."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed"
    import onnxruntime

    missing = [p for p in providers or () if p not in onnxruntime.get_available_providers()]
    if missing:
        return (f"onnxruntime {onnxruntime.__version__} here has no {', '.join(missing)} "
                f"(it has {', '.join(onnxruntime.get_available_providers())})")
    return None


class OnnxSession(ArtifactSession):
    """An ONNX artifact ready to run, with its srdeploy metadata."""

    runtime_name = "ONNX Runtime"

    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int | None = None,
                 throughput: bool = False):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise SrDeployError(f"artifact {self.path} does not exist: export one with {command('export')}")
        available = ort.get_available_providers()
        self.providers = providers or [p for p in PREFERRED_PROVIDERS if p in available]
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: graph-cleanup notices are not the user's concern
        # no memory plan kept per input shape: tiles come in many shapes (the edges), and each plan held its
        # buffers (LESRCNN ×2 on a 4 Mpx upscale: 656 → 450 MB peak, no slower; FSRCNN 244 → 181 MB)
        options.enable_mem_pattern = False
        if throughput:  # one thread per request, a request per core in flight (``in_flight``)
            self.in_flight = max(1, usable_cores() // (threads or 1))
            threads = threads or 1
        threads = threads or threads_cap()
        if threads:
            options.intra_op_num_threads = threads
        data = self.path.read_bytes()
        digest.check(data, self.path, f"re-export it with {command('export')}")
        refuse_external_data(data, self.path)
        self._options, self._data = options, data
        try:
            self.session = ort.InferenceSession(data, options, providers=self.providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors on bad files
            reason = str(exc).strip().splitlines()[0][:160]
            raise SrDeployError(f"artifact {self.path} cannot be loaded by ONNX Runtime ({reason}): re-export it") from None
        try:
            meta = self.session.get_modelmeta().custom_metadata_map
        except UnicodeDecodeError:  # bytes that are no UTF-8 in the metadata (found by fuzzing)
            raise SrDeployError(f"artifact {self.path} has metadata that is not UTF-8 text: it was not exported by "
                                f"srdeploy, or was changed since; re-export it with {command('export')}") from None
        self.metadata = srdeploy_metadata(meta.items())
        self.check_metadata()
        self.bounds = json.loads(self.metadata["shape_bounds"])
        self.input = self.session.get_inputs()[0]
        self.input_dtype = np.float16 if self.input.type == "tensor(float16)" else np.float32
        self.output_name = self.session.get_outputs()[0].name

    def infer(self, x: np.ndarray) -> np.ndarray:
        """N×C×H×W in [0, 1] → float32 N×C×(s·H)×(s·W) (cast to and from FP16 I/O where the artifact has it)."""
        x = np.ascontiguousarray(x, dtype=self.input_dtype)
        self.check_input(x)
        try:
            out = self.session.run([self.output_name], {self.input.name: x})[0]
        except Exception as exc:  # noqa: BLE001 - a graph that loads and then fails in a kernel (found by fuzzing)
            reason = str(exc).strip().splitlines()[0][:160]
            raise SrDeployError(f"ONNX Runtime cannot run artifact {self.path} ({reason}): its graph does not compute; "
                                f"re-export it with {command('export')}") from None
        return out.astype(np.float32, copy=False)

    def gate_split(self) -> GateSplit:
        """The gate's features, decision and forced graph cut from this artifact, on ONNX Runtime."""
        try:
            import onnx
        except ImportError:
            raise SrDeployError("tiling this network cuts its graph with the onnx package: pip install onnx "
                                "(or upscale with --tile 0)") from None

        return onnxruntime_split(onnx.load_model_from_string(self._data), self._options, self.providers)
