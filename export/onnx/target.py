"""The ``onnx`` target: the gated ONNX graph at a precision (``export.precision``), written as one sealed file
(``--portable``: without control flow). ``gated_onnx`` is also where the TensorRT, OpenVINO and Jetson exports
begin."""
from __future__ import annotations

from pathlib import Path

import onnx

from .onnx_export import portable, save, set_metadata
from ..options import ExportOptions, ExportResult, Progress, result_for
from ..precision import PrecisionReport, export_precision, float_summary
from ...models.loading import SrModel


def gated_onnx(net: SrModel, precision: str, options: ExportOptions, progress: Progress, for_tensorrt: bool = False,
               summary: bool = True) -> tuple[onnx.ModelProto, PrecisionReport]:
    """The ONNX graph at ``precision`` through its accuracy gate (``options.max_psnr_drop``), what it cost on ``progress`` (``summary``: the cost's line too); ``for_tensorrt``: may an INT8 graph's float
    parts run in FP16? Taken from ``options.graphs`` where an earlier export of the same model made it."""
    key = (precision, for_tensorrt, options.max_psnr_drop)
    if options.graphs is not None and key in options.graphs:
        proto, report = options.graphs[key]
        return with_metadata(proto, options.metadata), report
    proto, report = export_precision(net, precision, options.calib, options.max_psnr_drop,
                                     options.fp16_io, progress=progress.shown, method=options.calib_method,
                                     fp16_float_parts=for_tensorrt)
    if precision != "fp32" and summary:
        share = "" if report.int8_mac_fraction is None else f", {report.int8_mac_fraction:.1%} of conv MACs in INT8"
        kept = float_summary(report.kept_float, (report.int8 or {}).get("float_channels", {}))
        progress(f"{precision}: {kept} kept in float{share}, held-out PSNR {report.validation_psnr:.3f} dB vs "
            f"{report.validation_psnr_fp32:.3f} dB FP32 (drop {report.drop_db:+.4f} dB)")
    if report.fp16_float:
        f16 = report.fp16_float
        verdict = "TensorRT runs them in FP16" if f16["passed"] else "over the limit: TensorRT keeps them in FP32"
        openvino = "" if f16["drop_db_openvino"] is None else f"; OpenVINO {f16['drop_db_openvino']:+.4f} dB"
        progress(f"int8 with FP16 float parts: drop {f16['drop_db_onnxruntime']:+.4f} dB on ONNX Runtime{openvino}: {verdict}")
    if options.graphs is not None:
        options.graphs[key] = (proto, report)
    return with_metadata(proto, options.metadata), report


def with_metadata(proto: onnx.ModelProto, extra: dict[str, str] | None) -> onnx.ModelProto:
    """``proto``, or a copy of it recording ``extra`` as srdeploy metadata (which every target copies)."""
    if not extra:
        return proto
    copy = onnx.ModelProto.FromString(proto.SerializeToString())
    set_metadata(copy, {f"srdeploy.{key}": value for key, value in extra.items()})
    return copy


def export(net: SrModel, options: ExportOptions, out: Path, progress: Progress) -> ExportResult:
    """``out/MODEL_xSCALE_PRECISION.onnx`` (``_portable.onnx`` with ``options.portable``)."""
    proto, report = gated_onnx(net, options.precision, options, progress)
    stem = f"{net.info.name}_x{net.info.scale}_{options.precision}"
    if options.portable:
        proto, stem = portable(proto, net.info.colour), f"{stem}_portable"
    result = result_for(net, "onnx", options, report)
    result.artifacts.append(save(proto, out / f"{stem}.onnx"))
    return result
