"""FP16 for XNNPACK: the network's weights and arithmetic in half precision, its input and output float32 (the
runtime feeds every precision alike).

XNNPACK's FP16 convolutions accumulate in FP16, as phones with ARMv8.2 FP16 arithmetic do (and this project's AMX
Xeon with AVX512-FP16), unlike the FP16 of ONNX Runtime and TensorRT, which accumulate in FP32. Measured through
ExecuTorch on the held-out crops, all in FP16: FSRCNN ×2 loses 0.115 dB, LESRCNN ×2 0.010 dB. So FP16 falls back as
INT8 does: while the drop on the calibration crops is over half the limit, the convolution that writes the output,
then the one that reads the input, compute in FP32 (FSRCNN ×2 held-out: 0.115 → 0.011 → 0.009 dB). The drop is measured
through ExecuTorch's runtime: PyTorch's FP16 on a CPU accumulates in FP32 and cannot predict it.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ...calib.data import CropSpec, lr_hr_crops, source_images
from ...models.loading import SrModel
from ...models.torch_runner import TorchRunner
from ...runtime.progress import Stages
from ...runtime.quality import crop_psnr
from ...runtime.sessions.executorch import ProgramRunner

CALIBRATION_SPEC = CropSpec(size=64, count=128, seed=2)  # calibration photos (never Set5/Set14, never held-out)
# The fallback aims at this share of the limit on the calibration crops, leaving room for the held-out gate, as the
# INT8 search does (at 0.3)
TARGET_SHARE = 0.5


@dataclass
class Fp16Report:
    """What the FP16 program is and what it cost before the gate."""

    kept_float: list[str] = field(default_factory=list)  # convolutions computing in FP32
    calibration_drop_db: float = 0.0
    drops_by_step: list[float] = field(default_factory=list)  # calibration drop of each fallback step tried


class Float32(nn.Module):
    """``module`` computing in FP32 inside an FP16 network."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.float()).half()


class HalfPrecision(nn.Module):
    """``network`` in FP16 between a float32 input and a float32 output, the modules named ``float32`` in FP32."""

    def __init__(self, network: nn.Module, float32: tuple[str, ...] = ()):
        super().__init__()
        self.network = copy.deepcopy(network).half()
        for name in float32:
            parent, _, child = name.rpartition(".")
            holder = self.network.get_submodule(parent)
            setattr(holder, child, Float32(getattr(holder, child)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x.half()).float()


def convolutions_in_order(network: nn.Module, channels: int) -> list[str]:
    """The convolutions of ``network`` in the order a forward pass runs them, those from image channels to image
    channels (mean shifts) left out."""
    ran: list[str] = []
    hooks = [module.register_forward_hook(lambda *_, name=name: ran.append(name))
             for name, module in network.named_modules()
             if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d))
             and not module.in_channels == module.out_channels == channels]
    try:
        with torch.no_grad():
            network(torch.rand(1, channels, 16, 16))
    finally:
        for hook in hooks:
            hook.remove()
    return list(dict.fromkeys(ran))


def fp16_program(net: SrModel, network: nn.Module, lowered: Callable[[nn.Module], bytes], calib: str | None,
                 limit: float, progress: bool) -> tuple[bytes, Fp16Report]:
    """The FP16 ``.pte`` of ``network`` (``net``'s network in the form that is lowered): all FP16, then the
    output's convolution, then the input's, in FP32 while the calibration drop through ExecuTorch is over
    ``TARGET_SHARE`` of ``limit``; the program with the lowest drop seen, and its report."""
    info = net.info
    stage = Stages(f"fp16 executorch {info.name} ×{info.scale}", progress)
    stage(f"calibration crops ({CALIBRATION_SPEC.count} of {CALIBRATION_SPEC.size}²) and PyTorch FP32's PSNR on them")
    crops = lr_hr_crops(source_images(calib, "calibration"), info.scale, CALIBRATION_SPEC)
    psnr = lambda infer: crop_psnr(infer, crops, info.scale, info.colour, info.eval_rounding)  # noqa: E731
    reference = psnr(TorchRunner(net.network).infer)
    convolutions = convolutions_in_order(network, info.channels)
    steps = [(), tuple(convolutions[-1:]), tuple(dict.fromkeys(convolutions[-1:] + convolutions[:1]))]
    report, best, target = Fp16Report(), None, TARGET_SHARE * limit
    for float32 in dict.fromkeys(steps):
        stage(f"FP16 with {', '.join(float32) or 'no convolution'} in FP32: lowering, then the calibration crops "
              "through ExecuTorch")
        program = lowered(HalfPrecision(network, float32))
        drop = reference - psnr(ProgramRunner(program).infer)
        report.drops_by_step.append(round(drop, 4))
        stage(f"{drop:.4f} dB on the calibration crops (target {target:.4f}, limit {limit})")
        if best is None or drop < best[0]:
            best = drop, program, float32
        if drop <= target:
            break
    report.calibration_drop_db, report.kept_float = round(best[0], 4), list(best[2])
    return best[1], report
