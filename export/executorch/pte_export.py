"""A network as an ExecuTorch program for phone CPUs: ``torch.export`` → XNNPACK lowering → ``.pte``, checked by
ExecuTorch's own runtime before anything is written.

- **Transposed convolutions in sub-pixel form** (``SubPixelDeconv``): XNNPACK's strided transposed convolution
  ran FSRCNN ×2 3× slower than ONNX Runtime; the same layer as a convolution computing every output phase, then
  ``PixelShuffle``, is exact (float rounding) and runs at convolution speed (FSRCNN ×2: 0.6× ONNX Runtime, 2-core
  Xeon, docs/executorch.md). The phases come from ``export.subpixel`` (the OpenVINO IR's rewrite).
- **Shapes: a bounded range.** One input of N=1 and any height and width from the model's smallest to
  ``--max-shape`` (default 320×320: a 256-pixel tile with its context); the runtime's tiler fits its tiles to it, edge
  tiles smaller, so tiled outputs stay exactly those of a whole-image run (a fixed shape would pad the image's
  edges, which a network with zero padding inside does not compute alike). XNNPACK plans its memory for the
  largest shape, so the bound is the memory: measured in ``docs/executorch.md``.
"""
from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

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
from ...runtime.sessions.executorch import FORMAT, PROGRAM, SUFFIX, ExecuTorchSession, quiet_imports

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


def lower(network: nn.Module, channels: int, min_size: int, max_height: int, max_width: int) -> bytes:
    """The ``.pte`` of ``network`` (N=1, C×H×W, H and W from ``min_size`` to their maximum) lowered to XNNPACK."""
    to_edge_transform_and_lower, partitioner = import_executorch()
    height = torch.export.Dim("height", min=min_size, max=max_height)
    width = torch.export.Dim("width", min=min_size, max=max_width)
    example = torch.rand(1, channels, min(64, max_height), min(64, max_width))
    with torch.no_grad():
        program = torch.export.export(network, (example,), dynamic_shapes=({2: height, 3: width},))
    return to_edge_transform_and_lower(program, partitioner=[partitioner()]).to_executorch().buffer


def export_executorch(net: SrModel, precision: Precision, out: Path, max_hw: tuple[int, int] | None,
                      calib: str | None, versions: dict[str, str]) -> tuple[Path, dict]:
    """``out/MODEL_xSCALE_PRECISION.executorch``, written only once ExecuTorch computes it within the gate: (the
    folder, what was measured)."""
    info = net.info
    if precision != Precision.FP32:
        raise SrDeployError(f"--target executorch writes fp32 for now, not {precision}: export with --precision fp32")
    if net.has_global_gate:
        raise SrDeployError(f"{info.name}'s gate reads the whole image, which the executorch target does not cut into "
                            "its parts yet: export it with --target onnx or --target ncnn")
    max_height, max_width = max_hw or (DEFAULT_MAX_SIZE, DEFAULT_MAX_SIZE)
    if min(max_height, max_width) < info.export.min_size:
        raise SrDeployError(f"--max-shape {max_height}x{max_width}: below {info.name}'s smallest input "
                            f"({info.export.min_size}×{info.export.min_size})")
    config = replace(info.export, max_size=max(max_height, max_width))  # a batch runs image by image
    network, swapped = subpixel_network(net.network)
    program = lower(network, info.channels, config.min_size, max_height, max_width)
    entries = srdeploy_metadata(metadata(net, config, simplified=False).items())
    entries["shape_bounds"] = json.dumps({"min": [1, info.channels, config.min_size, config.min_size],
                                          "max": [config.max_batch, info.channels, max_height, max_width]})
    target = check_bundle_folder(out / f"{info.name}_x{info.scale}_{precision}{SUFFIX}", MANIFEST,
                                 "srdeploy ExecuTorch artifact")
    with atomic_dir(target) as work:
        manifest = {"format": FORMAT, "metadata": entries, "exporter": versions, "subpixel_deconvolutions": swapped}
        write_manifest(work, manifest, {PROGRAM: program})
        measured = {"fp32_max_abs_vs_pytorch": gate(work, net, calib), "pte_bytes": len(program),
                    "subpixel_deconvolutions": swapped, "max_hw": [max_height, max_width]}
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
