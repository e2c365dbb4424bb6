"""``main_export``: the one library entry of ``srdeploy export`` (Optimum's ``main_export``): a model, a target of
the table (``runtime.targets``), the options as one value, and the target's exporter, which has one shape::

    export(net: SrModel, options: ExportOptions, out: Path, progress: Progress) -> ExportResult

Every argument is checked before any work (the model's options and scale, the shapes, the target's own
``check(options, out)`` where it has one: TensorRT and a GPU, OpenVINO, a bundle's folder); nothing is written
when a gate fails.
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from .options import ExportOptions, ExportResult, Progress
from ..models.spec import ModelSpec
from ..runtime.errors import SrDeployError
from ..runtime.precision import Precision
from ..runtime.targets import DEFAULT_TARGET, check_own_options, check_precision, target as find_target


def main_export(spec: ModelSpec, target: str = DEFAULT_TARGET, options: ExportOptions = ExportOptions(),
                out: str | Path | None = None, progress: Progress = Progress(False)) -> ExportResult:
    """Export ``spec`` for ``target`` into ``out`` (default ``out/MODEL_xSCALE_TARGET``, named on stderr)."""
    from ..export.trt.trt_plan import parse_shape, profile_from_args
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
    if chosen.largest_input_only:  # no optimization profile: --max-shape is the largest input
        if options.min_shape or options.opt_shape:
            raise SrDeployError(f"--target {chosen.name} takes --max-shape alone (its largest input); --min-shape and "
                                "--opt-shape shape TensorRT's and Core ML's profiles")
        if options.max_shape:
            parse_shape(options.max_shape, channels)
    else:
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
