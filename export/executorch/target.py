"""The ``executorch`` target: a folder ``NAME.executorch`` with ExecuTorch's ``model.pte`` (lowered to XNNPACK, for
phone CPUs on Android and iOS) and the srdeploy manifest, gated by ExecuTorch's own runtime (``pte_export``)."""
from __future__ import annotations

from importlib import metadata
from pathlib import Path

from .pte_export import export_executorch, gate_report, import_executorch
from ..options import ExportOptions, ExportResult, Progress, result_for
from ..trt.trt_plan import parse_shape
from ...models.loading import SrModel
from ...runtime.precision import Precision


def check(options: ExportOptions, out: Path) -> None:
    """ExecuTorch's exporter, or one line (nothing written)."""
    import_executorch()


def export(net: SrModel, options: ExportOptions, out: Path, progress: Progress) -> ExportResult:
    """``out/MODEL_xSCALE_PRECISION.executorch``: the program for LR inputs up to ``--max-shape`` (default 320×320: a
    256-pixel tile and its context); what ExecuTorch measured on ``progress``."""
    precision = Precision.parse(options.precision)
    max_hw = tuple(parse_shape(options.max_shape, net.info.channels)[2:]) if options.max_shape else None
    version = metadata.version("executorch")
    progress(f"executorch {version}: torch.export, XNNPACK lowering")
    folder, measured = export_executorch(net, precision, out, max_hw, options.calib, options.max_psnr_drop,
                                         {"executorch": version}, progress.shown)
    if precision == Precision.FP32:
        quality = f"{measured['fp32_max_abs_vs_pytorch']:.1e} from PyTorch on held-out crops"
    else:
        quality = (f"{measured['drop_db']:.3f} dB below PyTorch FP32 on held-out crops ({measured['validation_psnr']:.2f} "
                   f"vs {measured['validation_psnr_fp32']:.2f} dB)")
    if precision == Precision.FP16:
        quality += f", {', '.join(measured['fp16']['kept_float']) or 'no convolution'} in FP32"
    if precision == Precision.INT8:
        quality += (f", {measured['int8']['int8_mac_fraction']:.1%} of convolution MACs in INT8, "
                    f"{measured['int8']['activations']} activations")
    progress(f"executorch {precision}: {quality}, through ExecuTorch's runtime; LR inputs up to "
             f"{'×'.join(map(str, measured['max_hw']))}; {measured['pte_bytes'] / 1e6:.2f} MB")
    result = result_for(net, "executorch", options, gate_report(precision, measured), executorch=measured)
    result.artifacts.append(folder)
    return result
