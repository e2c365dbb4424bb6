"""The ``coreml`` target: a checked ``.mlpackage`` (``coreml_package``); ``coreml_options`` and the report line are
the iOS bundle's too."""
from __future__ import annotations

from pathlib import Path

from .coreml_export import CoreMLOptions, CoreMLShapes, parse_sizes
from ..options import ExportOptions, ExportResult, Progress, result_for
from ...models.loading import SrModel
from ...runtime.precision import Precision


def coreml_options(options: ExportOptions, net: SrModel | None = None) -> CoreMLOptions:
    """The Core ML options of an export: ``shapes`` (enumerated sizes), or the range of ``--min/--opt/--max-shape``
    for ``net`` (without it, the default range: what ``check`` validates before the model is loaded)."""
    from ..trt.trt_plan import profile_from_args

    if options.shapes:
        sizes = CoreMLShapes(enumerated=parse_sizes(options.shapes))
    elif net is not None:
        info = net.info
        profile = profile_from_args(info.export.input_name, info.channels, info.scale, options.min_shape,
                                    options.opt_shape, options.max_shape)
        sizes = CoreMLShapes(min=profile.min[2:], default=profile.opt[2:], max=profile.max[2:])
    else:
        sizes = CoreMLShapes()
    return CoreMLOptions(precision=Precision.parse(options.precision), shapes=sizes, image_io=options.image_io,
                         fp16_io=options.fp16_io, compression=options.compress,
                         deployment_target=options.deployment_target)


def check(options: ExportOptions, out: Path) -> None:
    """The Core ML options valid together, or one line (nothing written)."""
    coreml_options(options)


def report_line(options: CoreMLOptions, report) -> str:
    """What the package's check measured, for people."""
    checks = report.verification
    worst = min(c["fp16_psnr"] for c in checks["cases"].values())
    return (f"coreml {options.precision} ({options.compression} weights, {options.shapes.kind} sizes): "
            f"{checks['constants']['checked']} checkpoint tensors matched{_folded(checks['constants'])}, FP16-emulated "
            f"≥ {worst:.1f} dB vs PyTorch, held-out PSNR {report.validation_psnr_coreml:.3f} vs "
            f"{report.validation_psnr_pytorch:.3f} dB (drop {report.drop_db:+.4f} dB), {report.size_mb:.2f} MB")


def _folded(constants: dict) -> str:
    """`` and 4 with constants folded in (×0.1 …)``: checkpoint tensors the converter folded constants into."""
    folded = constants.get("folded") or {}
    if not folded:
        return ""
    return f" and {len(folded)} with constants folded in ({', '.join(dict.fromkeys(folded.values()))})"


def export(net: SrModel, options: ExportOptions, out: Path, progress: Progress) -> ExportResult:
    """``out/MODEL_xSCALE_PRECISION[_COMPRESSION].mlpackage`` after every check passed."""
    from .coreml_package import export_package

    return checked_package(net, options, out, progress, "coreml", export_package)


def checked_package(net: SrModel, options: ExportOptions, out: Path, progress: Progress, target: str,
                    write) -> ExportResult:
    """The result of ``write(net, coreml options, out, calib, max drop) -> (path, CoreMLReport)``, its check's
    line on ``progress``: the package, or a bundle around it."""
    converted = coreml_options(options, net)
    path, report = write(net, converted, out, options.calib, options.max_psnr_drop)
    progress(report_line(converted, report))
    result = result_for(net, target, options, report)
    result.artifacts.append(path)
    return result
