"""Parameters and multiply-accumulates (MACs) of every zoo architecture and scale.

MACs are counted on the network as it runs: forward hooks on every ``Conv2d`` (N·Cout·Hout·Wout·Cin/g·kh·kw)
and ``ConvTranspose2d`` (N·Cin·Hin·Win·Cout/g·kh·kw) during one forward pass, so branches that do not
run are not counted (DSRNet: gate branch 1, the one the official ×2 checkpoint always takes). The exported
ONNX graph's own count (``export.onnx.onnx_macs``, recorded in its metadata) is listed too: the export merges
LESRCNN's and CFSRCNN's two passes through their upsampler into one. Element-wise ops, PReLU/ReLU and
pixel shuffles are left out (< 1 % here). Every layer is 'same'-padded, so MACs grow exactly with the pixel
count and one probe gives the cost per output pixel at any size. A test checks FSRCNN against a hand count.

    python -m srdeploy.benchmarks.complexity --out benchmarks/results/complexity.md
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from torch import nn

from ..models.hooks import run_with_hooks
from ..models.registry import ARCHITECTURES
from ..runtime.atomic import atomic_path
from ..runtime.tables import markdown_table

PROBE = 24  # LR side of the counting pass


@dataclass(frozen=True)
class Complexity:
    model: str
    scale: int
    params: int
    macs_per_output_pixel: float
    exported_macs_per_output_pixel: float | None = None  # the exported ONNX graph, after its rewrites

    @property
    def gmacs_per_output_mp(self) -> float:
        """Giga-MACs per output megapixel (10^6 pixels)."""
        return self.macs_per_output_pixel * 1e6 / 1e9

    def macs(self, lr_height: int, lr_width: int) -> float:
        """MACs of one LR input of this size."""
        return self.macs_per_output_pixel * lr_height * self.scale * lr_width * self.scale


def conv_macs(model: nn.Module, x: torch.Tensor) -> int:
    """MACs of every convolution that runs in ``model(x)``."""
    total = 0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        kernel = module.weight.shape[2] * module.weight.shape[3]
        if isinstance(module, nn.ConvTranspose2d):
            total += inputs[0].numel() * module.out_channels // module.groups * kernel
        else:
            total += output.numel() * module.in_channels // module.groups * kernel

    run_with_hooks(model, x, [(m, count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    return total


def measure(name: str, scale: int, exported: bool = False) -> Complexity:
    """Parameters and MACs of ``name`` ×``scale`` (weights do not matter: the architecture does); with
    ``exported``, also the MACs of its exported ONNX graph (an export of random weights)."""
    arch = ARCHITECTURES[name]
    options = {"gate": "branch1"} if "gate" in arch.options else {}
    model = arch.build(scale, **options).eval()
    macs = conv_macs(model, torch.zeros(1, arch.channels, PROBE, PROBE))
    graph = None
    if exported:
        from ..export.onnx.onnx_export import to_onnx
        from ..models.loading import ModelInfo, SrModel

        info = ModelInfo(name, scale, arch.colour, "random", "", "", options, arch.export, arch.eval_rounding)
        recorded = {p.key: p.value for p in to_onnx(SrModel(model, info)).metadata_props}
        graph = float(recorded["srdeploy.macs_per_output_pixel"])
    return Complexity(name, scale, sum(p.numel() for p in model.parameters()), macs / (PROBE * scale) ** 2, graph)


def complexity_table() -> list[Complexity]:
    return [measure(name, scale, exported=True) for name, arch in ARCHITECTURES.items() for scale in arch.scales]


def markdown(rows: list[Complexity]) -> str:
    return markdown_table(
        ["model", "scale", "parameters", "MACs / output pixel", "GMAC / output MP", "GMAC for a 1280×720 output",
         "MACs / output pixel, exported ONNX"],
        [[c.model, f"×{c.scale}", f"{c.params:,}", f"{c.macs_per_output_pixel:,.0f}", f"{c.gmacs_per_output_mp:.2f}",
          f"{c.macs_per_output_pixel * 1280 * 720 / 1e9:.1f}",
          "" if c.exported_macs_per_output_pixel is None else f"{c.exported_macs_per_output_pixel:,.0f}"] for c in rows],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="also write the table (markdown) here")
    args = parser.parse_args(argv)
    table = markdown(complexity_table())
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text("Command: `python -m srdeploy.benchmarks.complexity`\n\n" + table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
