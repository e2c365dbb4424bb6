"""ONNX Runtime backend: ``OnnxSession(path).infer(x)`` — numpy and onnxruntime only, never torch.

Execution providers are picked from what the installed onnxruntime offers: TensorRT, then CUDA, then CPU.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from runtime.errors import SrDeployError

REQUIRED_METADATA = ("model", "scale", "colour", "shape_bounds", "export_config")
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class OnnxSession:
    """An ONNX artifact ready to run, with its srdeploy metadata."""

    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise SrDeployError(f"artifact {self.path} does not exist: export one with `python cli.py export`")
        available = ort.get_available_providers()
        self.providers = providers or [p for p in PREFERRED_PROVIDERS if p in available]
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: graph-cleanup notices are not the user's concern
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=self.providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors on bad files
            reason = str(exc).strip().splitlines()[0][:160]
            raise SrDeployError(f"artifact {self.path} cannot be loaded by ONNX Runtime ({reason}): re-export it") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.metadata = {k.removeprefix("srdeploy."): v for k, v in meta.items() if k.startswith("srdeploy.")}
        missing = [k for k in REQUIRED_METADATA if k not in self.metadata]
        if missing or "receptive_radius" not in self.metadata.get("export_config", ""):
            raise SrDeployError(
                f"artifact {self.path} lacks srdeploy metadata ({', '.join(missing) or 'receptive_radius'}): "
                "it was not exported by this srdeploy version; re-export it with `python cli.py export`"
            )
        self.input = self.session.get_inputs()[0]
        self.input_dtype = np.float16 if self.input.type == "tensor(float16)" else np.float32
        self.output_name = self.session.get_outputs()[0].name

    @property
    def channels(self) -> int:
        return int(self.input.shape[1])

    @property
    def scale(self) -> int:
        return int(self.metadata["scale"])

    @property
    def shape_bounds(self) -> dict[str, list[int]]:
        return json.loads(self.metadata["shape_bounds"])

    @property
    def colour(self) -> str:
        return self.metadata["colour"]

    @property
    def receptive_radius(self) -> int:
        return int(json.loads(self.metadata["export_config"])["receptive_radius"])

    def infer(self, x: np.ndarray) -> np.ndarray:
        """N×C×H×W in [0, 1] → float32 N×C×(s·H)×(s·W) (cast to and from FP16 I/O where the artifact has it)."""
        x = np.ascontiguousarray(x, dtype=self.input_dtype)
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise SrDeployError(
                f"input of shape {x.shape} does not fit {self.path.name}: it expects N×{self.channels}×H×W"
            )
        low, high = self.shape_bounds["min"], self.shape_bounds["max"]
        for axis, label in ((0, "batch"), (2, "height"), (3, "width")):
            if x.shape[axis] < low[axis]:
                raise SrDeployError(
                    f"input {label} {x.shape[axis]} is below the artifact's minimum {low[axis]} "
                    f"(bounds {low[axis]}…{high[axis]}): the image is too small for this artifact"
                )
            if x.shape[axis] > high[axis]:
                raise SrDeployError(
                    f"input {label} {x.shape[axis]} is above the artifact's maximum {high[axis]} "
                    f"(bounds {low[axis]}…{high[axis]}): tile the image (upscale --tile) or split the batch"
                )
        return self.session.run([self.output_name], {self.input.name: x})[0].astype(np.float32, copy=False)
