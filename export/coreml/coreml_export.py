"""PyTorch → Core ML ``mlprogram``: FP16 (or FP32) compute, flexible LR sizes, optional image I/O and weight
compression, srdeploy metadata.

Capture: ``torch.jit.trace``. coremltools documents tracing as its stable and more performant PyTorch path
and its torch.export path as beta; the zoo's networks have no value-dependent Python control flow except
DSRNet's gate, which the Core ML export runs as a per-image select (both branches, then ``select``): one
static dataflow graph with exactly the argmax decisions, at the cost of the unchosen branch's MACs.

Sizes: ``EnumeratedShapes`` (≤ 128 H×W, each compiled ahead and able to run on the Neural Engine) or a
``RangeDim`` range (any size in bounds; on the Neural Engine only at the default size, other sizes run on
the GPU or CPU). Batch is 1: an app upscales one image (or one tile) at a time.
"""
from __future__ import annotations

import copy
import logging
import platform
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ..onnx.onnx_export import SRDEPLOY_VERSION
from ..failures import coreml_failure, traced_branch
from ...models.loading import SrModel
from ...models.registry import ExportConfig
from ...runtime.errors import SrDeployError
from ...runtime.precision import Precision

logging.getLogger("coremltools").setLevel(logging.ERROR)  # its import logs missing macOS-only libraries

PRECISIONS = (Precision.FP16, Precision.FP32)
DEPLOYMENT_TARGETS = ("iOS16", "iOS17", "iOS18", "macOS13", "macOS14", "macOS15")
MAX_ENUMERATED = 128  # Core ML's limit on enumerated shapes
# coremltools.optimize.coreml: weights of at least COMPRESS_MIN_WEIGHTS elements are compressed (its default).
COMPRESS_MIN_WEIGHTS = 2048
COMPRESSIONS = ("none", "linear8", "palette6", "palette4")
PALETTE_GROUP = 16  # output channels sharing one look-up table (iOS18+)


@dataclass(frozen=True)
class CoreMLShapes:
    """The LR sizes (H, W) a package accepts: ``enumerated`` sizes, or the range ``min``…``max``."""

    min: tuple[int, int] = (16, 16)
    default: tuple[int, int] = (256, 256)
    max: tuple[int, int] = (540, 960)
    enumerated: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        floor = ExportConfig.min_size  # the smallest LR side any zoo artifact accepts
        sizes = self.enumerated or (self.min, self.default, self.max)
        if any(min(hw) < floor for hw in sizes):
            raise SrDeployError(f"Core ML sizes must be at least {floor}×{floor} LR pixels: got {sizes}")
        if len(self.enumerated) > MAX_ENUMERATED:
            raise SrDeployError(f"--shapes lists {len(self.enumerated)} sizes; Core ML allows at most {MAX_ENUMERATED}")
        if not self.enumerated and not all(lo <= d <= hi for lo, d, hi in zip(self.min, self.default, self.max)):
            raise SrDeployError(f"the default size {self.default} must lie within {self.min}…{self.max}")

    @property
    def kind(self) -> str:
        return "enumerated" if self.enumerated else "range"

    def bounds(self, channels: int) -> dict[str, list[int]]:
        """min/max N×C×H×W (for enumerated sizes: the smallest and largest of each axis)."""
        sizes = self.enumerated or (self.min, self.max)
        return {"min": [1, channels, min(h for h, _ in sizes), min(w for _, w in sizes)],
                "max": [1, channels, max(h for h, _ in sizes), max(w for _, w in sizes)]}

    def accepts(self, height: int, width: int) -> bool:
        if self.enumerated:
            return (height, width) in self.enumerated
        return self.min[0] <= height <= self.max[0] and self.min[1] <= width <= self.max[1]

    def ct_shape(self, channels: int):
        import coremltools as ct

        if len(self.enumerated) == 1:  # coremltools' EnumeratedShapes wants two or more: a range of one size
            (h, w), = self.enumerated  # (a fixed ct.Shape would bake the size into the program's reshapes)
            return ct.Shape(shape=(1, channels, ct.RangeDim(h, h, default=h), ct.RangeDim(w, w, default=w)))
        if self.enumerated:
            return ct.EnumeratedShapes(shapes=[(1, channels, h, w) for h, w in self.enumerated],
                                       default=(1, channels, *self.enumerated[0]))
        return ct.Shape(shape=(1, channels, ct.RangeDim(self.min[0], self.max[0], default=self.default[0]),
                               ct.RangeDim(self.min[1], self.max[1], default=self.default[1])))

    def as_dict(self) -> dict:
        return asdict(self)


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """``"256x256,512x384"`` (H×W, LR pixels) → ((256, 256), (512, 384)), in the given order, no duplicates."""
    sizes = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            height, width = (int(v) for v in part.lower().split("x"))
        except ValueError:
            raise SrDeployError(f"--shapes entry {part!r} is not HxW (e.g. 256x256)") from None
        if (height, width) not in sizes:
            sizes.append((height, width))
    if not sizes:
        raise SrDeployError("--shapes is empty: give at least one HxW")
    return tuple(sizes)


@dataclass(frozen=True)
class CoreMLOptions:
    precision: Precision = Precision.FP16  # compute precision of the mlprogram (FP16 or FP32)
    shapes: CoreMLShapes = CoreMLShapes()
    image_io: bool = False  # CVPixelBuffer in (×1/255 baked in), image out (clamped, ×255)
    fp16_io: bool = False  # FP16 multi-array input/output instead of FP32 (tensor interface)
    compression: str = "none"
    deployment_target: str = "iOS16"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise SrDeployError(f"Core ML precision {self.precision!r}: choose fp16 or fp32 "
                                "(8-bit weights: --compress linear8; Core ML has no INT8 activations here)")
        object.__setattr__(self, "precision", Precision(self.precision))
        if self.compression not in COMPRESSIONS:
            raise SrDeployError(f"--compress {self.compression!r}: choose one of {', '.join(COMPRESSIONS)}")
        if self.deployment_target not in DEPLOYMENT_TARGETS:
            raise SrDeployError(f"--deployment-target {self.deployment_target!r}: choose one of {', '.join(DEPLOYMENT_TARGETS)}")
        if self.image_io and self.fp16_io:
            raise SrDeployError("--image-io and --fp16-io exclude each other: images are 8-bit pixel buffers")


class ImageIO(nn.Module):
    """The network with an image-valued output: clamped to [0, 1] and scaled to [0, 255]."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).clamp(0, 1) * 255


def traceable(model: SrModel, image_io: bool) -> nn.Module:
    """An eval-mode copy for ``torch.jit.trace``: data-dependent gates as a per-image select."""
    net = copy.deepcopy(model.network).eval()
    if hasattr(net, "gate_execution"):
        net.gate_execution = "select"
    return (ImageIO(net) if image_io else net).eval()


def trace(net: nn.Module, example: torch.Tensor, name: str):
    """``torch.jit.trace`` of ``net``; a one-line error where tracing froze a value-dependent branch."""
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        traced = torch.jit.trace(net, example)
    for warning in caught:  # tracing froze the branch this example took
        if issubclass(warning.category, torch.jit.TracerWarning) and "Python boolean" in str(warning.message):
            raise SrDeployError(traced_branch(name, str(warning.message), warning.filename, warning.lineno))
    return traced


def to_mlprogram(traced, inputs: list, outputs: list, options: CoreMLOptions, name: str):
    """The compressed ``mlprogram`` of a traced module, in ``options``' precision and deployment target."""
    import coremltools as ct

    try:
        mlmodel = ct.convert(
            traced, inputs=inputs, outputs=outputs, convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT16 if options.precision == "fp16" else ct.precision.FLOAT32,
            minimum_deployment_target=getattr(ct.target, options.deployment_target),
            skip_model_load=platform.system() != "Darwin",
        )
    except Exception as exc:  # noqa: BLE001 - coremltools raises many types for what it cannot convert
        raise SrDeployError(coreml_failure(name, exc)) from None
    return compress(mlmodel, options.compression, options.deployment_target)


def convert(model: SrModel, options: CoreMLOptions):
    """The ``coremltools.models.MLModel`` (mlprogram) of a loaded model (``models.load``), not yet saved."""
    import coremltools as ct

    info = model.info
    config = info.export
    example = torch.rand(1, info.channels, *options.shapes.bounds(info.channels)["min"][2:],
                         generator=torch.Generator().manual_seed(0))
    traced = trace(traceable(model, options.image_io), example, info.name)
    shape = options.shapes.ct_shape(info.channels)
    if options.image_io:
        layout = ct.colorlayout.RGB if info.channels == 3 else ct.colorlayout.GRAYSCALE
        inputs = [ct.ImageType(name=config.input_name, shape=shape, scale=1 / 255.0, color_layout=layout)]
        outputs = [ct.ImageType(name=config.output_name, color_layout=layout)]
    else:
        dtype = np.float16 if options.fp16_io else np.float32
        inputs = [ct.TensorType(name=config.input_name, shape=shape, dtype=dtype)]
        outputs = [ct.TensorType(name=config.output_name, dtype=dtype)]
    return to_mlprogram(traced, inputs, outputs, options, info.name)


def grouped_luts(deployment_target: str) -> bool:
    """Per-grouped-channel look-up tables need iOS18 / macOS15 (``constexpr_lut_to_dense`` of iOS18)."""
    return deployment_target in ("iOS18", "macOS15")


def compress(mlmodel, compression: str, deployment_target: str):
    """Weight compression with ``coremltools.optimize.coreml``: 8-bit symmetric per-channel linear
    quantization, or 6/4-bit k-means palettization: one look-up table per ``PALETTE_GROUP`` output channels
    on iOS18+, one per tensor before (measured on LESRCNN ×2, 6-bit: 0.09 dB grouped, 0.60 dB per tensor)."""
    if compression == "none":
        return mlmodel
    import coremltools.optimize.coreml as cto

    if compression == "linear8":
        op_config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                                weight_threshold=COMPRESS_MIN_WEIGHTS)
        return cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=op_config))
    nbits = int(compression.removeprefix("palette"))
    granularity = {"granularity": "per_grouped_channel", "group_size": PALETTE_GROUP} if grouped_luts(
        deployment_target) else {"granularity": "per_tensor"}
    op_config = cto.OpPalettizerConfig(nbits=nbits, mode="kmeans", weight_threshold=COMPRESS_MIN_WEIGHTS, **granularity)
    return cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=op_config))


def metadata(model: SrModel, options: CoreMLOptions, measured: dict[str, str]) -> dict[str, str]:
    """srdeploy's keys (the ONNX artifacts' keys, plus the Core ML options and measured quality)."""
    import json

    from ..onnx.onnx_export import metadata as onnx_metadata

    entries = {k.removeprefix("srdeploy."): v for k, v in onnx_metadata(model, model.info.export, simplified=False).items()}
    entries.pop("simplified")
    entries.update({
        "precision": options.precision,
        "shape_bounds": json.dumps(options.shapes.bounds(model.info.channels)),
        "coreml_options": json.dumps({**asdict(options), "shapes": options.shapes.as_dict()}, sort_keys=True),
        "version": SRDEPLOY_VERSION,
        **measured,
    })
    return {f"srdeploy.{k}": v for k, v in entries.items()}


def describe(mlmodel, model: SrModel, options: CoreMLOptions, measured: dict[str, str]) -> None:
    """Description, author, license, version and srdeploy metadata on the model (shown by Xcode)."""
    from ...models.registry import default_checkpoint

    info = model.info
    config = info.export
    official = default_checkpoint(info.name, info.scale)
    source = (f"official checkpoint {official.repository}@{official.commit[:7]}/{official.path}"
              if official and official.sha256 == info.checkpoint_sha256 else f"checkpoint sha256 {info.checkpoint_sha256}")
    io = "8-bit image" if options.image_io else f"{'FP16' if options.fp16_io else 'FP32'} array in [0, 1]"
    mlmodel.short_description = (f"{info.title} ×{info.scale} super-resolution ({info.paper}); {source}; "
                                 f"{options.precision.upper()} compute, weights {options.compression}")
    mlmodel.author = f"{info.paper} (model); converted by srdeploy {SRDEPLOY_VERSION}"
    mlmodel.license = f"weights: see the license of {official.repository if official else 'their source'}; srdeploy: MIT"
    mlmodel.version = SRDEPLOY_VERSION
    mlmodel.input_description[config.input_name] = (
        f"low-resolution {'RGB' if info.channels == 3 else 'luminance (BT.601 Y)'} {io}, N=1, "
        f"{'sizes ' + ', '.join(f'{h}x{w}' for h, w in options.shapes.enumerated) if options.shapes.enumerated else f'H×W from {options.shapes.min} to {options.shapes.max}'}")
    mlmodel.output_description[config.output_name] = f"the ×{info.scale} upscaled image, same layout as the input"
    mlmodel.user_defined_metadata.update(metadata(model, options, measured))
