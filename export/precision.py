"""Precision variants of an export with an accuracy gate measured in dB on held-out photos.

FP32: the checked graph of ``to_onnx``. FP16: overflow pre-flight on calibration crops, conversion, then
the gate: PSNR (Y, the evaluation protocol) on held-out validation crops must not drop by more than
``max_drop`` dB against FP32, or nothing is written. Every artifact's metadata records its precision,
the nodes kept in FP32 and the measured drop.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import onnx
from torch import nn

from benchmarks.quality import crop_psnr
from calib.cache import cached_stats
from calib.data import CropSpec, fingerprint, lr_hr_crops, network_batch, source_images
from export import fp16
from export.onnx_export import proto_infer, set_metadata, to_onnx
from models.registry import architecture
from runtime.errors import SrDeployError

DEFAULT_MAX_DROP = {"fp32": 0.0, "fp16": 0.01}
VALIDATION_SPEC = CropSpec(size=64, count=24, seed=1)


@dataclass
class PrecisionReport:
    precision: str
    kept_float: list[str] = field(default_factory=list)
    validation_psnr_fp32: float | None = None  # None: not measured (FP32 is its own reference)
    validation_psnr: float | None = None
    drop_db: float = 0.0
    peak_activation: float | None = None

    def metadata(self) -> dict[str, str]:
        return {
            "srdeploy.precision": self.precision,
            "srdeploy.kept_float": json.dumps(self.kept_float),
            "srdeploy.validation_drop_db": f"{self.drop_db:.4f}",
            "srdeploy.precision_report": json.dumps(asdict(self)),
        }


def export_precision(
    model: nn.Module,
    precision: str,
    calib_dir: str | None = None,
    max_drop: float | None = None,
    fp16_io: bool = False,
    spec: CropSpec = CropSpec(),
    progress: bool = True,
) -> tuple[onnx.ModelProto, PrecisionReport]:
    """The ONNX graph of ``model`` at ``precision`` and what it cost, or a one-line error if over budget."""
    info = model.srdeploy
    proto = to_onnx(model)
    report = PrecisionReport(precision)
    if precision == "fp32":
        set_metadata(proto, report.metadata())
        return proto, report
    if precision != "fp16":
        raise SrDeployError(f"precision {precision!r} is not available: choose fp32 or fp16")
    calibration = source_images(calib_dir, "calibration")
    peaks = cached_stats(
        {"stat": "activation_peaks", "checkpoint": info.checkpoint_sha256, "model": info.name, "scale": info.scale,
         "options": info.options, "data": fingerprint(calibration, info.scale, spec)},
        lambda: fp16.activation_peaks(proto, network_batch(lr_hr_crops(calibration, info.scale, spec, progress),
                                                                   info.colour)),
    )
    report.peak_activation = max(peaks.values())
    report.kept_float = fp16.overflow_risks(proto, peaks)
    converted = fp16.to_fp16(proto, report.kept_float, fp16_io)
    pairs = lr_hr_crops(source_images(calib_dir, "validation"), info.scale, VALIDATION_SPEC)
    rounding = architecture(info.name).eval_rounding
    report.validation_psnr_fp32 = crop_psnr(proto_infer(proto), pairs, info.scale, info.colour, rounding)
    infer16, io_dtype = proto_infer(converted), "float16" if fp16_io else "float32"
    report.validation_psnr = crop_psnr(lambda x: infer16(x.astype(io_dtype)), pairs, info.scale, info.colour, rounding)
    report.drop_db = report.validation_psnr_fp32 - report.validation_psnr
    limit = DEFAULT_MAX_DROP[precision] if max_drop is None else max_drop
    if report.drop_db > limit:
        raise SrDeployError(
            f"{precision.upper()} {info.name} ×{info.scale} loses {report.drop_db:.3f} dB on the held-out photos "
            f"({report.validation_psnr:.2f} vs {report.validation_psnr_fp32:.2f} dB FP32), over the "
            f"{limit} dB limit: nothing written; raise --max-psnr-drop to accept it"
        )
    set_metadata(converted, report.metadata())
    return converted, report
