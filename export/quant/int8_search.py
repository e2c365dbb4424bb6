"""Finding an INT8 graph that meets a PSNR budget: equalization, rounding, sensitivity, float fallback.

Everything is measured on calibration crops (never on the held-out split the gate uses, never on test
sets): the drop is the pooled PSNR (evaluation protocol, ``calibration_score``) of the Q/DQ graph below
that of the FP32 graph.
1. Variants: activation equalization strength ``alpha`` (``int8_equalization.equalize``) × weight rounding (to
   nearest, or GPTQ), with the convolution inputs centred where that widens their int8 range
   (``int8_centre``; it lowered the best variant's score on LESRCNN, DSRNet and FSRCNN ×2, README). Each is
   scored with the layers under 1 % of the MACs in float (the cheap
   fallback the search would take anyway: mean shifts, first and last layers); the best goes on. The
   best one differs by model (README), so each export measures.
2. Sensitivity: the drop when only one layer is INT8, per layer.
3. Fallback: layers go back to float, most sensitive per MAC first, until the drop is within the
   target, never taking the INT8 share of convolution MACs below ``min_fraction``; then each one
   returns to INT8 if the drop stays within the target (or does not grow).
4. Channel fallback, only if that misses the target: single channels of conv → activation → conv chains
   and whole layers go to float, most rounding noise per MAC first (``int8_channels``), in growing MAC
   budgets down to ``min_fraction``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx
from tqdm import tqdm

from . import int8_calibration, int8_centre, int8_channels, int8_equalization, int8_gptq, int8_graph, int8_qdq
from ..onnx.onnx_export import proto_infer
from ...runtime.progress import quiet

Score = Callable[[onnx.ModelProto], float]  # PSNR of a graph on the calibration crops
ROUNDINGS = ("nearest", "gptq")
# GPTQ's input statistics need fewer crops than the ranges: a range is set by its rarest large value
GPTQ_CROPS = 32
CHANNEL_STEP = 0.05  # the channel fallback's float budget grows by this share of the MACs
NOISE_CROPS = 16  # crops the per-channel noise ranking is measured on


@dataclass
class Int8Plan:
    method: str
    alpha: float
    rounding: str
    centred: list[str] = field(default_factory=list)  # tensors chosen for centring; INT8 layers read them centred
    kept_float: list[str] = field(default_factory=list)
    float_channels: dict[str, list[int]] = field(default_factory=dict)  # per tensor: channels read in float
    int8_mac_fraction: float = 0.0
    calibration_drop_db: float = 0.0
    variants_db: dict[str, float] = field(default_factory=dict)  # drop per "alpha/rounding", cheap layers float
    sensitivity_db: dict[str, float] = field(default_factory=dict)


@dataclass
class Variant:
    """One equalized graph (centred where that helps) with its activation ranges and weight codes."""

    graph: onnx.ModelProto  # equalized, not centred: layer keys are those of the exported graph
    centres: dict[str, list[float]]
    alpha: float
    rounding: str
    amax: dict[str, float]  # by the tensor each INT8 layer reads (its centred copy where centred)
    codes: dict[str, tuple[np.ndarray, np.ndarray]] | None
    macs: dict[str, int]

    @property
    def name(self) -> str:
        return f"{self.alpha}/{self.rounding}"

    def quantized(self, float_keys: set[str]) -> onnx.ModelProto:
        keys = int8_keys(int8_graph.layers(self.graph), float_keys)
        renamed = int8_centre.centred_keys(self.graph, self.centres)
        graph = int8_centre.centre(self.graph, self.centres, only=keys)
        return int8_qdq.quantize(graph, self.amax, {renamed.get(k, k) for k in keys}, self.codes)

    def int8_fraction(self, on_path: list[int8_graph.Layer], float_keys: set[str]) -> float:
        """INT8 share of the convolution MACs, counting the float ConvTranspose that centres each INT8
        ConvTranspose's input (``int8_centre``: its MACs over the layer's input channels)."""
        weights = {w.name: w for w in self.graph.graph.initializer}
        int8_macs = sum(self.macs[s.key] for s in on_path if s.key not in float_keys)
        centring = sum(self.macs[s.key] / weights[s.weight].dims[0] for s in on_path
                       if s.op == "ConvTranspose" and s.activation in self.centres and s.key not in float_keys)
        return int8_macs / (sum(self.macs[s.key] for s in on_path) + centring)


def cheap_layers(macs: dict[str, int], on_path: list[int8_graph.Layer], share: float = 0.01) -> set[str]:
    """Keys of the layers under ``share`` of the MACs (mean shifts, first and last layers)."""
    total = sum(macs[s.key] for s in on_path)
    return {s.key for s in on_path if macs[s.key] < share * total}


def int8_keys(sites: list[int8_graph.Layer], float_keys: set[str]) -> set[str]:
    """Layers to quantize: on-path ones not kept float; off-path copies follow their weight's decision."""
    float_weights = {s.weight for s in sites if s.key in float_keys}
    return {s.key for s in sites if s.key not in float_keys and (s.on_path or s.weight not in float_weights)}


def variants(
    proto: onnx.ModelProto,
    batch: np.ndarray,
    method: str,
    alphas: tuple[float, ...],
    stats_for: Callable[[onnx.ModelProto], dict],
    stage: Callable[[str], None] = quiet,
) -> list[Variant]:
    found = []
    if any(alphas):
        stage(f"equalization: per-channel peaks on {len(batch)} crops")
    peaks = int8_equalization.equalization_peaks(proto, batch) if any(alphas) else {}
    for alpha in alphas:
        graph = int8_equalization.equalize(proto, peaks, alpha) if alpha else proto
        stage(f"{'variant alpha=' + str(alpha) if alpha else 'split graph'}: centres, activation ranges on {len(batch)} "
              "crops (cached after the first export)")
        centres = int8_centre.choose_centres(graph, batch)
        full = int8_centre.centre(graph, centres)  # every layer's input centred: their statistics
        stats = stats_for(full)
        amax = {name: int8_calibration.activation_amax(s["histogram"], s["peak"], method) for name, s in stats.items() if name != "macs"}
        renamed = int8_centre.centred_keys(graph, centres)
        macs = {key: stats["macs"][renamed.get(key, key)] for key in (s.key for s in int8_graph.layers(graph))}
        sample = batch[:GPTQ_CROPS]
        stage(f"{'variant alpha=' + str(alpha) if alpha else 'split graph'}: GPTQ weight rounding on {len(sample)} crops")
        noise = int8_gptq.input_noise(full, int8_qdq.quantize(full, amax, {s.key for s in int8_graph.layers(full)}), sample)
        found += [Variant(graph, centres, alpha, "nearest", amax, None, macs),
                  Variant(graph, centres, alpha, "gptq", amax, int8_gptq.gptq_codes(full, sample, noise), macs)]
    return found


def plan(
    proto: onnx.ModelProto,
    batch: np.ndarray,
    score: Score,
    target_db: float,
    stats_for: Callable[[onnx.ModelProto], dict],
    method: str = "minmax",
    alphas: tuple[float, ...] = (0.5, 1.0),
    min_fraction: float = 0.0,
    progress: bool = True,
    stage: Callable[[str], None] = quiet,
) -> tuple[onnx.ModelProto, Int8Plan, Variant]:
    """The INT8 graph with the fewest float layers (most sensitive per MAC first) that meets ``target_db``, its
    plan, and the variant (equalized graph, weight codes) whose layers it quantizes."""
    reference = score(proto)  # equalization is exact in float: one reference for all variants
    candidates = variants(proto, batch, method, alphas, stats_for, stage)
    on_path = [s for s in int8_graph.layers(proto) if s.on_path]  # equalization keeps names: same for all
    cheap = cheap_layers(candidates[0].macs, on_path)
    stage(f"scoring {len(candidates)} variants (equalization × rounding)")
    drops = {v.name: reference - score(v.quantized(cheap)) for v in candidates}
    best = min(candidates, key=lambda v: drops[v.name])
    result = Int8Plan(method, best.alpha, best.rounding, sorted(best.centres), variants_db={k: round(d, 4) for k, d in drops.items()})
    everything = {s.key for s in on_path}
    stage(f"best variant {best.name} ({drops[best.name]:.3f} dB); sensitivity of {len(on_path)} layers")
    bar = tqdm(on_path, desc="INT8 sensitivity", unit="layer", disable=None if progress else True, leave=False)
    result.sensitivity_db = {s.key: round(reference - score(best.quantized(everything - {s.key})), 4) for s in bar}
    # most sensitive per MAC first (a floor of 1 % of the MACs, so that tiny insensitive layers don't lead)
    candidates_float = [s for s in on_path if result.sensitivity_db[s.key] > 0.1 * target_db]
    total = sum(best.macs[s.key] for s in on_path)
    order = sorted(candidates_float, reverse=True,
                   key=lambda s: result.sensitivity_db[s.key] / max(best.macs[s.key] / total, 0.01))
    kept: set[str] = set()
    result.calibration_drop_db = reference - score(best.quantized(kept))
    stage(f"all INT8: {result.calibration_drop_db:.3f} dB on the calibration crops (target {target_db:.3f}); "
          "layers to float, most sensitive per MAC first")
    for site in tqdm(order, desc="INT8 float fallback", unit="layer", disable=None if progress else True, leave=False):
        if result.calibration_drop_db <= target_db:
            break
        if best.int8_fraction(on_path, kept | {site.key}) < min_fraction:
            continue
        kept.add(site.key)
        result.calibration_drop_db = reference - score(best.quantized(kept))
    for site in [s for s in reversed(order) if s.key in kept]:  # undo additions that did not pay off
        drop = reference - score(best.quantized(kept - {site.key}))
        if drop <= max(target_db, result.calibration_drop_db):
            kept.discard(site.key)
            result.calibration_drop_db = drop
    result.kept_float = [s.key for s in on_path if s.key in kept]
    result.int8_mac_fraction = best.int8_fraction(on_path, kept)
    graph = best.quantized(kept)
    stage(f"{len(kept)} layers in float: {result.calibration_drop_db:.3f} dB at {result.int8_mac_fraction:.1%} INT8 MACs")
    if result.calibration_drop_db > target_db:
        graph = channel_fallback(best, batch, score, reference, target_db, stats_for, method, min_fraction, result,
                                 progress, stage) or graph
    return graph, result, best


def channel_fallback(
    best: Variant,
    batch: np.ndarray,
    score: Score,
    reference: float,
    target_db: float,
    stats_for: Callable[[onnx.ModelProto], dict],
    method: str,
    min_fraction: float,
    result: Int8Plan,
    progress: bool,
    stage: Callable[[str], None] = quiet,
) -> onnx.ModelProto | None:
    """When whole layers in float cannot meet the target: channels (``int8_channels``) and whole layers
    go to float, most noise per MAC first, in steps of ``CHANNEL_STEP`` of the MACs, until the drop
    meets the target or the INT8 share would fall below ``min_fraction``. Fills ``result`` and returns
    the graph if that beats the whole-layer fallback, else None."""
    stage(f"channel fallback: rounding noise of every channel on {NOISE_CROPS} crops")
    units = int8_channels.noise_ranking(best, batch[:NOISE_CROPS], progress)
    on_path = [s for s in int8_graph.layers(best.graph) if s.on_path]
    total = sum(best.macs[s.key] for s in on_path)
    centring_macs = total * (1 - best.int8_fraction(on_path, set()))  # float MACs that centre INT8 layers
    graph, best_drop = None, result.calibration_drop_db
    steps = int(round((1 - min_fraction) / CHANNEL_STEP))
    for step in tqdm(range(1, steps + 1), desc="INT8 channel fallback", unit="step", disable=None if progress else True, leave=False):
        channels, whole_layers = int8_channels.choose(units, step * CHANNEL_STEP * total - centring_macs)
        split, split_keys = int8_channels.split_channels(best.graph, channels)
        kept = split_keys | whole_layers
        split_path = [s for s in int8_graph.layers(split) if s.on_path]
        stage(f"channel fallback step {step}/{steps}: {sum(map(len, channels.values()))} channels and "
              f"{len(whole_layers)} whole layer(s) in float")
        for variant in variants(split, batch, method, (0.0,), stats_for, stage):  # equalized before the split
            fraction = variant.int8_fraction(split_path, kept)
            quantized = variant.quantized(kept) if fraction >= min_fraction else None
            drop = reference - score(quantized) if quantized is not None else np.inf
            if drop < best_drop:
                graph, best_drop = quantized, drop
                result.calibration_drop_db, result.int8_mac_fraction, result.rounding = drop, fraction, variant.rounding
                result.kept_float, result.float_channels, result.centred = sorted(kept), channels, sorted(variant.centres)
        if best_drop <= target_db:
            break
    return graph


def calibration_score(pairs, scale: int, colour: str, rounding: str) -> Score:
    """Pooled PSNR on calibration crops: per-crop PSNRs let a few near-black crops steer the search
    (measured on FSRCNN ×2: the pooled drop predicts the held-out drop, 0.22 vs 0.26 dB; the per-crop
    mean said 1.26)."""
    from ...runtime.quality import pooled_psnr

    return lambda graph: pooled_psnr(proto_infer(graph), pairs, scale, colour, rounding)
