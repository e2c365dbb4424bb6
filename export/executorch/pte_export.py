"""A network as an ExecuTorch program for phone CPUs: ``torch.export`` → XNNPACK lowering → ``.pte``, checked by
ExecuTorch's own runtime before anything is written.

- **Transposed convolutions in sub-pixel form** (``SubPixelDeconv``): XNNPACK's strided transposed convolution
  ran FSRCNN ×2 3× slower than ONNX Runtime; the same layer as a convolution computing every output phase, then
  ``PixelShuffle``, is exact (float rounding) and runs at convolution speed (FSRCNN ×2: 0.6× ONNX Runtime, 2-core
  Xeon, docs/executorch.md). The phases come from ``export.subpixel`` (the OpenVINO IR's rewrite).
- **FP16** (``pte_fp16``) and **INT8** (``pte_int8``) are gated on the held-out PSNR drop through ExecuTorch.
- **Shapes: a bounded range.** One input of N=1 and any height and width from the model's smallest to
  ``--max-shape`` (default 320×320: a 256-pixel tile with its context); the runtime's tiler fits its tiles to it, edge
  tiles smaller, so tiled outputs stay exactly those of a whole-image run (a fixed shape would pad the image's
  edges, which a network with zero padding inside does not compute alike). XNNPACK plans its memory for the
  largest shape, so the bound is the memory: measured in ``docs/executorch.md``.
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .pte_fp16 import fp16_program
from .pte_int8 import int8_module, unshared_weights
from ..accuracy_gate import DEFAULT_MAX_DROP, check_accuracy, limit_for
from ..gate_modules import GateFeatures, GateMargin
from ..onnx.onnx_export import metadata
from ..precision import VALIDATION_SPEC
from ..subpixel import as_convolution
from ...calib.data import lr_hr_crops, network_batch, source_images
from ...models.loading import SrModel
from ...models.torch_runner import TorchRunner
from ...runtime.artifact import srdeploy_metadata
from ...runtime.atomic import atomic_dir, check_bundle_folder
from ...runtime.errors import SrDeployError
from ...runtime.manifest import MANIFEST, write_manifest
from ...runtime.precision import Precision
from ...runtime.quality import crop_psnr
from ...runtime.sessions.executorch import FORMAT, PROGRAM, SUFFIX, ExecuTorchSession, quiet_imports, vouch

DEFAULT_MAX_SIZE = 320  # LR pixels: a 256 tile and its context
FP32_MAX_ABS = 1e-4  # relative to the output's peak, on held-out crops


def import_executorch():
    """ExecuTorch's exporter (``to_edge_transform_and_lower``) and XNNPACK's partitioner, or one line."""
    quiet_imports()
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
    except ImportError:
        raise SrDeployError("ExecuTorch is not installed: pip install executorch (or pip install -e '.[executorch]')"
                            ) from None
    return to_edge_transform_and_lower, XnnpackPartitioner


class SubPixelDeconv(nn.Module):
    """A transposed convolution that upsamples exactly s× as one convolution over all s² output phases, then
    ``PixelShuffle``: the same outputs, at convolution speed on XNNPACK."""

    def __init__(self, deconv: nn.ConvTranspose2d):
        super().__init__()
        stride = deconv.stride[0]
        weight, pads = as_convolution(deconv.weight.detach().cpu().numpy(), stride, deconv.kernel_size,
                                      deconv.padding)
        phases, c_out = stride * stride, deconv.out_channels
        # export.subpixel orders channels phase-major (ONNX's DepthToSpace DCR); PixelShuffle reads channel-major
        weight = weight.reshape(phases, c_out, *weight.shape[1:]).swapaxes(0, 1).reshape(phases * c_out,
                                                                                         *weight.shape[1:])
        self.pad = (pads[1], pads[3], pads[0], pads[2])  # left, right, top, bottom
        self.conv = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[2:])
        self.conv.weight = nn.Parameter(torch.from_numpy(np.ascontiguousarray(weight)))
        bias = deconv.bias.detach() if deconv.bias is not None else torch.zeros(c_out)
        self.conv.bias = nn.Parameter(bias.repeat_interleave(phases))
        self.shuffle = nn.PixelShuffle(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv(F.pad(x, self.pad)))


def gate_part_programs(network: nn.Module, channels: int, exported) -> dict[str, torch.export.ExportedProgram]:
    """The four ``runtime.global_gate.GATE_PARTS`` of a network whose gate reads the whole image, each a method of
    the program: the tiler averages the features over the whole image, decides once, and runs that branch."""
    return {"gate_features": exported(GateFeatures(network).eval()), "gate_margin": margin_program(network, channels),
            **{f"branch{b}": exported(subpixel_network(network.with_branch(b))[0]) for b in (0, 1)}}


def margin_program(network: nn.Module, channels: int) -> torch.export.ExportedProgram:
    """The gate's margin (the features' mean, N×C×1×1 → branch 1's logit margin), in float: a few hundred MACs."""
    with torch.no_grad():
        width = GateFeatures(network).eval()(torch.rand(1, channels, 16, 16)).shape[1]
        return torch.export.export(GateMargin(network).eval(), (torch.rand(1, width, 1, 1),))


def _upsamples_exactly(layer: nn.ConvTranspose2d) -> bool:
    (stride, stride_w), (kernel, kernel_w) = layer.stride, layer.kernel_size
    return (stride == stride_w >= 2 and kernel == kernel_w and layer.groups == 1 and layer.dilation == (1, 1)
            and layer.padding[0] == layer.padding[1] and layer.output_padding[0] == layer.output_padding[1]
            and kernel + layer.output_padding[0] - 2 * layer.padding[0] == stride)


def subpixel_network(network: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``network`` with each transposed convolution that upsamples exactly s× in sub-pixel form; how
    many."""
    network = copy.deepcopy(network).eval()
    swapped = 0
    for parent in list(network.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ConvTranspose2d) and _upsamples_exactly(child):
                setattr(parent, name, SubPixelDeconv(child))
                swapped += 1
    return network, swapped


def exporter(channels: int, min_size: int, max_height: int, max_width: int):
    """``torch.export`` for one shape policy: N=1, C×H×W, H and W from ``min_size`` to their maximum."""
    height = torch.export.Dim("height", min=min_size, max=max_height)
    width = torch.export.Dim("width", min=min_size, max=max_width)
    example = torch.rand(1, channels, min(64, max_height), min(64, max_width))

    def exported(network: nn.Module) -> torch.export.ExportedProgram:
        with torch.no_grad():
            return torch.export.export(network, (example,), dynamic_shapes=({2: height, 3: width},))
    return exported


def lower(program: torch.export.ExportedProgram | dict[str, torch.export.ExportedProgram]) -> bytes:
    """The ``.pte`` of an exported program (its method ``forward``) or of several (a method each), lowered to
    XNNPACK."""
    to_edge_transform_and_lower, partitioner = import_executorch()
    return to_edge_transform_and_lower(program, partitioner=[partitioner()]).to_executorch().buffer


def export_executorch(net: SrModel, precision: Precision, out: Path, max_hw: tuple[int, int] | None,
                      calib: str | None, max_drop: float | None, versions: dict[str, str],
                      progress: bool = True) -> tuple[Path, dict]:
    """``out/MODEL_xSCALE_PRECISION.executorch``, written only once ExecuTorch computes it within the gate: (the
    folder, what was measured)."""
    info = net.info
    if precision not in (Precision.FP32, Precision.FP16, Precision.INT8):
        raise SrDeployError(f"--target executorch writes fp32, fp16 or int8, not {precision}: export with "
                            "--precision fp16 or int8")
    if net.has_global_gate and precision == Precision.FP16:
        raise SrDeployError(f"{info.name}'s gate reads the whole image: the executorch target writes its gate parts in "
                            f"FP32 or INT8, not {precision}: export it with --precision fp32 or int8")
    max_height, max_width = max_hw or (DEFAULT_MAX_SIZE, DEFAULT_MAX_SIZE)
    if min(max_height, max_width) < info.export.min_size:
        raise SrDeployError(f"--max-shape {max_height}x{max_width}: below {info.name}'s smallest input "
                            f"({info.export.min_size}×{info.export.min_size})")
    config = replace(info.export, max_size=max(max_height, max_width))  # a batch runs image by image
    target = check_bundle_folder(out / f"{info.name}_x{info.scale}_{precision}{SUFFIX}", MANIFEST,
                                 "srdeploy ExecuTorch artifact")
    network, swapped = subpixel_network(net.network)
    exported = exporter(info.channels, config.min_size, max_height, max_width)
    int8 = fp16 = None
    limit = limit_for(DEFAULT_MAX_DROP, precision, max_drop)  # dB, for the FP16 fallback and the FP16/INT8 gate
    if precision == Precision.INT8:
        parts, int8 = int8_module(net, lambda n: subpixel_network(n)[0],
                                  lambda n: unshared_weights(exported(n).module()), calib, max_drop, progress)
        methods = {name: exported(part) for name, part in parts.items()}
        if net.has_global_gate:
            methods["gate_margin"] = margin_program(net.network, info.channels)
        program = lower(methods["forward"] if "forward" in methods else methods)
    elif precision == Precision.FP16:
        program, fp16 = fp16_program(net, network, lambda n: lower(exported(n)), calib, limit, progress)
    elif net.has_global_gate:
        program = lower(gate_part_programs(net.network, info.channels, exported))
    else:
        program = lower(exported(network))
    vouch(program)  # lowered here: the session loads it without a probe in a child process
    entries = srdeploy_metadata(metadata(net, config, simplified=False).items())
    entries["precision"] = str(precision)
    entries["shape_bounds"] = json.dumps({"min": [1, info.channels, config.min_size, config.min_size],
                                          "max": [config.max_batch, info.channels, max_height, max_width]})
    with atomic_dir(target) as work:
        manifest = {"format": FORMAT, "metadata": entries, "exporter": versions, "subpixel_deconvolutions": swapped}
        write_manifest(work, manifest, {PROGRAM: program})
        measured = {"pte_bytes": len(program), "subpixel_deconvolutions": swapped, "max_hw": [max_height, max_width]}
        if precision == Precision.FP32:
            measured["fp32_max_abs_vs_pytorch"] = gate(work, net, calib)
        else:
            measured.update(psnr_gate(work, net, calib, precision, limit))
            entries["validation_drop_db"] = f"{measured['drop_db']:.4f}"
        if fp16 is not None:
            measured["fp16"] = asdict(fp16)
            entries["kept_float"] = json.dumps(fp16.kept_float)
        if int8 is not None:
            measured["int8"] = asdict(int8)
            entries["kept_float"] = json.dumps(int8.kept_float)
            entries["int8_mac_fraction"] = f"{int8.int8_mac_fraction:.4f}"
        entries["executorch_report"] = json.dumps(measured)
        write_manifest(work, manifest, {PROGRAM: program})
    return target, measured


def gate(folder: Path, net: SrModel, calib: str | None) -> float:
    """ExecuTorch's output on held-out crops against PyTorch's, relative to the output's peak; a one-line refusal
    above ``FP32_MAX_ABS``."""
    info = net.info
    crops = lr_hr_crops(source_images(calib, "validation"), info.scale, VALIDATION_SPEC)
    batch = network_batch(crops[:4], info.colour)
    expected, found = TorchRunner(net.network).infer(batch), ExecuTorchSession(folder).infer(batch)
    error = float(np.abs(found - expected).max() / max(1.0, float(np.abs(expected).max())))
    if not error <= FP32_MAX_ABS:
        raise SrDeployError(f"ExecuTorch computes {info.name} ×{info.scale} {error:.2e} away from PyTorch in FP32 "
                            f"(limit {FP32_MAX_ABS:.0e}): nothing written")
    return error


def psnr_gate(folder: Path, net: SrModel, calib: str | None, precision: Precision, limit: float) -> dict:
    """The held-out PSNR drop of the FP16 or INT8 program run by ExecuTorch against PyTorch's FP32, or a one-line
    refusal over ``limit`` dB (``accuracy_gate.check_accuracy``)."""
    info = net.info
    crops = lr_hr_crops(source_images(calib, "validation"), info.scale, VALIDATION_SPEC)
    psnr = lambda infer: crop_psnr(infer, crops, info.scale, info.colour, info.eval_rounding)  # noqa: E731
    fp32, found = psnr(TorchRunner(net.network).infer), psnr(ExecuTorchSession(folder).infer)
    report = GateReport(str(precision), found, fp32, fp32 - found, None)
    check_accuracy(report, limit, f"{info.name} ×{info.scale} through ExecuTorch")
    return {"validation_psnr": round(found, 4), "validation_psnr_fp32": round(fp32, 4), "drop_db": round(fp32 - found, 4)}


def gate_report(precision: Precision, measured: dict) -> GateReport | None:
    """What the FP16 or INT8 gate measured (``ExportResult.report``, as the other targets' precision reports), or
    None (FP32)."""
    if "drop_db" not in measured:
        return None
    share = measured["int8"]["int8_mac_fraction"] if "int8" in measured else None
    return GateReport(str(precision), measured["validation_psnr"], measured["validation_psnr_fp32"],
                      measured["drop_db"], share)


@dataclass
class GateReport:
    """One measurement for ``accuracy_gate.check_accuracy``."""

    precision: str
    validation_psnr: float
    validation_psnr_fp32: float
    drop_db: float
    int8_mac_fraction: float | None
