"""The export targets as values: one row per format, the one table the CLI, the API, the opener and ``bench``
read (Ultralytics' exporter table; Polygraphy's lazy loaders).

A ``Target`` names its exporter, its session and its requirements by module path ("export.onnx.target:export",
relative to the ``srdeploy`` package) and loads them only when used: the table sits in the torch-free runtime,
which the opener reads, while exporters live in ``export/`` and need torch; a test checks that every reference
resolves into the right layer. Adding a target is its folder(s) plus one ``Target`` here (or ``register``: a
plug-in, or the toy target of the tests). What a session must offer: ``runtime.artifact.ArtifactSession``; what
an exporter takes and returns: ``export.options``.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import SrDeployError

PACKAGE = "srdeploy"


def load(reference: str | Callable) -> Any:
    """``"module.path:name"`` (relative to the srdeploy package) imported and looked up; a callable as it is."""
    if not isinstance(reference, str):
        return reference
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(f"{PACKAGE}.{module}"), name)


@dataclass(frozen=True)
class Backend:
    """One way ``bench`` runs a target's artifacts: the artifact's precision and the session's options."""

    name: str
    description: str
    precision: str  # the precision of the artifact it runs
    options: dict = field(default_factory=dict)  # keyword arguments of the target's session
    on_gpu: bool = False  # the CPU's FP32 peak says nothing about it


@dataclass(frozen=True)
class Target:
    """An export format: what ``export --target NAME`` writes, and what runs it."""

    name: str  # the --target value
    title: str  # for lists in --help: "an iOS bundle"
    writes: str  # what --target NAME writes, for its help
    exporter: str | Callable  # export(net, options, out, say) -> export.main.ExportResult
    precheck: str | Callable | None = None  # check(options, out): one line before any work (what it needs, its folder)
    session: str | Callable | None = None  # the class that opens its artifacts (None: a bundle, a folder for a device)
    suffixes: tuple[str, ...] = ()  # artifact file (or folder) suffixes its session opens
    artifact: str = ""  # its artifacts in words, for help texts: ".onnx (ONNX Runtime)"
    runtime: str = ""  # the runtime's name for --backend, where it runs other targets' files
    opens_too: tuple[str, ...] = ()  # other suffixes its session runs when asked by --backend RUNTIME
    requirement: str | Callable | None = None  # unavailable(**session options) -> why it cannot run here, or None
    companions: tuple[str, ...] = ()  # files beside the artifact, same stem, that belong to it (IR: .bin)
    ray: bool = False  # its artifacts can be shipped to Ray workers (their files, through the object store)
    default_precision: str = "fp32"
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")  # what --precision may be (empty: its exporter says)
    auto: tuple[str, ...] = ()  # --precision auto: the candidates timed on this machine (CPU targets)
    bundles: str | None = None  # a bundle: the target whose artifacts it carries to the device
    backends: tuple[Backend, ...] = ()  # what bench offers for it
    extra: str | None = None  # the pip extra that installs what it needs
    package: str | None = None  # the Python package of its runtime (whose version reports record)
    own_options: tuple[str, ...] = ()  # export options only this target (and its bundle) reads: refused elsewhere
    largest_input_only: bool = False  # reads --max-shape alone, as its largest input (no min/opt profile)

    def export(self, *args, **kwargs):
        return load(self.exporter)(*args, **kwargs)

    def check(self, *args, **kwargs) -> None:
        if self.precheck is not None:
            load(self.precheck)(*args, **kwargs)

    def session_class(self) -> type:
        if self.session is None:
            raise SrDeployError(f"the {self.name} target writes a bundle for a device, which runs it there")
        return load(self.session)

    def unavailable(self, **options) -> str | None:
        """Why this target's artifacts cannot run on this machine (with ``options``), or None."""
        return None if self.requirement is None else load(self.requirement)(**options)

    def files(self, artifact: Path) -> list[Path]:
        """The files an artifact consists of: itself and its companions."""
        return [artifact, *(artifact.with_suffix(s) for s in self.companions)]


_GPU = {"on_gpu": True}
BUILT_IN = (
    Target("onnx", "ONNX", "an .onnx file",
           exporter="export.onnx.target:export",
           session="runtime.sessions.onnxruntime:OnnxSession", suffixes=(".onnx",), artifact=".onnx (ONNX Runtime)",
           runtime="onnxruntime", requirement="runtime.sessions.onnxruntime:unavailable", ray=True, extra="onnxruntime",
           package="onnxruntime", own_options=("portable",), auto=("fp32", "int8"),
           backends=(Backend("onnx", "ONNX Runtime CPU, FP32 artifact", "fp32"),
                     Backend("onnx-fp16", "ONNX Runtime CPU, FP16 artifact", "fp16"),
                     Backend("onnx-int8", "ONNX Runtime CPU, INT8 Q/DQ artifact", "int8"),
                     Backend("onnx-cuda", "ONNX Runtime CUDA execution provider, FP32 artifact", "fp32",
                             {"providers": ["CUDAExecutionProvider"]}, **_GPU),
                     Backend("onnx-trt", "ONNX Runtime TensorRT execution provider, FP32 artifact", "fp32",
                             {"providers": ["TensorrtExecutionProvider"]}, **_GPU))),
    Target("trt", "a TensorRT engine", "a TensorRT engine built here (needs TensorRT and a GPU)",
           exporter="export.trt.target:export", precheck="export.trt.target:check",
           session="runtime.sessions.tensorrt:TrtSession", suffixes=(".engine", ".plan", ".trt"),
           artifact=".engine (TensorRT)", runtime="tensorrt", requirement="runtime.sessions.tensorrt:unavailable", extra="trt",
           package="tensorrt",
           backends=(Backend("trt", "TensorRT engine, FP32", "fp32", **_GPU),
                     Backend("trt-fp16", "TensorRT engine, FP16", "fp16", **_GPU),
                     Backend("trt-int8", "TensorRT engine, INT8 Q/DQ", "int8", **_GPU))),
    Target("jetson", "a Jetson bundle", "a folder with the ONNX files, build.sh and golden outputs for the device",
           exporter="export.bundles.jetson:export", precheck="export.bundles.jetson:check", bundles="trt"),
    Target("coreml", "Core ML", "a checked .mlpackage",
           exporter="export.coreml.target:export", precheck="export.coreml.target:check",
           session="runtime.sessions.coreml:CoreMLSession", suffixes=(".mlpackage",),
           artifact=".mlpackage (Core ML, macOS)", runtime="coreml", requirement="runtime.sessions.coreml:unavailable",
           default_precision="fp16", precisions=(), extra="coreml", package="coremltools",
           backends=(Backend("coreml", "Core ML (macOS), FP16 package, all compute units", "fp16"),)),
    Target("ios", "an iOS bundle", "the .mlpackage with Swift code and a README",
           exporter="export.bundles.ios_bundle:export", precheck="export.bundles.ios_bundle:check",
           default_precision="fp16", precisions=(), bundles="coreml"),
    Target("openvino", "OpenVINO IR", "OpenVINO IR (.xml + .bin) for CPUs, gated on OpenVINO itself",
           exporter="export.openvino.target:export", precheck="export.openvino.target:check",
           session="runtime.sessions.openvino:OpenVinoSession", suffixes=(".xml",), artifact=".xml (OpenVINO)",
           runtime="openvino", opens_too=(".onnx",), requirement="runtime.sessions.openvino:unavailable",
           precisions=("fp32", "fp16", "int8", "bf16"), auto=("fp32", "bf16", "int8"),
           companions=(".bin",), ray=True, extra="openvino", package="openvino",
           backends=(Backend("openvino", "OpenVINO CPU, FP32 artifact, f32 inference precision", "fp32"),
                     Backend("openvino-bf16", "OpenVINO CPU, FP32 artifact, bf16 inference precision", "fp32",
                             {"inference_precision": "bf16"}),
                     Backend("openvino-int8", "OpenVINO CPU, INT8 Q/DQ artifact (u8/i8 convolutions), f32 inference "
                             "precision", "int8"))),
    Target("ncnn", "ncnn (Android, Vulkan GPUs)", "a folder NAME.ncnn with ncnn's .param/.bin and a manifest, for "
           "Android and Vulkan GPUs, gated on ncnn itself",
           exporter="export.ncnn.target:export", precheck="export.ncnn.target:check",
           session="runtime.sessions.ncnn:NcnnSession", suffixes=(".ncnn", ".param"), artifact=".ncnn (ncnn)",
           runtime="ncnn", requirement="runtime.sessions.ncnn:unavailable", extra="ncnn", package="ncnn",
           precisions=("fp32", "fp16", "int8"), auto=("fp32", "fp16"),
           backends=(Backend("ncnn", "ncnn CPU, FP32 artifact", "fp32"),
                     Backend("ncnn-fp16", "ncnn CPU, FP16 artifact (FP16 storage and arithmetic where the CPU has "
                             "them)", "fp16"),
                     Backend("ncnn-int8", "ncnn CPU, INT8 artifact (int8 convolutions)", "int8"),
                     Backend("ncnn-vulkan", "ncnn Vulkan (the machine's Vulkan device: a GPU, or Mesa's lavapipe "
                             "in software), FP32 artifact", "fp32", {"vulkan": True}),
                     Backend("ncnn-vulkan-fp16", "ncnn Vulkan, FP16 artifact", "fp16", {"vulkan": True}))),
    Target("executorch", "ExecuTorch (phone CPUs)", "a folder NAME.executorch with ExecuTorch's model.pte (XNNPACK) "
           "and a manifest, for Android and iOS CPUs, gated on ExecuTorch's runtime",
           exporter="export.executorch.target:export", precheck="export.executorch.target:check",
           session="runtime.sessions.executorch:ExecuTorchSession", suffixes=(".executorch", ".pte"),
           artifact=".executorch (ExecuTorch)", runtime="executorch",
           requirement="runtime.sessions.executorch:unavailable", extra="executorch", package="executorch",
           precisions=("fp32", "fp16", "int8"), largest_input_only=True,
           backends=(Backend("executorch", "ExecuTorch XNNPACK CPU, FP32 artifact", "fp32"),
                     Backend("executorch-fp16", "ExecuTorch XNNPACK CPU, FP16 artifact", "fp16"),
                     Backend("executorch-int8", "ExecuTorch XNNPACK CPU, INT8 artifact", "int8"))),
    Target("android", "an Android bundle", "a folder with the ncnn model, a Kotlin/JNI sample app and the C++ "
           "upscaler it shares with a desktop build",
           exporter="export.bundles.android:export", precheck="export.bundles.android:check", bundles="ncnn",
           precisions=("fp32", "fp16", "int8")),
    Target("web", "a web page (browsers)", "a static folder: a page that upscales in the visitor's browser "
           "with onnxruntime-web (WebAssembly; WebGPU on request), its model checked by sha256",
           exporter="export.web.target:export", precheck="export.web.target:check", bundles="onnx"),
)
DEFAULT_TARGET = "onnx"  # what export writes when no target is named
PLUGINS = "SRDEPLOY_TARGETS"  # comma-separated module.path:NAME of Target values: plug-ins, in every process
_registered: dict[str, Target] = {t.name: t for t in BUILT_IN}


def targets() -> dict[str, Target]:
    """Every target: the built-in ones, those ``register``ed, and the plug-ins ``$SRDEPLOY_TARGETS`` names
    (``my_package.targets:NCNN``; read by child processes too, such as bench's)."""
    found = dict(_registered)
    for reference in filter(None, os.environ.get(PLUGINS, "").replace(" ", "").split(",")):
        module, _, name = reference.partition(":")
        try:
            plugin = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise SrDeployError(f"${PLUGINS} names {reference}, which cannot be loaded ({exc}): fix or unset it") from None
        found.setdefault(plugin.name, plugin)
    return found


def register(target: Target) -> Target:
    """Add a target in this process; its name must be new."""
    if target.name in targets():
        raise ValueError(f"a target named {target.name!r} exists already")
    _registered[target.name] = target
    return target


def target(name: str) -> Target:
    """The target called ``name``, or a one-line error naming the others."""
    found = targets()
    if name not in found:
        raise SrDeployError(f"unknown target {name!r}: choose one of {', '.join(found)}")
    return found[name]


def for_artifact(path: str | Path) -> Target | None:
    """The target whose session opens ``path`` (by its suffix), or None."""
    suffix = Path(path).suffix.lower()
    return next((t for t in targets().values() if suffix in t.suffixes), None)


def runnable() -> list[Target]:
    """The targets with a session: their artifacts run on this machine's runtimes."""
    return [t for t in targets().values() if t.session is not None]


def artifact_kinds(last: str = "or") -> str:
    """The artifacts srdeploy opens, in words: ``.onnx (ONNX Runtime), …, .xml (OpenVINO) or .mlpackage (…)``."""
    words = [t.artifact for t in runnable()]
    return ", ".join(words[:-1]) + f" {last} {words[-1]}" if len(words) > 1 else "".join(words)


def check_precision(precision: str, chosen: Target) -> None:
    """``--precision`` one that ``chosen`` writes (``auto`` where it has candidates), or one line naming those it
    does."""
    if precision == "auto":
        if not chosen.auto:
            raise SrDeployError(f"--precision auto times candidates on this machine's CPU; --target {chosen.name} runs "
                                "elsewhere: choose its precision (a bundle chooses on its device)")
        return
    if chosen.precisions and precision not in chosen.precisions:
        names = list(chosen.precisions)
        raise SrDeployError(f"--precision {precision} is not one --target {chosen.name} writes: choose --precision "
                            f"{', '.join(names[:-1])} or {names[-1]}")


def check_own_options(options: object, chosen: Target) -> None:
    """A target's own option (``own_options``) given for another target: one line naming where it belongs."""
    for owner in targets().values():
        for name in owner.own_options:
            if getattr(options, name, None) and chosen.name != owner.name and chosen.bundles != owner.name:
                flag = f"--{name.replace('_', '-')}"
                raise SrDeployError(f"{flag} is an option of --target {owner.name}: use it there, not with --target "
                                    f"{chosen.name}")


def runtimes_for(suffix: str) -> tuple[str, ...]:
    """The runtimes ``--backend`` may name for a file with ``suffix``: its own target's first, then the others that
    open it too."""
    own = [t.runtime for t in runnable() if suffix in t.suffixes]
    return (*own, *(t.runtime for t in runnable() if suffix in t.opens_too))
