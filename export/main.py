"""``main_export``: the one library entry of ``srdeploy export`` (Optimum's ``main_export``): a model, a target of
the table (``runtime.targets``), the options as one value, and the target's exporter, which has one shape::

    export(net: SrModel, options: ExportOptions, out: Path, progress: Progress) -> ExportResult

Every argument is checked before any work (the model's options and scale, the shapes, the target's own
``check(options, out)`` where it has one: TensorRT and a GPU, OpenVINO, a bundle's folder); nothing is written
when a gate fails.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..models.spec import ModelSpec
from ..runtime.precision import Precision
from ..runtime.targets import DEFAULT_TARGET, check_own_options, check_precision, target as find_target



@dataclass(frozen=True)
class Progress:
    """Progress and stage summaries for people, on stderr while ``shown``: ``progress("…")``."""

    shown: bool = True

    def __call__(self, message: str) -> None:
        if self.shown:
            print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ExportOptions:
    """How to export, whatever the target (each reads what concerns it; ``export --help`` says which)."""

    precision: str | None = None  # fp32 | fp16 | int8; None: the target's default
    calib: str | None = None  # calibration/validation photos (default: scikit-image's bundled photos)
    max_psnr_drop: float | None = None  # dB on held-out photos (default per precision or compression)
    calib_method: str = "minmax"  # int8 activation ranges: minmax | percentile | mse
    fp16_io: bool = False  # fp16: FP16 input and output tensors
    min_shape: str | None = None  # trt/jetson/coreml: the LR shape range, HxW or NxCxHxW
    opt_shape: str | None = None
    max_shape: str | None = None
    shapes: str | None = None  # coreml/ios: enumerated LR sizes instead of the range
    image_io: bool = False  # coreml: image input and output
    compress: str = "none"  # coreml/ios weight compression
    deployment_target: str = "iOS16"  # coreml/ios minimum OS
    precisions: str = "fp32,fp16,int8"  # jetson: the bundle's precisions
    portable: bool = False  # onnx: the graph without control flow
    metadata: dict[str, str] | None = None  # extra srdeploy metadata the artifact records (``precision_choice``)
    graphs: dict | None = field(default=None, compare=False, repr=False)  # gated ONNX graphs by precision, shared
    # by the exports of one model (bench: one INT8 search for ONNX Runtime, OpenVINO and TensorRT)


@dataclass
class ExportResult:
    """What an export wrote and what its gates measured (``details``: what the target measured beyond the
    report, printed by ``--json`` under its own keys)."""

    artifacts: list[Path]
    model: str
    scale: int
    target: str
    precision: Precision
    report: Any = None  # export.precision.PrecisionReport, export.coreml.coreml_package.CoreMLReport, or None
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        out: dict = {"artifacts": [str(p) for p in self.artifacts], "model": self.model, "scale": self.scale,
                     "target": self.target}
        if self.report is not None:
            out["precision"] = self.precision
            out["report"] = self.report.as_dict() if hasattr(self.report, "as_dict") else vars(self.report)
        return {**out, **self.details}


def main_export(spec: ModelSpec, target: str = DEFAULT_TARGET, options: ExportOptions = ExportOptions(),
                out: str | Path | None = None, progress: Progress = Progress(False)) -> ExportResult:
    """Export ``spec`` for ``target`` into ``out`` (default ``out/MODEL_xSCALE_TARGET``, named on stderr)."""
    from ..export.trt.trt_plan import profile_from_args
    from ..models.registry import architecture

    chosen = find_target(target)
    spec.check()
    check_own_options(options, chosen)
    own = None
    if spec.own:  # measured (nothing written) before the other arguments are checked against it
        own = spec.load(progress)
        scale, channels, input_name, name = own.info.scale, own.info.channels, own.info.export.input_name, own.info.name
        progress(measured(own.info))
    else:
        arch = architecture(spec.model)
        scale, channels, input_name, name = spec.scale or 2, arch.channels, arch.export.input_name, spec.model
    precision = options.precision or chosen.default_precision
    options = replace(options, precision=precision if precision == "auto" else str(Precision.parse(precision)))
    check_precision(options.precision, chosen)
    profile_from_args(input_name, channels, scale, options.min_shape, options.opt_shape, options.max_shape)
    folder = Path(out or f"out/{name}_x{scale}_{target}")
    chosen.check(options, folder)  # nothing to build with, a foreign bundle folder: nothing written
    if out is None:
        print(f"output folder: {folder} (the default; choose another with --out DIR)", file=sys.stderr)
    progress(f"exporting {name} ×{scale} for {target} ({options.precision})" + ("" if own else ": loading the checkpoint"))
    net = own or spec.load(progress)
    if options.precision == "auto":
        from .auto_precision import export_auto

        return export_auto(chosen, net, options, folder, progress)
    return chosen.export(net, options, folder, progress)


def measured(info) -> str:
    """What was measured on your own network, for people."""
    config = info.export
    tiling = ("whole image only: an output pixel depends on all of it" if config.whole_image
              else f"receptive radius {config.receptive_radius} LR pixels (tiles equal the whole image)")
    return (f"{info.name}: ×{info.scale}, {'RGB' if info.channels == 3 else 'luma (Y)'} in and out, {tiling}, "
            f"inputs from {config.min_size}×{config.min_size}")


def result_for(net, target: str, options: ExportOptions, report: Any = None, **details) -> ExportResult:
    """An empty result of ``net`` for ``target``, for an exporter to fill."""
    return ExportResult([], net.info.name, net.info.scale, target, Precision.parse(options.precision), report, details)
