"""``open_artifact``: the session for an exported artifact, chosen from the file by the target table
(``runtime.targets``: ``.onnx`` → ONNX Runtime, ``.xml`` → OpenVINO, ``.engine`` → TensorRT, ``.mlpackage`` →
Core ML), or by ``backend`` where another runtime runs that file too (an ``.onnx`` on OpenVINO). Each session is
imported only when a file needs it (TensorRT, OpenVINO and Core ML are optional)."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

from .artifact import ArtifactSession
from .errors import SrDeployError
from .targets import Target, for_artifact, runnable, runtimes_for

DEFAULT_SUFFIX = ".onnx"  # a file no target claims is tried as ONNX: ONNX Runtime names what is wrong with it


@dataclass(frozen=True)
class SessionOptions:
    """How an artifact runs: on which runtime (``backend``, where another than its own runs that kind of file), and
    the runtime's own settings (a one-line refusal where the artifact's runtime has no such setting)."""

    backend: str = "auto"  # ``backend_names()``
    inference_precision: str | None = None  # OpenVINO's compute precision: f32, bf16, f16
    vulkan: bool = False  # ncnn: on the Vulkan device

    def settings(self, threads: int | None = None, throughput: bool = False) -> dict:
        """The session's keyword arguments: the settings given, ``threads`` where given, and ``throughput`` where
        asked (several requests in flight: folders and video)."""
        given = {"inference_precision": self.inference_precision, "vulkan": self.vulkan or None, "threads": threads,
                 "throughput": throughput or None}
        return {k: v for k, v in given.items() if v is not None}


def backend_names() -> tuple[str, ...]:
    """What ``--backend`` may name: ``auto`` (the file's own runtime), or a runtime that runs .onnx files."""
    return ("auto", *runtimes_for(DEFAULT_SUFFIX))


def open_artifact(path: str | Path, run: bool = True, backend: str = "auto", **options) -> ArtifactSession:
    """The session for an exported artifact, from its target (``backend``: a runtime that runs this kind of file
    too). ``run=False``: only its metadata is wanted, where the session can stop there (a Core ML package is
    then read off macOS too; nothing is compiled). ``options``: the session's own (a one-line refusal of an
    option its runtime does not have)."""
    if backend not in backend_names():
        raise SrDeployError(f"backend {backend!r}: choose one of {', '.join(backend_names())}")
    target = _chosen(Path(path), backend)
    cls = target.session_class()
    accepted = inspect.signature(cls).parameters
    for option in options:
        if option not in accepted:
            raise _foreign_option(option, target)
    if not run and "run" in accepted:
        options["run"] = False
    return cls(path, **options)


def _chosen(path: Path, backend: str) -> Target:
    own = for_artifact(path) or for_artifact(DEFAULT_SUFFIX)
    if backend == "auto" or backend == own.runtime:
        return own
    suffix = path.suffix.lower()
    other = next((t for t in runnable() if t.runtime == backend and suffix in t.opens_too), None)
    if other is None:
        runs = sorted({s for t in runnable() if t.runtime == backend for s in (*t.suffixes, *t.opens_too)})
        raise SrDeployError(f"--backend {backend} runs {', '.join(runs)} artifacts; {path.name} chooses its own "
                            "runtime")
    return other


def _foreign_option(option: str, target: Target) -> SrDeployError:
    """``--OPTION is an OpenVINO setting: add --backend openvino or open an .xml``."""
    owners = [t for t in runnable() if option in inspect.signature(t.session_class()).parameters]
    flag = f"--{option.replace('_', '-')}"
    if not owners:
        return SrDeployError(f"{flag} is no setting of {target.artifact}")
    owner = owners[0]
    name = owner.session_class().runtime_name
    # "an OpenVINO", "an ncnn" (a lower-case name is read letter by letter: en-cee-en-en)
    article = "an" if name[0] in "AEIOUaeiou" or name.islower() and name[0] in "fhlmnrsx" else "a"
    where = f"add --backend {owner.runtime} or open an {owner.suffixes[0]}" if owner.opens_too else \
        f"open an {owner.suffixes[0]}"
    return SrDeployError(f"{flag} is {article} {name} setting: {where}")
