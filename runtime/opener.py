"""``open_artifact``: the backend for an exported artifact, chosen from the file (``.onnx`` → ONNX Runtime, or
OpenVINO when asked; ``.xml`` → OpenVINO; ``.engine`` → TensorRT; ``.mlpackage`` → Core ML). Each backend is
imported only when a file needs it (TensorRT, OpenVINO and Core ML are optional)."""
from __future__ import annotations

from pathlib import Path

from .artifact import ArtifactSession
from .errors import SrDeployError

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
BACKENDS = ("auto", "onnxruntime", "openvino")  # what ``open_artifact`` may be asked to run an .onnx file on


def open_artifact(path: str | Path, run: bool = True, backend: str = "auto", **options) -> ArtifactSession:
    """The session for an exported artifact: TensorRT for engines, Core ML for packages, OpenVINO for IR (and
    for .onnx with ``backend="openvino"``), else ONNX Runtime. ``run=False``: only its metadata is wanted (a
    Core ML package is then read off macOS too; nothing is compiled)."""
    suffix = Path(path).suffix.lower()
    if backend not in BACKENDS:
        raise SrDeployError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend != "auto" and suffix != ".onnx":
        raise SrDeployError(f"--backend {backend} runs .onnx artifacts; {Path(path).name} chooses its own runtime")
    if suffix == ".xml" or backend == "openvino":
        from .openvino_backend import OpenVinoSession

        return OpenVinoSession(path, run=run, **options)
    if suffix == ".mlpackage":
        from .coreml_backend import CoreMLSession

        return CoreMLSession(path, run=run, **options)
    if Path(path).suffix.lower() in ENGINE_SUFFIXES:
        from .trt_backend import TrtSession

        return TrtSession(path, **options)
    from .onnx_backend import OnnxSession

    return OnnxSession(path, **options)
