"""The accuracy gates: how much held-out PSNR a variant may lose against its reference, and the verdicts.

Every export target passes one: ``check_accuracy`` for the ONNX precisions (``export.precision``) and the OpenVINO IR
(``check_openvino_accuracy``, which also names int16 saturation where it is the cause), ``check_coreml_accuracy`` for Core ML
packages and their weight compression. A drop exactly at the limit passes; anything over it writes nothing.
"""
from __future__ import annotations

from typing import Protocol

from ..runtime.errors import SrDeployError
from ..runtime.precision import Precision

DEFAULT_MAX_DROP = {Precision.FP32: 0.0, Precision.FP16: 0.01, Precision.INT8: 0.1,  # dB, per precision
                    Precision.BF16: 0.1}
COREML_MAX_DROP = {"none": 0.01, "linear8": 0.1, "palette6": 0.1, "palette4": 0.1}  # dB, per weight compression
OPENVINO_FP32_NOISE_DB = 0.001  # OpenVINO's FP32 kernels may sum in another order than ONNX Runtime's
SATURATION_DB = 0.05  # OpenVINO losing this much more than ONNX Runtime on the same INT8 graph: saturation


class Measured(Protocol):
    precision: str
    validation_psnr: float | None
    validation_psnr_fp32: float | None
    drop_db: float
    int8_mac_fraction: float | None


def limit_for(defaults: dict, key: str, max_drop: float | None) -> float:
    """``max_drop`` where given, else the default limit for ``key`` (a precision or a compression)."""
    return defaults[key] if max_drop is None else max_drop


def passes(drop_db: float, limit: float) -> bool:
    return drop_db <= limit


def check_accuracy(report: Measured, limit: float, name: str) -> None:
    """The accuracy gate: a one-line error when the held-out drop is over ``limit`` dB."""
    if not passes(report.drop_db, limit):
        share = "" if report.int8_mac_fraction is None else f" with {report.int8_mac_fraction:.0%} of MACs in INT8"
        raise SrDeployError(
            f"{report.precision.upper()} {name} loses {report.drop_db:.3f} dB on the held-out photos{share} "
            f"({report.validation_psnr:.2f} vs {report.validation_psnr_fp32:.2f} dB FP32), over the "
            f"{limit} dB limit: nothing written; raise --max-psnr-drop to accept it"
        )


def check_openvino_accuracy(gated: Measured, onnx_report: Measured, limit: float, name: str, dot: str) -> None:
    """``check_accuracy`` on the OpenVINO measurement (``dot``: the CPU's int8 dot product, ``runtime.cpu.int8_dot``);
    where OpenVINO loses much more than ONNX Runtime on a CPU without VNNI, the error says why and what to do."""
    if gated.precision == "fp32":
        limit = max(limit, OPENVINO_FP32_NOISE_DB)
    try:
        check_accuracy(gated, limit, f"{name} on OpenVINO" + (f" (int8 dot product: {dot})" if gated.precision == "int8" else ""))
    except SrDeployError as exc:
        if gated.precision != "int8" or dot != "pairwise-int16" or gated.drop_db < onnx_report.drop_db + SATURATION_DB:
            raise
        raise SrDeployError(
            f"{exc}. ONNX Runtime loses {onnx_report.drop_db:.3f} dB with the same graph: the rest is int16 saturation of "
            "this CPU's pairwise int8 products (no VNNI) that no channel pair order removes; for this CPU choose "
            "--precision fp32, or export on a CPU with AVX-512 VNNI, AVX-VNNI or AMX") from None


def check_coreml_accuracy(psnr_pytorch: float, psnr_coreml: float, limit: float, name: str, precision: str,
                      compression: str) -> float:
    """The Core ML package's held-out drop against PyTorch, or a one-line error over ``limit``."""
    drop = psnr_pytorch - psnr_coreml
    if not passes(drop, limit):
        raise SrDeployError(
            f"Core ML {precision.upper()} ({compression} weights) {name} loses {drop:.3f} dB on the held-out photos "
            f"({psnr_coreml:.2f} vs {psnr_pytorch:.2f} dB PyTorch), over the {limit} dB limit: nothing written; raise "
            "--max-psnr-drop or use lighter compression")
    return drop
