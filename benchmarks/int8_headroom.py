"""How close can 8-bit activations get? A bound for one model, measured on the calibration crops.

    python -m srdeploy.benchmarks.int8_headroom --model fsrcnn --scale 2 [--max-float-share 0.2]

Activations at each convolution input are rounded to 8 bits with *per-channel* ranges and zero points
(each channel's own [min, max] over the calibration crops mapped onto 256 levels) and weights stay float.
That is what TensorRT's INT8 (one symmetric scale per tensor, zero point 0) approaches at best: centring
(``export.quant.int8_centre``) emulates the per-channel zero points exactly and equalization moves towards
per-channel scales. So the drop measured here is a lower bound on what any TensorRT-compatible
post-training scheme reaches with the same layers in float (single channels in float, ``export.quant.int8_channels``,
are outside it: that is how FSRCNN ×2 gets below it). Reported:
the drop with everything in INT8, with each layer alone, and the best set of float layers within the MAC
budget (every set of up to ``--max-float-layers`` layers is tried). The score is srdeploy's INT8 search score (pooled PSNR, evaluation
protocol) on the search crops; test sets are never used.
"""
from __future__ import annotations

import argparse
from itertools import combinations

import torch
from torch import nn

from .. import models
from ..runtime.quality import pooled_psnr
from ..calib.data import CropSpec, lr_hr_crops, network_batch, source_images
from ..export.precision import INT8_SEARCH_CROPS
from ..models.hooks import run_with_hooks
from ..runtime.tables import markdown_table

CONVS = (nn.Conv2d, nn.ConvTranspose2d)


def channel_ranges(model: nn.Module, batch: torch.Tensor) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], dict[str, int]]:
    """Per convolution (by module name): per-channel (min, max) of its input, and its MACs on ``batch``."""
    ranges, macs = {}, {}
    names = {m: n for n, m in model.named_modules() if isinstance(m, CONVS)}

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        x, name = inputs[0], names[module]
        low, high = x.amin(dim=(0, 2, 3)), x.amax(dim=(0, 2, 3))
        old = ranges.get(name, (low, high))
        ranges[name] = torch.minimum(old[0], low), torch.maximum(old[1], high)
        kernel = module.weight.shape[1] * module.weight.shape[2] * module.weight.shape[3]
        macs[name] = macs.get(name, 0) + (output.numel() if isinstance(module, nn.Conv2d) else x.numel()) * kernel

    run_with_hooks(model, batch, [(m, record) for m in names])
    return ranges, macs


def per_channel_8bit(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    low, high = low.view(1, -1, 1, 1), high.view(1, -1, 1, 1)
    step = torch.clamp(high - low, min=1e-12) / 255
    return torch.round((torch.clamp(x, low, high) - low) / step) * step + low


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--scale", type=int, required=True)
    parser.add_argument("--weights", help="checkpoint (default: the official one)")
    parser.add_argument("--max-float-share", type=float, default=0.2, help="largest share of MACs kept in float")
    parser.add_argument("--max-float-layers", type=int, default=3, help="largest float set tried")
    args = parser.parse_args(argv)
    loaded = models.load(args.model, args.scale, args.weights)
    model, info = loaded.network, loaded.info
    pairs = lr_hr_crops(source_images(), args.scale, CropSpec())
    ranges, macs = channel_ranges(model, torch.from_numpy(network_batch(pairs, info.colour)))
    search = pairs[:INT8_SEARCH_CROPS]
    modules = {n: m for n, m in model.named_modules() if n in ranges}
    total = sum(macs.values())

    def score(quantized: set[str]) -> float:
        """Pooled PSNR on the search crops with the inputs of ``quantized`` convolutions rounded to 8 bits."""
        hooks = [(modules[n], lambda mod, inputs, n=n: (per_channel_8bit(inputs[0], *ranges[n]),)) for n in quantized]
        handles = [m.register_forward_pre_hook(h) for m, h in hooks]
        try:
            with torch.inference_mode():
                return pooled_psnr(lambda x: model(torch.from_numpy(x)).numpy(), search, args.scale, info.colour,
                                   info.eval_rounding)
        finally:
            for handle in handles:
                handle.remove()

    reference = score(set())

    def drop(quantized: set[str]) -> float:
        return reference - score(quantized)

    everything = set(ranges)
    rows = [[n, f"{macs[n] / total:.1%}", f"{drop({n}):+.4f}"] for n in ranges]
    print(markdown_table(["layer", "MAC share", "drop, this layer alone in 8-bit (dB)"], rows))
    budgets = [set(c) for k in range(args.max_float_layers + 1) for c in combinations(ranges, k)
               if sum(macs[n] for n in c) <= args.max_float_share * total]
    best = min(budgets, key=lambda kept: drop(everything - kept))
    print(f"\nall 8-bit: {drop(everything):+.4f} dB; best float set within {args.max_float_share:.0%} of MACs "
          f"({', '.join(sorted(best)) or 'none'}, {sum(macs[n] for n in best) / total:.1%}): "
          f"{drop(everything - best):+.4f} dB (of {len(budgets)} sets tried)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
