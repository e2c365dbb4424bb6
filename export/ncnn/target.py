"""The ``ncnn`` target: a folder ``NAME.ncnn`` with ncnn's ``.param``/``.bin`` (pnnx from the gated ONNX graph) and
the srdeploy manifest, gated by ncnn itself (``ncnn_export``): for Android and the GPUs of desktops and phones
(Vulkan), through ncnn's own runtime."""
from __future__ import annotations

from importlib import metadata
from pathlib import Path

from .ncnn_export import export_ncnn, import_pnnx
from .ncnn_int8 import float_twin
from ..options import ExportOptions, ExportResult, Progress, result_for
from ..precision import PrecisionReport
from ..onnx.target import gated_onnx
from ...models.loading import SrModel
from ...runtime.precision import Precision
from ...runtime.sessions.ncnn import import_ncnn


def check(options: ExportOptions, out: Path) -> None:
    """pnnx to convert with and ncnn to gate on, or one line (nothing written)."""
    import_pnnx()
    import_ncnn()


def gated_folder(net: SrModel, options: ExportOptions, out: Path, progress: Progress, versions: dict
                 ) -> tuple[Path, dict, PrecisionReport]:
    """The ncnn folder in ``out`` at ``options.precision`` from the gated ONNX graph (FP32; INT8: the gated INT8
    graph), through ncnn's own gate: (the folder, what ncnn measured, the ONNX graph's report)."""
    precision = Precision.parse(options.precision)
    proto, report = gated_onnx(net, "int8" if precision == Precision.INT8 else "fp32", options, progress,
                               summary=False)
    int8 = float_twin(proto) if precision == Precision.INT8 else None
    folder, measured = export_ncnn(proto, net, precision, out, options.calib, options.max_psnr_drop, versions, int8)
    return folder, measured, report


def export(net: SrModel, options: ExportOptions, out: Path, progress: Progress) -> ExportResult:
    """``out/MODEL_xSCALE_PRECISION.ncnn`` (FP16: FP32 graph, FP16 weights and arithmetic; INT8: the gated INT8
    graph's search carried into ncnn's INT8 layout); what ncnn measured on ``progress``."""
    precision = Precision.parse(options.precision)
    versions = {package: metadata.version(package) for package in ("pnnx", "ncnn")}
    folder, measured, report = gated_folder(net, options, out, progress, versions)
    if precision == Precision.FP32:
        progress(f"ncnn fp32 (pnnx {versions['pnnx']}): {measured['fp32_max_abs_vs_pytorch']:.1e} from PyTorch on "
                 "held-out crops")
    else:
        vulkan = "" if "drop_db_vulkan" not in measured else (
            f", Vulkan ({measured['vulkan_device']}) {measured['drop_db_vulkan']:+.4f} dB")
        share = "" if "int8_convolutions" not in measured else (f"{measured['int8_convolutions']} convolutions in INT8 "
                                         f"({measured['int8_mac_fraction']:.1%} of conv MACs); ")
        progress(f"ncnn {precision} (pnnx {versions['pnnx']}): {share}held-out PSNR drop against PyTorch FP32: CPU "
                 f"{measured['drop_db_cpu']:+.4f} dB{vulkan}")
    result = result_for(net, "ncnn", options, report, ncnn=measured)
    result.artifacts.append(folder)
    return result
