"""INT8 for phone CPUs: PT2E quantization for XNNPACK that carries over the project's own INT8 search.

The search (``export.precision.int8_search_for``: the ONNX targets' search, on the same calibration crops) chooses
activation equalization, weight rounding (nearest or GPTQ) and the layers kept in float. Here:

1. Its equalized weights, with its weight codes, go back into the PyTorch network; the equalized network alone is
   checked against the original (equalization is exact in float). With dynamic activations each convolution is
   quantized on the search's own per-channel weight scales (``search_scales``), so the codes survive unchanged
   also where a layer is split or in sub-pixel form (XNNPACK's observer would take max |w| / 127 of the part).
2. ``XNNPACKQuantizer`` (weights int8 per output channel, activations int8 per tensor with a zero point) quantizes
   every convolution except the layers the search keeps float and those under 1 % of the MACs (first and last
   layers, mean shifts: the search's own rule). Activations are static first: min/max ranges over the calibration
   crops (XNNPACK's default histogram observer clips the rare large activations that edges make: LESRCNN ×2 with
   its cheap layers float lost 0.71 dB with it, 0.20 with min/max, before the search's weights), int8 between
   layers. Where that misses the target, dynamic: each convolution quantizes its input on the input's own range
   at run time and writes float, which no calibrated range can clip (docs/executorch.md has both, with speed).
   Centring is not carried over (the zero points do that job). Float channels are, where the layer that makes
   them is a convolution and an activation (FSRCNN): ``split_float_channels`` computes them as separate
   convolutions, so no channel slice reaches XNNPACK (ExecuTorch 1.5.1 crashes on one once the input size varies:
   a segmentation fault, or "Propagating input shapes failed" with a gather). The parts run slower than whole
   layers, so the split is made only where whole layers miss the gate's limit on the calibration crops; a reader
   the form does not fit is handled whole, and the report lists those channels.
3. Float fallback, as in the search: while the calibration drop (PT2E's reference graph run by PyTorch, which
   ExecuTorch matches to ~0.002 dB) is over the target, the layer most sensitive per MAC in the search's own
   measurement goes to float, never taking the INT8 share of convolution MACs below ``INT8_MIN_MAC_FRACTION``.

A network whose gate reads the whole image (DSRNet) is quantized as its parts: the gate's features and the two
branches are PT2E programs of their own (calibrated on every crop), the margin stays float, and the drop is that
of the parts run as the runtime runs them (``parts_runner``). The gate itself (held-out crops through ExecuTorch's
runtime) is ``pte_export``'s.
"""
from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from onnx import numpy_helper
from torch import nn

from ..gate_modules import GateMargin
from ..precision import INT8_MIN_MAC_FRACTION, INT8_SEARCH_CROPS, INT8_TARGET_SHARE, int8_search_for
from ..accuracy_gate import DEFAULT_MAX_DROP, limit_for
from ..quant import int8_channels, int8_graph
from ...models.loading import SrModel
from ...models.torch_runner import TorchRunner
from ...runtime.errors import SrDeployError
from ...runtime.global_gate import one_decision, parts_split
from ...runtime.precision import Precision
from ...runtime.progress import Stages
from ...runtime.quality import pooled_psnr

CHEAP_SHARE = 0.01  # layers under this share of the convolution MACs stay float (the search's rule)
EQUALIZED_MAX_ABS = 1e-4  # the equalized network against the original, relative to the output's peak
# Float fallback steps at most: each calibrates again (LESRCNN ×2: 10 s). Measured on LESRCNN ×2, six steps down to
# 81.5 % INT8 MACs moved the calibration drop by +0.015 dB at most: a float layer still reads the int8 output of
# the layer before it, and the error is spread over all 34 quantized tensors (docs/executorch.md).
FALLBACK_STEPS = 3
# Static first (int8 between layers: LESRCNN ×2 0.40× FP32's time), dynamic where static misses the target
# (LESRCNN ×2 0.11 → 0.024 dB, FSRCNN ×2 2.4 → 0.21 dB on the calibration crops; docs/executorch.md)
ACTIVATION_SCHEMES = ("static", "dynamic")


@dataclass
class Int8Report:
    """What the INT8 program is and what it cost before the gate."""

    kept_float: list[str] = field(default_factory=list)  # modules left in float
    int8_mac_fraction: float = 0.0
    calibration_drop_db: float = 0.0
    activations: str = "static"  # static: calibrated min/max ranges; dynamic: each input's own range at run time
    drops_by_activations: dict[str, float] = field(default_factory=dict)  # calibration drop of each scheme tried
    search: dict = field(default_factory=dict)  # what the ONNX search chose, and what did not carry over


def float_layers(modules: set[str]):
    """A PT2E quantizer that marks the convolutions of ``modules`` (and their submodules) as done, so that
    ``XNNPACKQuantizer`` after it in a ``ComposableQuantizer`` leaves them float (XNNPACKQuantizer's own
    ``set_module_name(name, None)`` raises "not supported yet")."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, Quantizer

    class FloatLayers(Quantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            for node in model.graph.nodes:
                if node.op == "call_function" and is_convolution(node) and modules & module_names(node):
                    node.meta["quantization_annotation"] = QuantizationAnnotation(_annotated=True)
            return model

        def validate(self, model: torch.fx.GraphModule) -> None:
            pass

    return FloatLayers()


def is_convolution(node: torch.fx.Node) -> bool:
    return node.target in (torch.ops.aten.conv2d.default, torch.ops.aten.conv_transpose2d.input)


def module_names(node: torch.fx.Node) -> set[str]:
    """The module paths a traced node was called in ("", "upsample", "upsample.branches.x2.0"), with the paths of
    the modules those lie in (a graph module calls "map.0.out0_in1" without entering "map.0")."""
    paths = {path for path, _ in node.meta.get("nn_module_stack", {}).values()}
    return paths | set().union(*map(prefixes, paths - {""}))


def carried_weights(network: nn.Module, variant, probe: np.ndarray) -> nn.Module:
    """A copy of ``network`` with the search variant's equalized weights (checked against ``network`` on
    ``probe``), then its weight codes (``codes × scale``) in place of the float weights."""
    graph = variant.graph
    equalized = {w.name: numpy_helper.to_array(w) for w in graph.graph.initializer}
    carried = copy.deepcopy(network).eval()
    state = carried.state_dict()
    for name in state:
        if name in equalized and tuple(state[name].shape) == equalized[name].shape:
            state[name] = torch.from_numpy(equalized[name].copy())
    carried.load_state_dict(state)
    with torch.no_grad():
        expected, found = (n(torch.from_numpy(probe)).numpy() for n in (network, carried))
    error = float(np.abs(found - expected).max() / max(1.0, float(np.abs(expected).max())))
    if not error <= EQUALIZED_MAX_ABS:
        raise SrDeployError(f"the INT8 search's equalized weights do not map back onto the PyTorch network ({error:.1e} "
                            "away): this is a bug, please report it; export --precision fp32 meanwhile")
    axes = {layer.weight: int8_graph.WEIGHT_AXIS[layer.op] for layer in int8_graph.layers(graph)}
    for name, (codes, scale) in (variant.codes or {}).items():
        if name in state:
            shape = [1] * codes.ndim
            shape[axes[name]] = -1
            state[name] = torch.from_numpy(codes.astype(np.float32) * scale.reshape(shape))
    carried.load_state_dict(state)
    return carried


def convolution_macs(network: nn.Module, channels: int, size: int = 64) -> dict[str, int]:
    """Multiply-accumulates per ``size``² input of each convolution module (a module called twice counts twice)."""
    macs: dict[str, int] = {}
    hooks = []
    for name, module in network.named_modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            def count(module, inputs, output, name=name):  # every output (Conv) or input (ConvTranspose) pixel
                pixels = (output if isinstance(module, nn.Conv2d) else inputs[0]).shape[2:].numel()
                macs[name] = macs.get(name, 0) + pixels * module.weight.numel()
            hooks.append(module.register_forward_hook(count))
    with torch.no_grad():
        network(torch.rand(1, channels, size, size))
    for hook in hooks:
        hook.remove()
    return macs


def unshared_weights(model: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Each convolution its own copy of a weight several read (LESRCNN's upsampler runs on two paths):
    XNNPACKQuantizer annotates a shared weight for its first reader only, and XNNPACK then refuses the second
    convolution (int8 input, float weight: "xnn_status_invalid_parameter")."""
    for node in list(model.graph.nodes):
        if node.op != "get_attr":
            continue
        readers = [user for user in node.users if user.op == "call_function" and is_convolution(user)]
        for index, reader in enumerate(readers[1:], 1):
            copy_name = f"{node.target.replace('.', '_')}_reader{index}"
            value = model.get_parameter(node.target) if node.target in dict(model.named_parameters()) else \
                model.get_buffer(node.target)
            model.register_buffer(copy_name, value.detach().clone())
            with model.graph.inserting_before(reader):
                copied = model.graph.get_attr(copy_name)
            copied.meta = dict(node.meta)
            reader.replace_input_with(node, copied)
    model.graph.lint()
    model.recompile()
    return model


def quantized(model: torch.fx.GraphModule, float_modules: set[str], batch: np.ndarray, activations: str,
              weight_scales: Callable[[torch.fx.Node], torch.Tensor | None] | None = None) -> torch.fx.GraphModule:
    """``model`` (a ``torch.export`` module) with PT2E INT8 for XNNPACK, calibrated on ``batch`` image by image;
    ``activations``: ``"static"`` (calibrated ranges, int8 between layers) or ``"dynamic"`` (each convolution's
    input quantized at run time on its own range, float outputs). ``weight_scales(convolution)``: the per-output-
    channel weight scales to quantize it with (dynamic only; None: XNNPACK's own, max |w| / 127)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils import QuantizationConfig
    from torchao.quantization.pt2e import MinMaxObserver
    from torchao.quantization.pt2e.quantizer import ComposableQuantizer, QuantizationSpec

    default = get_symmetric_quantization_config(is_per_channel=True)
    static = QuantizationSpec(dtype=torch.int8, quant_min=-128, quant_max=127, qscheme=torch.per_tensor_affine,
                              is_dynamic=False, observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
    config = QuantizationConfig(static, static, default.weight, default.bias) if activations == "static" else \
        get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)
    given = [given_weight_scales(weight_scales)] if weight_scales and activations == "dynamic" else []
    quantizer = ComposableQuantizer([float_layers(float_modules), XNNPACKQuantizer().set_global(config), *given])
    return calibrated(copy.deepcopy(model), quantizer, batch)


def given_weight_scales(weight_scales: Callable[[torch.fx.Node], torch.Tensor | None]):
    """A PT2E quantizer that runs after ``XNNPACKQuantizer`` and puts, in each convolution it quantized whose
    scales ``weight_scales`` knows, int8 weights on exactly those per-channel scales (the rest of its annotation,
    what XNNPACK takes, is kept)."""
    from torchao.quantization.pt2e import PerChannelMinMaxObserver
    from torchao.quantization.pt2e.quantizer import QuantizationSpec, Quantizer

    class GivenScales(PerChannelMinMaxObserver):
        def __init__(self, scales: torch.Tensor, **kwargs):
            super().__init__(**kwargs)
            self.register_buffer("given", scales.clone())

        def calculate_qparams(self):
            return self.given, torch.zeros(len(self.given), dtype=torch.int64)

    class WeightScales(Quantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            for node in model.graph.nodes:
                annotation = node.meta.get("quantization_annotation")
                if (node.op != "call_function" or not is_convolution(node) or annotation is None
                        or node.args[1] not in annotation.input_qspec_map or (scales := weight_scales(node)) is None):
                    continue
                measured = annotation.input_qspec_map[node.args[1]]
                annotation.input_qspec_map[node.args[1]] = QuantizationSpec(
                    dtype=measured.dtype, quant_min=measured.quant_min, quant_max=measured.quant_max,
                    qscheme=measured.qscheme, ch_axis=measured.ch_axis, is_dynamic=False,
                    observer_or_fake_quant_ctr=GivenScales.with_args(scales=scales))
            return model

        def validate(self, model: torch.fx.GraphModule) -> None:
            pass

    return WeightScales()


def calibrated(model: torch.fx.GraphModule, quantizer, batch: np.ndarray) -> torch.fx.GraphModule:
    """``model`` prepared for ``quantizer`` (PT2E), its observers run on ``batch`` image by image, converted."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    prepared = prepare_pt2e(model, quantizer)
    with torch.no_grad():
        for image in batch:
            prepared(torch.from_numpy(image[None]))
    return convert_pt2e(prepared)


Parts = dict[str, torch.fx.GraphModule]  # "forward", or a whole-image gate's features and branches


def int8_module(net: SrModel, deployed: Callable[[nn.Module], nn.Module], exported: Callable, calib: str | None,
                max_drop: float | None, progress: bool) -> tuple[Parts, Int8Report]:
    """The INT8 modules of ``net``'s network whose calibration drop meets the search's target, and its report:
    ``forward``, or for a network whose gate reads the whole image its ``gate_features``, ``branch0`` and
    ``branch1`` (the gate's margin stays float: ``pte_export.margin_program``). ``deployed(network)``: the form
    that is lowered (sub-pixel deconvolutions); ``exported(module)``: its ``torch.export`` module."""
    info = net.info
    stage = Stages(f"int8 executorch {info.name} ×{info.scale}", progress)
    plan, variant, pairs, batch = int8_search_for(net, calib, max_drop, progress, stage)
    stage(f"search: equalization {plan.alpha}, {plan.rounding} rounding, {len(plan.kept_float)} layer(s) float, "
          f"{plan.calibration_drop_db:.3f} dB on the calibration crops; carrying it over to XNNPACK")
    whole, channels = float_layers_of(plan)
    carried = carried_weights(net.network, variant, batch[:1])
    limit = limit_for(DEFAULT_MAX_DROP, Precision.INT8, max_drop)
    target = INT8_TARGET_SHARE * limit
    search_pairs = pairs[:INT8_SEARCH_CROPS]
    reference = pooled_psnr(TorchRunner(net.network).infer, search_pairs, info.scale, info.colour, info.eval_rounding)
    margin = TorchRunner(GateMargin(carried)).infer if net.has_global_gate else None
    score = lambda converted: reference - pooled_psnr(parts_runner(converted, margin), search_pairs,  # noqa: E731
                                                      info.scale, info.colour, info.eval_rounding)
    layers = convolution_macs(carried, info.channels)
    total = sum(layers.values())
    cheap = {name for name, count in layers.items() if count < CHEAP_SHARE * total}

    def carry(form: ChannelSplit) -> tuple[float, Parts, set[str], str, dict[str, float], Callable]:
        """The lowest calibration drop of ``form`` (activation schemes in turn, then float fallback): (drop, the
        converted parts, float modules, scheme, each scheme's drop, the INT8 MAC share of a float set)."""
        if net.has_global_gate:
            module = {"gate_features": exported(features_only(form.network)),
                      **{f"branch{b}": exported(deployed(form.network.with_branch(b))) for b in (0, 1)}}
        else:
            module = {"forward": exported(deployed(form.network))}
        macs = convolution_macs(form.network, info.channels)  # split layers: per part, the same in all
        fraction = lambda modules: 1 - sum(c for m, c in macs.items() if modules & prefixes(m)) / total  # noqa: E731
        float_modules = whole | form.float_readers | cheap
        layer_macs = {m: sum(c for n, c in macs.items() if m in prefixes(n))
                      for m in map(module_of, plan.sensitivity_db)}
        sensitivity = {module_of(key): db for key, db in plan.sensitivity_db.items() if layer_macs[module_of(key)]}
        order = sorted((m for m in sensitivity if m not in float_modules), reverse=True,
                       key=lambda m: sensitivity[m] / max(layer_macs[m] / total, 0.01))
        best, drops = None, {}
        for scheme in ACTIVATION_SCHEMES:
            found = fallback(module, set(float_modules), order, batch, scheme, score, fraction, target, stage,
                             search_scales(variant, form.origins))
            drops[scheme] = round(found[0], 4)
            if best is None or found[0] < best[0]:
                best = (*found, scheme)
            if found[0] <= target:
                break
        return (*best, drops, fraction)

    form = whole_layers(carried, channels)
    drop, converted, float_modules, scheme, drops, fraction = carry(form)
    if drop > limit and channels and not net.has_global_gate:  # a gated network's parts are its methods: not traced
        split = split_float_channels(carried, channels)
        if split.float_readers:  # many small convolutions: slower, so only where whole layers miss the limit
            stage(f"{drop:.3f} dB with the float channels' layers whole: splitting the float channels out")
            found = carry(split)
            if found[0] < drop:
                form, (drop, converted, float_modules, scheme, drops, fraction) = split, found
    report = Int8Report(activations=scheme, drops_by_activations=drops, calibration_drop_db=round(drop, 4),
                        kept_float=sorted(float_modules), int8_mac_fraction=fraction(float_modules),
                        search={"alpha": plan.alpha, "rounding": plan.rounding, "kept_float": plan.kept_float,
                                "calibration_drop_db": round(plan.calibration_drop_db, 4),
                                "float_channels": {n: channels[n] for n in channels if n not in form.left},
                                "not_carried": {"centred": plan.centred, "float_channels": form.left}})
    return converted, report


def module_of(key: str) -> str:
    """The module of a search layer key (``weight@activation``, split parts included): ``map.0``."""
    return key.split("@")[0].split(".weight")[0]


def prefixes(name: str) -> set[str]:
    """``a.b.c`` → {``a``, ``a.b``, ``a.b.c``}: the modules a submodule lies in."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def float_layers_of(plan) -> tuple[set[str], dict[str, list[int]]]:
    """The search's float decisions by module: whole layers, and the input channels of split layers."""
    whole, channels = set(), {}
    for key in plan.kept_float:
        weight, tensor = key.split("@")
        if weight.endswith(int8_channels.FLOAT):
            channels[module_of(key)] = plan.float_channels[tensor.removesuffix(int8_channels.FLOAT)]
        else:  # a whole layer, or the INT8 part of a split one (then the whole layer is float)
            whole.add(module_of(key))
    return whole, {m: c for m, c in channels.items() if m not in whole}


ACTIVATIONS = (nn.PReLU, nn.ReLU)  # per-channel or pointwise: what may sit between a split producer and its reader


@dataclass
class ChannelSplit:
    """A network with the search's float channels split out (``split_float_channels``)."""

    network: nn.Module
    origins: dict[str, tuple[str, list[int] | None]]  # convolution path → (its weight's name, output channels)
    float_readers: set[str]  # the convolutions that read float channels
    left: dict[str, list[int]]  # float channels that did not fit the form: their layers are handled whole


def whole_layers(network: nn.Module, channels: dict[str, list[int]]) -> ChannelSplit:
    """``network`` unsplit: each convolution its own origin (its weight, all channels), ``channels`` left to their
    layers whole."""
    origins = {name: (f"{name}.weight", None) for name, module in network.named_modules()
               if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d))}
    return ChannelSplit(network, origins, set(), channels)


def split_float_channels(network: nn.Module, channels: dict[str, list[int]]) -> ChannelSplit:
    """The search's float channels without channel slices (XNNPACK crashes on those once the input size varies):
    where a convolution reads ``channels[name]`` in float from ``producer → PReLU/ReLU → it``, the producer is
    split over its output channels (int8 ones, float ones), the activation with it, and the reader over its input
    channels, ``reader(x) = reader_int8(x_int8) + reader_float(x_float)`` (exact in float; a chain of such layers
    splits each); the network is a graph module where anything was split."""
    unsplit = whole_layers(network, channels)
    if not channels:
        return unsplit
    try:
        graph = torch.fx.symbolic_trace(copy.deepcopy(network))
    except Exception:  # noqa: BLE001 - control flow symbolic tracing cannot follow: nothing split
        return unsplit
    modules = dict(graph.named_modules())
    nodes = {node.target: node for node in graph.graph.nodes if node.op == "call_module"}
    readers, producers, left = {}, {}, {}
    for name, floats in channels.items():
        reader = nodes.get(name)
        activation = reader.args[0] if reader is not None and reader.args else None
        producer = activation.args[0] if isinstance(activation, torch.fx.Node) and activation.args else None
        if (isinstance(producer, torch.fx.Node) and producer.op == activation.op == "call_module"
                and isinstance(modules[activation.target], ACTIVATIONS) and len(activation.users) == 1
                and type(modules[producer.target]) is nn.Conv2d and len(producer.users) == 1
                and isinstance(modules[name], (nn.Conv2d, nn.ConvTranspose2d)) and modules[name].groups == 1
                and modules[producer.target].groups == 1):
            readers[name], producers[producer.target] = sorted(floats), sorted(floats)
        else:
            left[name] = floats
    if not readers:
        return unsplit
    origins: dict[str, tuple[str, list[int] | None]] = {}
    float_readers: set[str] = set()
    parts: dict[torch.fx.Node, list[torch.fx.Node]] = {}  # a split activation → its int8 and float parts
    for node in list(graph.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], (nn.Conv2d, nn.ConvTranspose2d)):
            continue
        layer = modules[node.target]
        transposed = isinstance(layer, nn.ConvTranspose2d)
        ins = _channel_parts(readers.get(node.target), layer.in_channels)
        outs = _channel_parts(producers.get(node.target), layer.out_channels)
        if len(ins) == len(outs) == 1:
            origins[node.target] = (f"{node.target}.weight", None)
            continue
        container, sums = nn.Module(), []
        graph.add_submodule(node.target, container)  # in place of the layer
        inputs = parts[node.args[0]] if len(ins) == 2 else [node.args[0]]
        with graph.graph.inserting_before(node):
            for o, out_channels in enumerate(outs):
                total = None
                for i, in_channels in enumerate(ins):
                    piece = _piece(layer, out_channels, in_channels, bias=i == 0)
                    container.add_module(f"out{o}_in{i}", piece)
                    origins[f"{node.target}.out{o}_in{i}"] = (f"{node.target}.weight",
                                                              None if transposed else out_channels)
                    if i == 1:
                        float_readers.add(f"{node.target}.out{o}_in{i}")
                    term = graph.graph.call_module(f"{node.target}.out{o}_in{i}", (inputs[i],))
                    total = term if total is None else graph.graph.call_function(operator.add, (total, term))
                sums.append(total)
        if len(outs) == 1:
            node.replace_all_uses_with(sums[0])
        else:
            activation = next(iter(node.users))
            function, split = modules[activation.target], nn.Module()
            graph.add_submodule(activation.target, split)
            with graph.graph.inserting_before(activation):
                for o, (out_channels, total) in enumerate(zip(outs, sums)):
                    split.add_module(f"out{o}", _activation_part(function, out_channels))
                    part = graph.graph.call_module(f"{activation.target}.out{o}", (total,))
                    parts.setdefault(activation, []).append(part)
    graph.graph.eliminate_dead_code()
    graph.delete_all_unused_submodules()
    graph.recompile()
    return ChannelSplit(graph, origins, float_readers, left)


def _channel_parts(floats: list[int] | None, count: int) -> list[list[int]]:
    """[int8 channels, float channels], or [all] where none is float."""
    if not floats:
        return [list(range(count))]
    return [[c for c in range(count) if c not in floats], floats]


def _piece(layer: nn.Module, out_channels: list[int], in_channels: list[int], bias: bool) -> nn.Module:
    """The part of a convolution from ``in_channels`` to ``out_channels`` (a transposed one keeps all outputs)."""
    piece = copy.deepcopy(layer)
    weight = layer.weight.detach()
    weight = weight[in_channels] if isinstance(layer, nn.ConvTranspose2d) else weight[out_channels][:, in_channels]
    piece.weight = nn.Parameter(weight.clone())
    piece.in_channels = len(in_channels)
    piece.out_channels = weight.shape[1 if isinstance(layer, nn.ConvTranspose2d) else 0]
    if layer.bias is not None:
        kept = layer.bias.detach() if isinstance(layer, nn.ConvTranspose2d) else layer.bias.detach()[out_channels]
        piece.bias = nn.Parameter(kept.clone()) if bias else None
    return piece


def _activation_part(function: nn.Module, channels: list[int]) -> nn.Module:
    """The activation of ``channels`` alone (a per-channel PReLU's slopes of those channels)."""
    if isinstance(function, nn.PReLU) and function.num_parameters > 1:
        part = nn.PReLU(len(channels))
        part.weight = nn.Parameter(function.weight.detach()[channels].clone())
        return part
    return copy.deepcopy(function)


def search_scales(variant, origins: dict[str, tuple[str, list[int] | None]]
                  ) -> Callable[[torch.fx.Node], torch.Tensor | None]:
    """For a traced convolution: the search's per-channel weight scales of the weight it came from (its
    ``origins`` entry, found by module path; a sub-pixel form's phases share their channel's scale), or None."""
    codes = variant.codes or {}

    def scales(node: torch.fx.Node) -> torch.Tensor | None:
        paths = sorted((p for p in module_names(node) if p in origins), key=len)
        if not paths or origins[paths[-1]][0] not in codes:
            return None
        name, channels = origins[paths[-1]]
        scale = np.asarray(codes[name][1], dtype=np.float32).reshape(-1)
        scale = scale[channels] if channels is not None and len(scale) > 1 else scale
        outputs = node.args[1].meta["val"].shape[1 if node.target == torch.ops.aten.conv_transpose2d.input else 0]
        return torch.from_numpy(np.repeat(scale, outputs // len(scale))) if outputs % len(scale) == 0 else None
    return scales


def features_only(network: nn.Module) -> nn.Module:
    """A copy of a whole-image-gated ``network`` whose forward is its gate's features, its modules named as in
    ``network`` (the search's float layers are found by those names)."""
    features = copy.deepcopy(network).eval()
    features.forward = features.gate_features
    return features


def fallback(module: Parts, float_modules: set[str], order: list[str], batch: np.ndarray,
             activations: str, score: Callable, fraction: Callable, target: float, stage: Callable,
             weight_scales: Callable[[torch.fx.Node], torch.Tensor | None] | None = None
             ) -> tuple[float, Parts, set[str]]:
    """PT2E INT8 of ``module`` with ``float_modules`` float (weights on ``weight_scales``: ``quantized``), then
    layers of ``order`` to float while the calibration drop is over ``target`` (at most ``FALLBACK_STEPS``, INT8
    share ≥ ``INT8_MIN_MAC_FRACTION``): the lowest (drop, module, float modules) seen."""
    best = None
    for _ in range(FALLBACK_STEPS + 1):
        stage(f"PT2E INT8, {activations} activations, {len(float_modules)} layer(s) float "
              f"({fraction(float_modules):.1%} of MACs INT8): calibrating on {len(batch)} crops")
        converted = {name: quantized(part, float_modules, batch, activations, weight_scales)
                     for name, part in module.items()}
        drop = score(converted)
        stage(f"{drop:.3f} dB on the calibration crops (target {target:.3f})")
        if best is None or drop < best[0]:
            best = drop, converted, float_modules
        following = next((m for m in order if m not in float_modules
                          and fraction(float_modules | {m}) >= INT8_MIN_MAC_FRACTION), None)
        if drop <= target or following is None:
            break
        float_modules = float_modules | {following}
    return best


def batch_runner(module):
    """``module`` (N=1) over a batch, image by image, as numpy."""
    def infer(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return np.concatenate([module(torch.from_numpy(image[None])).numpy() for image in batch])
    return infer


def parts_runner(parts: Parts, margin: Callable | None) -> Callable[[np.ndarray], np.ndarray]:
    """The network the converted ``parts`` compute, as numpy: ``forward``, or features → their mean → the float
    ``margin`` → the chosen branch, as the runtime runs the program's gate parts."""
    if "forward" in parts:
        return batch_runner(parts["forward"])
    run = {name: batch_runner(part) for name, part in parts.items()}
    return one_decision(parts_split({**run, "gate_margin": margin}))
