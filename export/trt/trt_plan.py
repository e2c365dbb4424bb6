"""The TensorRT build plan: one value from which both the Python builder and ``trtexec`` are configured.

No TensorRT import here: the plan, its builder settings and its ``trtexec`` command line are pure data,
so the Jetson bundle's ``build.sh`` and the Python builder provably ask TensorRT for the same engine.

Precision lives in the ONNX (FP32, FP16 with float-kept layers, INT8 Q/DQ). On TensorRT with strong
typing (10.x, 11.x) the network is built strongly typed: every tensor keeps the type the ONNX gives it; an
INT8 graph whose FP16 float parts passed the accuracy gate is built from its FP16-float-parts form
(``fp16_float``). On older TensorRT (8.6 to 9.0, no strong typing) the plan falls back to the weakly typed
flags that reproduce the same precision: FP16 for an FP16 ONNX, INT8 for a Q/DQ ONNX (explicit
quantization), INT8 + FP16 where its FP16 float parts passed, none for FP32; with FP16 allowed, the layers
the ONNX keeps in FP32 (``fp32_layers``) are pinned there by precision constraints (``obey``), since a weakly
typed builder may otherwise pick FP16 for them.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace

from ...runtime.errors import SrDeployError
from ...runtime.precision import Precision

# Output frames the default profiles are named after (width, height).
FRAMES = {"720p": (1280, 720), "1080p": (1920, 1080)}
DEFAULT_MIN_LR = 16  # smallest LR side of the default profile: tiles and thumbnails still run
DEFAULT_WORKSPACE_MIB = 1024
DEFAULT_OPTIMIZATION_LEVEL = 3  # TensorRT's default; 4-5 search longer for little gain on plain convs
TIMING_CACHE = "timing.cache"


@dataclass(frozen=True)
class Profile:
    """One optimization profile of the single image input: min/opt/max N×C×H×W."""

    input_name: str
    min: tuple[int, int, int, int]
    opt: tuple[int, int, int, int]
    max: tuple[int, int, int, int]

    def __post_init__(self) -> None:
        if not all(lo <= mid <= hi for lo, mid, hi in zip(self.min, self.opt, self.max)):
            raise SrDeployError(
                f"profile shapes must satisfy min ≤ opt ≤ max on every axis, got min {_dims(self.min)}, "
                f"opt {_dims(self.opt)}, max {_dims(self.max)}: fix --min-shape/--opt-shape/--max-shape"
            )
        if len({self.min[1], self.opt[1], self.max[1]}) != 1:
            raise SrDeployError("profile shapes disagree on the channel count: give H×W only, or the model's C")

    def as_dict(self) -> dict:
        return {"input_name": self.input_name, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, data: dict) -> Profile:
        return cls(data["input_name"], *(tuple(data[k]) for k in ("min", "opt", "max")))


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def frame_lr_shape(frame: str, scale: int, channels: int) -> tuple[int, int, int, int]:
    """The batch-1 LR input whose ×``scale`` output covers the named frame (rounded up)."""
    width, height = FRAMES[frame]
    return (1, channels, math.ceil(height / scale), math.ceil(width / scale))


def parse_shape(text: str, channels: int) -> tuple[int, int, int, int]:
    """``HxW`` (batch 1) or ``NxCxHxW`` → N×C×H×W; a one-line error otherwise."""
    if not re.fullmatch(r"\d+(x\d+){1,3}", text or ""):
        raise SrDeployError(f"shape {text!r} is not HxW or NxCxHxW (e.g. 360x640 or 1x3x360x640)")
    dims = tuple(int(d) for d in text.split("x"))
    if len(dims) == 2:
        dims = (1, channels, *dims)
    if len(dims) != 4 or min(dims) < 1:
        raise SrDeployError(f"shape {text!r} is not HxW or NxCxHxW with positive sizes")
    if dims[1] != channels:
        raise SrDeployError(f"shape {text!r} has {dims[1]} channels but the model takes {channels}")
    return dims  # type: ignore[return-value]


def default_profile(input_name: str, channels: int, scale: int) -> Profile:
    """Batch 1, from 16×16 LR up to a 1080p output frame, tuned (opt) for a 720p output frame."""
    return Profile(
        input_name,
        (1, channels, DEFAULT_MIN_LR, DEFAULT_MIN_LR),
        frame_lr_shape("720p", scale, channels),
        frame_lr_shape("1080p", scale, channels),
    )


def profile_from_args(
    input_name: str, channels: int, scale: int, min_shape: str | None, opt_shape: str | None, max_shape: str | None
) -> Profile:
    """The default profile with any of ``--min-shape/--opt-shape/--max-shape`` replacing its bound."""
    base = default_profile(input_name, channels, scale)
    pick = lambda text, fallback: fallback if text is None else parse_shape(text, channels)  # noqa: E731
    return Profile(input_name, pick(min_shape, base.min), pick(opt_shape, base.opt), pick(max_shape, base.max))


@dataclass(frozen=True)
class BuildPlan:
    """Everything that decides which engine TensorRT builds from an srdeploy ONNX."""

    precision: Precision  # what the ONNX holds
    profile: Profile
    strongly_typed: bool = True
    workspace_mib: int = DEFAULT_WORKSPACE_MIB
    optimization_level: int = DEFAULT_OPTIMIZATION_LEVEL
    timing_cache: str = TIMING_CACHE
    fp16_float: bool = False  # int8: its float parts run in FP16 (they passed the accuracy gate)
    fp32_layers: tuple[str, ...] = ()  # ONNX nodes kept in FP32 where FP16 runs (overflow pre-flight)

    @classmethod
    def for_artifact(cls, metadata: dict[str, str], profile: Profile, strongly_typed: bool = True, **options) -> BuildPlan:
        """The plan for an srdeploy ONNX, from its metadata (``srdeploy.*`` keys without the prefix)."""
        precision = Precision.parse(metadata.get("precision", "fp32"))
        fp16_float = json.loads(metadata.get("fp16_float") or "{}")
        passed = precision == "int8" and bool(fp16_float.get("passed"))
        kept = fp16_float.get("keep_fp32", []) if passed else json.loads(metadata.get("kept_float") or "[]")
        return cls(precision, profile, strongly_typed, fp16_float=passed,
                   fp32_layers=tuple(sorted(kept)) if precision == "fp16" or passed else (), **options)

    def for_gate_part(self, name: str, part) -> BuildPlan:
        """The plan of part ``name`` of a globally gated network (``runtime.global_gate.gate_parts``, an ONNX
        graph): the image's profile, or N×C×1×1 for the gate's margin; FP32 pins on the part's own nodes."""
        given = part.graph.input[0]
        if name == "gate_margin":  # the mean of the gate's features, N×C×1×1
            channels = given.type.tensor_type.shape.dim[1].dim_value
            profile = Profile(given.name, *((n, channels, 1, 1) for n in
                                            (self.profile.min[0], self.profile.opt[0], self.profile.max[0])))
        else:
            profile = replace(self.profile, input_name=given.name)
        nodes = {node.name for node in part.graph.node}
        return replace(self, profile=profile, fp32_layers=tuple(n for n in self.fp32_layers if n in nodes))

    @property
    def builder_flags(self) -> tuple[str, ...]:
        """``tensorrt.BuilderFlag`` names to set. TF32 is cleared for FP32 (its 10-bit mantissa would break
        FP32 parity); weakly typed builds also enable the precision the ONNX was made for."""
        flags = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8", "FP16") if self.fp16_float else ("INT8",)}[self.precision]
        return () if self.strongly_typed else flags

    @property
    def layer_precisions(self) -> dict[str, str]:
        """Weakly typed builds with FP16 allowed: the layers pinned to FP32 (with ``OBEY_PRECISION_CONSTRAINTS``)."""
        if self.strongly_typed or "FP16" not in self.builder_flags:
            return {}
        return dict.fromkeys(self.fp32_layers, "fp32")

    @property
    def clear_tf32(self) -> bool:
        return self.precision == "fp32"

    def settings(self) -> dict:
        """What the Python builder applies, in the vocabulary a ``trtexec`` command line parses back into."""
        return {
            "strongly_typed": self.strongly_typed,
            "builder_flags": sorted(self.builder_flags),
            "clear_tf32": self.clear_tf32,
            "workspace_bytes": self.workspace_mib << 20,
            "optimization_level": self.optimization_level,
            "profile": self.profile.as_dict(),
            "timing_cache": self.timing_cache,
            "layer_precisions": self.layer_precisions,
        }

    def trtexec_args(self, onnx_path: str, engine_path: str) -> list[str]:
        """The ``trtexec`` arguments that build the same engine as ``export.trt.trt_build.build_engine``."""
        name = self.profile.input_name
        args = [
            f"--onnx={onnx_path}",
            f"--saveEngine={engine_path}",
            f"--minShapes={name}:{_dims(self.profile.min)}",
            f"--optShapes={name}:{_dims(self.profile.opt)}",
            f"--maxShapes={name}:{_dims(self.profile.max)}",
            f"--memPoolSize=workspace:{self.workspace_mib}",  # MiB: trtexec's unit since 8.x
            f"--builderOptimizationLevel={self.optimization_level}",
            f"--timingCacheFile={self.timing_cache}",
        ]
        args += ["--stronglyTyped"] if self.strongly_typed else [f"--{f.lower()}" for f in self.builder_flags]
        if self.layer_precisions:
            args += ["--precisionConstraints=obey",
                     "--layerPrecisions=" + ",".join(f"{name}:{p}" for name, p in self.layer_precisions.items())]
        if self.clear_tf32:
            args.append("--noTF32")
        return args + ["--skipInference"]

    @property
    def fp16_float_onnx(self) -> bool:
        """Whether the network is parsed from the INT8 graph's FP16-float-parts form (strongly typed builds)."""
        return self.strongly_typed and self.fp16_float

    def as_dict(self) -> dict:
        return {"precision": self.precision, "fp16_float_onnx": self.fp16_float_onnx, **self.settings()}


def settings_from_trtexec(args: list[str]) -> dict:
    """Parse a ``trtexec`` build command line back into ``BuildPlan.settings()`` form (tests and checks)."""
    options: dict[str, str] = {}
    switches: set[str] = set()
    for arg in args:
        if not arg.startswith("--"):
            raise ValueError(f"unexpected trtexec argument {arg!r}")
        key, sep, value = arg[2:].partition("=")
        if sep:
            options[key] = value
        else:
            switches.add(key)
    names, shapes = set(), {}
    for key in ("minShapes", "optShapes", "maxShapes"):
        name, _, dims = options[key].rpartition(":")
        names.add(name)
        shapes[key[:3]] = [int(d) for d in dims.split("x")]
    if len(names) != 1:
        raise ValueError(f"profile shapes name different inputs: {sorted(names)}")
    pool, _, size = options["memPoolSize"].partition(":")
    if pool != "workspace" or not size.isdigit():
        raise ValueError(f"unexpected --memPoolSize={options['memPoolSize']}")
    return {
        "strongly_typed": "stronglyTyped" in switches,
        "builder_flags": sorted(s.upper() for s in switches & {"fp16", "int8"}),
        "clear_tf32": "noTF32" in switches,
        "workspace_bytes": int(size) << 20,
        "optimization_level": int(options["builderOptimizationLevel"]),
        "profile": {"input_name": names.pop(), **shapes},
        "timing_cache": options["timingCacheFile"],
        "layer_precisions": _layer_precisions(options),
    }


def _layer_precisions(options: dict[str, str]) -> dict[str, str]:
    if "layerPrecisions" not in options:
        return {}
    if options.get("precisionConstraints") != "obey":
        raise ValueError("--layerPrecisions without --precisionConstraints=obey is only a preference")
    return dict(item.rsplit(":", 1) for item in options["layerPrecisions"].split(","))
