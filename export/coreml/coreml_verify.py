"""Checks a saved ``.mlpackage`` against the PyTorch model it came from, on Linux (no Core ML runtime).

1. Constants: every checkpoint tensor the forward pass uses is in the package bit-exactly (at the package's
   precision: FP16 = the checkpoint rounded to half), and every weight, bias and PReLU slope in the package is
   one of them. Compressed packages: each compressed tensor decompresses (coremltools' own constexpr
   evaluation) to within its format's error of the checkpoint tensor it replaces. Constants the converter folds
   into a layer (``x + 0.1 * conv(x)``, EDSR's residual scaling; ``conv(x) + mean``): a weight found as the
   checkpoint's times one factor per output channel, to one unit in the last place (``scale_fold``), and that
   layer's bias, whatever was added to it, judged by the outputs below against PyTorch.
2. Outputs, by the NumPy MIL executor (``export/coreml/mil_numpy.py``) on real-photo crops at sizes the package
   accepts: FP32 mode vs PyTorch with the package's own weights ≤ ``FP32_MAX_ABS`` (relative to the output
   peak); per-op FP16 emulation ≥ ``FP16_MIN_PSNR`` dB and no 8-bit level off by more than one, vs PyTorch
   FP32 (vs the package's weights when compressed: compression's cost is measured separately, in dB).
3. Data-dependent decisions (DSRNet's gate): the program's ``greater`` results equal PyTorch's, both modes.

On macOS, ``macos_predict`` runs the package through Core ML itself.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .mil_numpy import MilExecutor
from ...models.hooks import run_with_hooks
from ...runtime.compare import compare

FP32_MAX_ABS = 1e-4  # × max(1, max|reference|): images in [0, 1] get an absolute 1e-4
FP16_MIN_PSNR = 60.0  # dB, peak max(1, max|reference|)
FP16_MAX_OFF_BY_LEVEL = 0.0  # % of 8-bit values off by more than one level (image-valued outputs only)
IMAGE_PEAK = 2.0  # outputs beyond this (random-weight networks) are not images: no 8-bit level check
# Relative L2 error of a decompressed tensor vs the checkpoint tensor, per compression (measured on the zoo:
# 8-bit ≤ 0.004, 6-bit ≤ 0.02, 4-bit ≤ 0.09; a wrong or corrupted tensor is near 1).
COMPRESSED_WEIGHT_RTOL = {"linear8": 0.03, "palette6": 0.06, "palette4": 0.25}
WEIGHTED_INPUTS = {"conv": ("weight", "bias"), "conv_transpose": ("weight", "bias"), "linear": ("weight", "bias"),
                   "prelu": ("alpha",), "leaky_relu": ("alpha",)}  # a PReLU with one slope (or all equal) converts
                                                                   # to leaky_relu with a scalar alpha


def load_program(package: str | Path):
    """The ``main`` function of a saved package's MIL program (its weights read from the package)."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto import load as milproto_load

    package = Path(package)
    spec = ct.utils.load_spec(str(package))
    program = milproto_load.load(spec, spec.specificationVersion,
                                 file_weights_dir=str(package / "Data" / "com.apple.CoreML" / "weights"))
    return spec, program.functions["main"]


def package_weights(function) -> dict[str, tuple[np.ndarray, bool]]:
    """Weights, biases and PReLU slopes of the program's weighted ops: var name → (value, compressed)."""
    producers = {op.outputs[0].name: op for op in function.operations
                 if op.op_type == "const" or op.op_type.startswith("constexpr_")}
    found = {}
    for op in function.operations:
        for role in WEIGHTED_INPUTS.get(op.op_type, ()):
            var = op.inputs.get(role)
            if var is None or var.name not in producers:
                continue
            producer = producers[var.name]
            compressed = producer.op_type != "const"
            value = producer.materialized_val_inference() if compressed else producer.outputs[0].val
            found[var.name] = (np.asarray(value), compressed)
    return found


def weighted_layers(function) -> list[tuple[str, str | None, str | None]]:
    """(op type, weight var, bias var) of each conv, conv_transpose and linear op of the program."""
    return [(op.op_type, getattr(op.inputs.get("weight"), "name", None), getattr(op.inputs.get("bias"), "name", None))
            for op in function.operations if op.op_type in ("conv", "conv_transpose", "linear")]


def scale_fold(package: np.ndarray, checkpoint: np.ndarray, axis: int = 0) -> np.ndarray | None:
    """Factors s along ``axis`` (a layer's output channels) with every package value within one unit in the last
    place (of the package's dtype) of s × the checkpoint's: a constant multiply the converter folded into the
    weights. None when no such factors exist, or when they are all 1 (no fold: then the tensor is simply not
    the checkpoint's). With fewer than two nonzero values per channel, one factor for the whole tensor."""
    if package.shape != checkpoint.shape or package.ndim < 1:
        return None
    p = np.moveaxis(package.astype(np.float64), axis, 0).reshape(package.shape[axis], -1)
    w = np.moveaxis(checkpoint.astype(np.float64), axis, 0).reshape(p.shape)
    ulp = np.moveaxis(np.spacing(np.abs(package)).astype(np.float64), axis, 0).reshape(p.shape)
    zero = w == 0
    if np.any(np.abs(p[zero]) > ulp[zero]):
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        ends = np.stack([(p - ulp) / w, (p + ulp) / w])
    low = np.where(zero, -np.inf, ends.min(axis=0)).max(axis=1)
    high = np.where(zero, np.inf, ends.max(axis=0)).min(axis=1)
    if (~zero).sum(axis=1).min() < 2:
        low, high = np.full_like(low, low.max()), np.full_like(high, high.min())
    if not np.all(low <= high) or not np.all(np.isfinite(low) & np.isfinite(high)):
        return None
    factors = (low + high) / 2
    if np.all(factors == 0) or np.all((low <= 1) & (1 <= high)):
        return None
    return factors


def used_parameters(net: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The parameters of the modules a forward pass on ``x`` calls (inactive multi-scale branches excluded)."""
    called: set[str] = set()
    run_with_hooks(net, x, [(module, lambda m, i, o, name=name: called.add(name))
                            for name, module in net.named_modules() if any(True for _ in module.parameters(recurse=False))])
    return {f"{module}.{name}" if module else name: p.detach() for module in sorted(called)
            for name, p in net.get_submodule(module).named_parameters(recurse=False)}


@dataclass
class ConstantsCheck:
    checked: int = 0  # checkpoint tensors found in the package
    folded: dict[str, str] = field(default_factory=dict)  # checkpoint tensor → the constants folded into it
    added: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # bias with constants added → ½ ulp
    missing: list[str] = field(default_factory=list)  # checkpoint tensors the package lacks (or altered)
    unexplained: list[str] = field(default_factory=list)  # package tensors that are no checkpoint tensor
    compressed: dict[str, float] = field(default_factory=dict)  # checkpoint tensor → relative L2 error

    def problems(self, compression: str) -> list[str]:
        found = [f"checkpoint tensor {k} is not in the package bit-exactly" for k in self.missing]
        found += [f"package constant {k} matches no checkpoint tensor" for k in self.unexplained]
        limit = COMPRESSED_WEIGHT_RTOL.get(compression, 0.0)
        found += [f"compressed {k} is {e:.3f} (relative) off the checkpoint, over {limit}"
                  for k, e in self.compressed.items() if e > limit]
        return found


def check_constants(function, params: dict[str, torch.Tensor], batchnorms: dict[str, np.ndarray] | None = None,
                    ) -> tuple[ConstantsCheck, dict[str, np.ndarray]]:
    """Match package weights to checkpoint tensors (``batchnorms``: ``batchnorm_factors`` of the network, for
    folds); also returns checkpoint name → the package's value."""
    result, package_values, owner = ConstantsCheck(), {}, {}
    weights = package_weights(function)
    by_bytes: dict[tuple, list[str]] = {}
    for var_name, (value, compressed) in weights.items():
        if not compressed:
            by_bytes.setdefault((value.dtype.str, value.size, value.tobytes()), []).append(var_name)
    pending: dict[str, np.ndarray] = {}
    for name, tensor in params.items():
        forms = [tensor.numpy()]
        if tensor.numel() > 1 and bool((tensor == tensor.flatten()[0]).all()):
            forms.append(tensor.numpy().reshape(-1)[:1])  # a tensor of one repeated value may be stored as a scalar
        hit = None
        for form in forms:
            for dtype in (np.float16, np.float32):
                value = form.astype(dtype)
                hit = by_bytes.get((value.dtype.str, value.size, value.tobytes()))
                if hit:
                    break
            if hit:
                break
        if hit:
            result.checked += 1
            owner.update((var, name) for var in hit if var not in owner)
            package_values[name] = np.broadcast_to(value, tensor.shape).copy()
        else:
            pending[name] = tensor.numpy()
    _match_folds(function, weights, owner, pending, package_values, batchnorms or {}, result)
    for var_name, (value, compressed) in weights.items():
        if var_name in owner:
            continue
        same_shape = [n for n, t in pending.items() if t.size == value.size]
        errors = {n: float(np.linalg.norm(value.astype(np.float64).ravel() - pending[n].ravel())
                           / max(np.linalg.norm(pending[n]), 1e-12)) for n in same_shape}
        best = min(errors, key=errors.get) if errors else None
        if compressed and best is not None:
            result.checked += 1
            result.compressed[best] = errors[best]
            package_values[best] = value.reshape(pending.pop(best).shape)
        else:
            result.unexplained.append(var_name)
    result.missing = sorted(pending)
    return result, package_values


def _match_folds(function, weights: dict[str, tuple[np.ndarray, bool]], owner: dict[str, str],
                 pending: dict[str, np.ndarray], package_values: dict[str, np.ndarray],
                 batchnorms: dict[str, np.ndarray], result: ConstantsCheck) -> None:
    """Layers the converter folded constants into. An unmatched weight that is one pending checkpoint tensor
    scaled per output channel (``scale_fold``; a BatchNorm whose γ/√(var+ε) are those factors is folded in with
    it); then the bias of every layer whose weight was found: scaled by the same factors, or with constants
    added (its values judged by the outputs: ``ConstantsCheck.added``). The twin gets the package's values
    divided by the factors, and keeps the checkpoint's bias where something was added to it."""
    for op_type, weight_var, bias_var in weighted_layers(function):
        if weight_var not in weights:
            continue
        name, factors, axis = owner.get(weight_var), None, 1 if op_type == "conv_transpose" else 0
        value, compressed = weights[weight_var]
        if name is None and not compressed:
            fits = {n: f for n, t in pending.items() if (f := scale_fold(value, t, axis)) is not None}
            if len(fits) != 1:
                continue
            (name, factors), = fits.items()
            package_values[name] = (value.astype(np.float64) / _along(factors, axis, value.ndim)).astype(np.float32)
            result.folded[name] = _factors_text(factors)
            owner[weight_var] = name
            del pending[name]
            for module, bn_factors in batchnorms.items():
                if bn_factors.shape == factors.shape and np.allclose(factors, bn_factors, rtol=1e-3):
                    for part in (f"{module}.weight", f"{module}.bias"):
                        if pending.pop(part, None) is not None:
                            result.folded[part] = f"BatchNorm folded into {name}"
        if name is None or bias_var is None or bias_var in owner or weights[bias_var][1]:
            continue
        bias_name, bias = name.rsplit(".", 1)[0] + ".bias", weights[bias_var][0]
        half_ulp = np.spacing(np.abs(bias)).astype(np.float64) / 2
        checkpoint = pending.pop(bias_name, None)
        if factors is not None and checkpoint is not None and np.all(
                np.abs(bias - _along(factors, 0, 1) * checkpoint) <= 2 * half_ulp):
            package_values[bias_name] = (bias.astype(np.float64) / factors).astype(np.float32)
            result.folded[bias_name] = _factors_text(factors)
        else:
            result.folded[bias_name] = "constants added" if checkpoint is not None else "constants added (no bias in " \
                                                                                        "the checkpoint)"
            if checkpoint is not None:
                result.added[bias_name] = half_ulp.reshape(checkpoint.shape)
        owner[bias_var] = bias_name


def _along(factors: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """``factors`` shaped to broadcast along ``axis`` of an ``ndim``-dimensional tensor."""
    shape = [1] * ndim
    shape[axis] = -1
    return factors.reshape(shape)


def _factors_text(factors: np.ndarray) -> str:
    """The fold's factors for people: ``×0.1``, or ``×0.42…1.6 per output channel``."""
    if np.allclose(factors, factors[0], rtol=1e-3):
        return f"×{float(factors[0]):.4g}"
    return f"×{float(factors.min()):.3g}…{float(factors.max()):.3g} per output channel"


def batchnorm_factors(net: nn.Module) -> dict[str, np.ndarray]:
    """γ/√(running var + ε) of each BatchNorm in ``net``: the factors a converter folds into the layer before it."""
    return {name: (m.weight.detach() / torch.sqrt(m.running_var + m.eps)).double().numpy()
            for name, m in net.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine
            and m.running_var is not None}


@dataclass
class CaseCheck:
    shape: tuple[int, ...]
    fp32_max_abs: float  # FP32 mode vs PyTorch with the package's weights, relative to max(1, max|ref|)
    fp16_psnr: float  # FP16 emulation vs PyTorch FP32 (compressed: with the package's weights)
    fp16_off_by_level_pct: float | None  # None: the output is not an image (random weights: peak > 2)
    fp16_psnr_vs_checkpoint: float  # FP16 emulation vs PyTorch FP32 with the checkpoint's own weights
    decisions_equal: bool | None  # None: the model has no data-dependent decision
    fp32_allowance: float = 0.0  # what half a unit in the last place of biases with constants added moves the output

    def problems(self) -> list[str]:
        found = []
        limit = FP32_MAX_ABS + self.fp32_allowance
        if not self.fp32_max_abs <= limit:
            shown = f"{limit:.2e}" if self.fp32_allowance else f"{limit:.0e}"
            found.append(f"FP32-mode output differs from PyTorch by {self.fp32_max_abs:.2e} > {shown}")
        if not self.fp16_psnr >= FP16_MIN_PSNR:
            found.append(f"FP16-emulated output is {self.fp16_psnr:.1f} dB from PyTorch < {FP16_MIN_PSNR:.0f} dB")
        if self.fp16_off_by_level_pct is not None and self.fp16_off_by_level_pct > FP16_MAX_OFF_BY_LEVEL:
            found.append(f"{self.fp16_off_by_level_pct:.3f}% of 8-bit values are off by more than one level")
        if self.decisions_equal is False:
            found.append("the gate decisions differ from PyTorch's")
        return found


def _with_weights(net: nn.Module, values: dict[str, np.ndarray]) -> nn.Module:
    twin = copy.deepcopy(net)
    with torch.no_grad():
        for name, value in values.items():
            twin.get_parameter(name).copy_(torch.from_numpy(value.astype(np.float32)))
    return twin


def _gate_decisions(net: nn.Module, x: torch.Tensor) -> np.ndarray | None:
    """PyTorch's per-image gate decisions (logit 1 > logit 0), if the network has a gate."""
    modules = dict(net.named_modules())
    gate = modules.get("gate", modules.get("net.gate"))
    if gate is None:
        return None
    seen = []
    run_with_hooks(net, x, [(gate, lambda m, i, o: seen.append(o[:, 1] > o[:, 0]))])
    return seen[0].numpy()


def check_case(function, net: nn.Module, twin: nn.Module, x: np.ndarray, image_io: bool, input_name: str,
               shifted: nn.Module | None = None) -> CaseCheck:
    """One input through both executor modes, against PyTorch (``twin``: the package's weights; ``shifted``: the
    twin with its biases that had constants added moved by half a unit in the last place, whose rounding before
    the fold no one can know: how far that moves the output is allowed on top of ``FP32_MAX_ABS``)."""
    feed = np.rint(x * 255).astype(np.float32) if image_io else x
    x_t = torch.from_numpy(feed / 255 if image_io else feed)
    unit = 255.0 if image_io else 1.0
    with torch.inference_mode():
        reference, reference_twin = net(x_t).numpy() / unit, twin(x_t).numpy() / unit
        moved = None if shifted is None else shifted(x_t).numpy() / unit
    is_gate = lambda op: op.op_type == "greater"  # noqa: E731
    outputs = {mode: MilExecutor(function, mode).run({input_name: feed}, keep=is_gate) for mode in ("fp32", "fp16")}
    out_name = function.outputs[0].name
    result = {mode: o[out_name].astype(np.float32) / unit for mode, o in outputs.items()}
    peak = max(1.0, float(np.abs(reference_twin).max()))
    fp16_vs_twin, fp16_vs_checkpoint = compare(result["fp16"], reference_twin), compare(result["fp16"], reference)
    decisions = _gate_decisions(net, x_t)
    equal = None
    if decisions is not None:
        gates = [[v.ravel() for k, v in o.items() if k != out_name] for o in outputs.values()]
        equal = all(len(g) == 1 and np.array_equal(g[0], decisions) for g in gates)
    levels = fp16_vs_twin.off_by_level_pct if peak <= IMAGE_PEAK else None
    allowance = 0.0 if moved is None else float(np.abs(moved - reference_twin).max() / peak)
    return CaseCheck(tuple(x.shape), float(np.abs(result["fp32"] - reference_twin).max() / peak),
                     fp16_vs_twin.psnr, levels, fp16_vs_checkpoint.psnr, equal, allowance)


@dataclass
class Verification:
    package: str
    compression: str
    constants: ConstantsCheck
    cases: dict[str, CaseCheck] = field(default_factory=dict)

    @property
    def problems(self) -> list[str]:
        found = self.constants.problems(self.compression)
        return found + [f"{name}: {p}" for name, case in self.cases.items() for p in case.problems()]

    @property
    def passed(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {"package": self.package, "passed": self.passed, "problems": self.problems,
                "compression": self.compression,
                "constants": {k: v for k, v in asdict(self.constants).items() if k != "added"},
                "cases": {name: asdict(case) for name, case in self.cases.items()}}


def verify_package(package: str | Path, net: nn.Module, inputs: dict[str, np.ndarray], compression: str = "none",
                   image_io: bool = False, input_name: str = "lr") -> Verification:
    """Every check above for ``package``, converted from ``net`` (the traced module: ``traceable(model)``). A bias
    taken for one with constants added counts as missing when the FP32-mode outputs differ."""
    _, function = load_program(package)
    probe = torch.from_numpy(next(iter(inputs.values())))
    constants, package_values = check_constants(function, used_parameters(net, probe), batchnorm_factors(net))
    twin = _with_weights(net, package_values)
    shifted = None
    if constants.added:
        shifted = _with_weights(twin, {name: twin.get_parameter(name).detach().double().numpy() + half_ulp
                                       for name, half_ulp in constants.added.items()})
    report = Verification(str(package), compression, constants)
    for name, x in inputs.items():
        report.cases[name] = check_case(function, net, twin, x, image_io, input_name, shifted)
    if any(not case.fp32_max_abs <= FP32_MAX_ABS + case.fp32_allowance for case in report.cases.values()):
        for bias in constants.added:  # the outputs do not bear the fold out: a bias that differs, nothing more
            del constants.folded[bias]
        constants.missing = sorted([*constants.missing, *constants.added])
        constants.added = {}
    return report


def executor_infer(package: str | Path, mode: str = "fp16", image_io: bool = False, input_name: str = "lr"):
    """``infer(x)`` (float32 N×C×H×W in [0, 1]) through the package's program on the NumPy executor, one image
    at a time (the package's batch is 1)."""
    _, function = load_program(package)
    executor, out_name = MilExecutor(function, mode), function.outputs[0].name
    unit = 255.0 if image_io else 1.0

    def infer(x: np.ndarray) -> np.ndarray:
        outs = [executor.run({input_name: np.rint(xi[None] * 255) if image_io else xi[None]})[out_name] for xi in x]
        return np.concatenate(outs).astype(np.float32) / unit

    return infer


def macos_predict(package: str | Path, x: np.ndarray, input_name: str = "lr") -> np.ndarray:
    """The package run by Core ML itself (macOS only; metadata not needed): float32 1×C×H×W in, output out."""
    from ...runtime.sessions.coreml import load_mlmodel, predict

    return predict(load_mlmodel(package), input_name, x)
