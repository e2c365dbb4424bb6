"""The ``openvino`` target: OpenVINO IR (.xml + .bin) of the gated ONNX graph, gated again on OpenVINO itself."""
from __future__ import annotations

from pathlib import Path

from .openvino_export import write_ir
from ..options import ExportOptions, ExportResult, Progress, result_for
from ..onnx.target import gated_onnx
from ...models.loading import SrModel
from ...runtime.precision import Precision


def check(options: ExportOptions, out: Path) -> None:
    """OpenVINO to convert and gate with, or one line naming how to install it (nothing written)."""
    from ...runtime.sessions.openvino import import_openvino

    import_openvino()


def export(net: SrModel, options: ExportOptions, out: Path, progress: Progress) -> ExportResult:
    """``out/MODEL_xSCALE_PRECISION.xml`` + ``.bin`` (FP16: FP32 graph, FP16 weights; BF16: FP32 graph computed in
    bfloat16); the executed precisions on ``progress``."""
    precision = Precision.parse(options.precision)
    graph_precision = "fp32" if precision in (Precision.FP16, Precision.BF16) else precision  # weights or compute
    proto, report = gated_onnx(net, graph_precision, options, progress, summary=False)
    path, gated, measured = write_ir(proto, report, net.info, precision, out, options.calib, options.max_psnr_drop,
                                     progress.shown)
    share = "" if gated.int8_mac_fraction is None else (
        f", {measured['int8_executed_mac_fraction']:.1%} of conv MACs executed in u8/i8 "
        f"({gated.int8_mac_fraction:.1%} carry Q/DQ; {measured['pair_reordered_tensors']} conv inputs in int16 pair "
        "order)")
    progress(f"openvino {precision} ({measured['inference_precision']} inference precision, int8 dot product "
             f"{measured['int8_dot']}){share}: held-out PSNR {measured['validation_psnr']:.3f} vs "
             f"{measured['validation_psnr_fp32']:.3f} dB FP32 (drop {measured['drop_db']:+.4f} dB)")
    result = result_for(net, "openvino", options, gated, openvino=measured)
    result.artifacts.append(path)
    return result
