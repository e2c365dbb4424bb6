"""A NumPy executor for the MIL programs inside srdeploy's Core ML packages: the Linux half of checking a
conversion, since coremltools runs a model only on macOS.

It reads the program of the *saved* ``.mlpackage`` (coremltools' own milproto loader and weight reader) and
evaluates it op by op. Two modes:

- ``"fp32"``: every tensor in float32 (the package's FP16 constants are widened exactly, casts to FP16 are
  skipped). Against PyTorch run with the same FP16-rounded weights, this isolates the *conversion*: wrong
  ops, layouts, paddings, scale factors or colour order show up as errors far above float32 noise.
- ``"fp16"``: per-op FP16 emulation. Each op computes in float32 from its FP16 inputs and rounds its
  result to FP16, as the program's types say (convolutions accumulate in float32 and round once). This
  estimates what FP16 storage costs; it cannot reproduce the Core ML compiler's fusions or the Neural
  Engine's and GPU's own accumulation order (see the README).

Op semantics follow the MIL op reference (coremltools.converters.mil.mil.ops.defs); only the ops that the
zoo's programs contain are implemented, and any other op is refused by name, never skipped.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ...runtime.errors import SrDeployError

MODES = ("fp32", "fp16")
OpFn = Callable[..., np.ndarray]
OPS: dict[str, OpFn] = {}


def _op(*names: str) -> Callable[[OpFn], OpFn]:
    def register(fn: OpFn) -> OpFn:
        for name in names:
            OPS[name] = fn
        return fn
    return register


def _pads(pad_type: str, pad: np.ndarray | None, kernel: tuple[int, int], dilations, strides, size) -> list[int]:
    """[top, bottom, left, right] for MIL's pad types ("custom" reads ``pad``)."""
    if pad_type == "valid":
        return [0, 0, 0, 0]
    if pad_type == "custom":
        return [int(p) for p in pad]
    if pad_type in ("same", "same_lower"):
        out = []
        for k, d, s, n in zip(kernel, dilations, strides, size):
            total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
            small, large = total // 2, total - total // 2
            out += [large, small] if pad_type == "same_lower" else [small, large]
        return out
    raise SrDeployError(f"conv pad_type {pad_type!r} is not supported by the MIL verifier")


@_op("conv")
def conv(x, weight, bias=None, strides=(1, 1), pad_type="valid", pad=None, dilations=(1, 1), groups=1):
    """2-D cross-correlation, weight O×(C/groups)×kH×kW, ``pad`` = [top, bottom, left, right]."""
    kh, kw = weight.shape[2:]
    (sh, sw), (dh, dw) = tuple(int(s) for s in strides), tuple(int(d) for d in dilations)
    top, bottom, left, right = _pads(str(pad_type), pad, (kh, kw), (dh, dw), (sh, sw), x.shape[2:])
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    windows = sliding_window_view(x, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]
    groups = int(groups)
    cin, cout = x.shape[1] // groups, weight.shape[0] // groups
    parts = [
        np.tensordot(windows[:, g * cin:(g + 1) * cin], weight[g * cout:(g + 1) * cout], axes=([1, 4, 5], [1, 2, 3]))
        for g in range(groups)
    ]
    out = np.concatenate(parts, axis=-1).transpose(0, 3, 1, 2)
    return out if bias is None else out + bias.reshape(1, -1, 1, 1)


@_op("conv_transpose")
def conv_transpose(x, weight, bias=None, strides=(1, 1), pad_type="valid", pad=None, dilations=(1, 1), groups=1,
                   output_shape=None):
    """Transposed convolution, weight C×(O/groups)×kH×kW (PyTorch's layout): every input pixel scatters
    its kernel into the output at stride steps; ``pad`` then trims [top, bottom, left, right]."""
    if int(groups) != 1 or tuple(int(d) for d in dilations) != (1, 1):
        raise SrDeployError("conv_transpose with groups or dilation is not supported by the MIL verifier")
    (sh, sw), (kh, kw) = tuple(int(s) for s in strides), weight.shape[2:]
    n, _, h, w = x.shape
    taps = np.tensordot(x, weight, axes=([1], [0]))  # N×H×W×O×kH×kW
    full = np.zeros((n, weight.shape[1], (h - 1) * sh + kh, (w - 1) * sw + kw), dtype=taps.dtype)
    for i in range(kh):
        for j in range(kw):
            full[:, :, i:i + (h - 1) * sh + 1:sh, j:j + (w - 1) * sw + 1:sw] += taps[..., i, j].transpose(0, 3, 1, 2)
    top, bottom, left, right = [0, 0, 0, 0] if str(pad_type) == "valid" else [int(p) for p in pad]
    out = full[:, :, top:full.shape[2] - bottom, left:full.shape[3] - right]
    if output_shape is not None:
        out = out[:, :, :int(output_shape[-2]), :int(output_shape[-1])]
    return out if bias is None else out + bias.reshape(1, -1, 1, 1)


@_op("crop")
def crop(x, crop_height, crop_width):
    """Trim [top, bottom] rows and [left, right] columns."""
    (t, b), (left, r) = (int(v) for v in crop_height), (int(v) for v in crop_width)
    return x[..., t:x.shape[-2] - b, left:x.shape[-1] - r]


@_op("relu")
def relu(x):
    return np.maximum(x, 0)


@_op("prelu")
def prelu(x, alpha):
    """x where x ≥ 0, alpha[c]·x elsewhere (per channel, axis 1)."""
    return np.where(x >= 0, x, x * alpha.reshape(1, -1, 1, 1))


@_op("leaky_relu")
def leaky_relu(x, alpha=0.01):
    """x where x ≥ 0, alpha·x elsewhere (one alpha: a PReLU whose slopes are all equal converts to it)."""
    return np.where(x >= 0, x, x * alpha)


@_op("tanh")
def tanh(x):
    return np.tanh(x)


@_op("sigmoid")
def sigmoid(x):
    return 1 / (1 + np.exp(-x))


@_op("upsample_nearest_neighbor")
def upsample_nearest_neighbor(x, scale_factor_height=1, scale_factor_width=1):
    """Each pixel repeated ``scale_factor_height`` × ``scale_factor_width`` times (integer factors only)."""
    factors = (float(scale_factor_height), float(scale_factor_width))
    if not all(f.is_integer() and f >= 1 for f in factors):
        raise SrDeployError(f"upsample_nearest_neighbor by {factors} is not supported by the MIL verifier (integers only)")
    return x.repeat(int(factors[0]), axis=2).repeat(int(factors[1]), axis=3)


@_op("clip")
def clip(x, alpha, beta):
    return np.clip(x, alpha, beta)


@_op("add")
def add(x, y):
    return x + y


@_op("sub")
def sub(x, y):
    return x - y


@_op("mul")
def mul(x, y):
    return x * y


@_op("greater")
def greater(x, y):
    return x > y


@_op("select")
def select(cond, a, b):
    """a where cond, else b (broadcasting)."""
    return np.where(cond, a, b)


@_op("concat")
def concat(values, axis, interleave=False):
    if bool(interleave):
        raise SrDeployError("concat with interleave is not supported by the MIL verifier")
    return np.concatenate(values, axis=int(axis))


@_op("split")
def split(x, axis, num_splits=None, split_sizes=None):
    """A tuple of parts along ``axis``: ``split_sizes`` or ``num_splits`` equal parts."""
    axis = int(axis)
    if split_sizes is None:
        return tuple(np.split(x, int(num_splits), axis=axis))
    return tuple(np.split(x, np.cumsum([int(s) for s in split_sizes])[:-1], axis=axis))


@_op("pixel_shuffle")
def pixel_shuffle(x, upscale_factor):
    """N×(C·r²)×H×W → N×C×(H·r)×(W·r), channel c·r² + i·r + j → pixel (h·r + i, w·r + j) (PyTorch's order)."""
    r = int(upscale_factor)
    n, c, h, w = x.shape
    return x.reshape(n, c // (r * r), r, r, h, w).transpose(0, 1, 4, 2, 5, 3).reshape(n, c // (r * r), h * r, w * r)


@_op("reverse")
def reverse(x, axes=None):
    return np.flip(x, axis=None if axes is None else tuple(int(a) for a in axes))


@_op("reduce_mean")
def reduce_mean(x, axes=None, keep_dims=False):
    return np.mean(x, axis=None if axes is None else tuple(int(a) for a in axes), keepdims=bool(keep_dims))


@_op("reshape")
def reshape(x, shape):
    return x.reshape([int(s) for s in shape])


@_op("linear")
def linear(x, weight, bias=None):
    """x · weightᵀ + bias, weight O×I."""
    out = x @ weight.T
    return out if bias is None else out + bias


@_op("slice_by_index")
def slice_by_index(x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    rank = x.ndim
    stride = [1] * rank if stride is None else [int(s) for s in stride]
    begin_mask = [False] * rank if begin_mask is None else list(begin_mask)
    end_mask = [False] * rank if end_mask is None else list(end_mask)
    index = tuple(
        slice(None if bm else int(b), None if em else int(e), s)
        for b, e, s, bm, em in zip(begin, end, stride, begin_mask, end_mask)
    )
    out = x[index]
    if squeeze_mask is not None and any(squeeze_mask):
        out = out.squeeze(axis=tuple(i for i, sq in enumerate(squeeze_mask) if sq))
    return out


@_op("cast")
def cast(x, dtype):
    return x.astype({"fp16": np.float16, "fp32": np.float32, "int32": np.int32, "bool": bool}[str(dtype)])


def _numpy_dtype(var) -> type | None:
    """The NumPy float type a MIL var holds (None for non-float vars)."""
    from coremltools.converters.mil.mil import types

    dtype = var.dtype
    if types.is_tensor(var.sym_type):
        dtype = var.sym_type.get_primitive()
    if dtype == types.fp16:
        return np.float16
    if dtype == types.fp32:
        return np.float32
    return None


class MilExecutor:
    """Runs the ``main`` function of a loaded MIL program on NumPy arrays in ``"fp32"`` or ``"fp16"`` mode."""

    def __init__(self, function, mode: str = "fp16"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.function = function
        self.mode = mode
        unsupported = sorted({op.op_type for op in function.operations
                              if op.op_type not in OPS and op.op_type != "const" and not op.op_type.startswith("constexpr_")})
        if unsupported:
            raise SrDeployError(f"the MIL verifier does not implement {', '.join(unsupported)}: "
                                "the package cannot be checked on Linux (extend export/coreml/mil_numpy.py)")

    def _float(self, value: np.ndarray, var) -> np.ndarray:
        """A float value in this mode: float32 in fp32 mode, the var's own type (fp16/fp32) in fp16 mode."""
        if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
            return value
        if self.mode == "fp32":
            return value.astype(np.float32, copy=False)
        return value.astype(_numpy_dtype(var) or value.dtype, copy=False)

    def run(self, inputs: dict[str, np.ndarray], keep: Callable[[object], bool] | None = None) -> dict[str, np.ndarray]:
        """The function's outputs by name, plus the outputs of every op for which ``keep(op)`` is true."""
        env: dict[str, np.ndarray] = {name: self._float(np.asarray(inputs[name]), var)
                                      for name, var in self.function.inputs.items()}
        kept: dict[str, np.ndarray] = {}
        for op in self.function.operations:
            if op.op_type == "const" or op.op_type.startswith("constexpr_"):
                value = op.outputs[0].val if op.op_type == "const" else op.materialized_val_inference()
                env[op.outputs[0].name] = self._float(np.asarray(value), op.outputs[0])
                continue
            args = {}
            for key, var in op.inputs.items():
                if isinstance(var, (list, tuple)):
                    args[key] = [env[v.name] if v.name in env else v.val for v in var]
                else:
                    args[key] = env[var.name] if var.name in env else var.val
            if op.op_type == "cast" and self.mode == "fp32" and str(args["dtype"]) == "fp16":
                args["dtype"] = "fp32"
            result = OPS[op.op_type](**{k: self._compute(v) for k, v in args.items()})
            results = result if isinstance(result, tuple) else (result,)
            for var, value in zip(op.outputs, results):
                env[var.name] = self._float(np.asarray(value), var)
            if keep is not None and keep(op):
                kept[op.outputs[0].name] = env[op.outputs[0].name]
        outputs = {var.name: env[var.name] for var in self.function.outputs}
        return {**outputs, **kept}

    @staticmethod
    def _compute(value):
        """FP16 operands are computed in float32 (and the result rounded back by ``run``)."""
        if isinstance(value, np.ndarray) and value.dtype == np.float16:
            return value.astype(np.float32)
        if isinstance(value, list):
            return [MilExecutor._compute(v) for v in value]
        return value
