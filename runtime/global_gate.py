"""Networks whose gate looks at the whole image (DSRNet), cut in three so that tiles can share one decision.

Such a network computes features F, averages F over the image, and picks a branch per image from that mean.
A tile alone would average only its own window and could pick another branch than the whole image. So the
graph is cut at the average and at the decision:

- ``features(x)``: the input → F, the tensor the gate averages (N×C×h×w);
- ``decide(mean)``: the mean of F (N×C) → the decision, bool N (True: branch 1);
- ``forced(x, decision)``: the input and a decision → the output, the gate not evaluated.

A mean is a sum: F at a tile's core pixel equals F of the whole image when the tile's context is at least
F's receptive radius, so summing F over the tile cores gives the whole image's mean exactly (up to float
rounding), and every tile then runs the branch the whole-image run takes (``runtime.tiling``).

This module cuts ONNX graphs into ``gate_parts`` that each take one input and give one output, with no ``If``
(ONNX Runtime runs them; TensorRT builds each as an engine); ``runtime.sessions.openvino`` cuts OpenVINO models
at the same two places.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import SrDeployError, command

POOL_OPS = ("GlobalAveragePool", "ReduceMean")  # the global average (over H and W) the gate reads
DECISION_OP = "Greater"  # logit of branch 1 > logit of branch 0, per image


@dataclass(frozen=True)
class GateSplit:
    """The three parts of a globally gated network (see the module docstring), each on numpy arrays."""

    features: Callable[[np.ndarray], np.ndarray]
    decide: Callable[[np.ndarray], np.ndarray]
    forced: Callable[[np.ndarray, np.ndarray], np.ndarray]


def no_split(path: object, backend: str) -> SrDeployError:
    """The one-line refusal of a backend that cannot take the gate's decision from outside."""
    return SrDeployError(
        f"{path}: this network's gate looks at the whole image, and {backend} cannot run it with one decision "
        "for all tiles, so tiles could take other branches than the whole image: upscale with --tile 0 "
        "(whole image), or tile with the .onnx artifact (ONNX Runtime or --backend openvino)"
    )


def _subgraph_names(node) -> set[str]:
    """Every tensor name a node's subgraphs (``If`` branches) refer to, recursively."""
    import onnx

    names: set[str] = set()
    for attribute in node.attribute:
        graphs = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)
        for graph in graphs:
            for inner in graph.node:
                names.update(inner.input)
                names.update(_subgraph_names(inner))
    return names


def _cut(proto, inputs: list[str], outputs: list[str]):
    """The part of ``proto`` that computes ``outputs`` from ``inputs``: nodes, weights, types; no metadata."""
    import onnx

    typed = {v.name: v for v in [*proto.graph.input, *proto.graph.value_info, *proto.graph.output]}
    if not all(name in typed for name in [*inputs, *outputs]):
        proto = onnx.shape_inference.infer_shapes(proto)
        typed = {v.name: v for v in [*proto.graph.input, *proto.graph.value_info, *proto.graph.output]}
    needed, nodes = set(outputs), []
    for node in reversed(proto.graph.node):
        if any(o in needed for o in node.output) and not set(node.output) & set(inputs):
            nodes.append(node)
            needed.update(node.input)
            needed.update(_subgraph_names(node))
    graph = onnx.helper.make_graph(
        list(reversed(nodes)), "srdeploy_gate_part",
        [typed[name] for name in inputs], [typed[name] for name in outputs],
        [w for w in proto.graph.initializer if w.name in needed],
    )
    return onnx.helper.make_model(graph, opset_imports=proto.opset_import, ir_version=proto.ir_version)


def _only(proto, ops: tuple[str, ...]):
    found = [n for n in proto.graph.node if n.op_type in ops]
    if len(found) != 1:
        raise SrDeployError(f"the graph has {len(found)} {'/'.join(ops)} nodes, not the one global gate srdeploy "
                            f"can cut: re-export it with {command('export')}")
    return found[0]


def _gate_margin(proto):
    """mean (N×C×1×1) → logit of branch 1 − logit of branch 0 (N): > 0 exactly where ``Greater`` is true
    (a − b of two finite floats is 0 only when they are equal)."""
    import onnx
    from onnx import helper

    pool, greater = _only(proto, POOL_OPS), _only(proto, (DECISION_OP,))
    part = _cut(proto, [pool.output[0]], list(greater.input))
    graph = part.graph
    mean = graph.input[0]
    if len(mean.type.tensor_type.shape.dim) == 2:  # the average dropped H and W: take N×C×1×1 all the same
        graph.node.insert(0, helper.make_node("Flatten", ["gate_mean"], [mean.name], axis=1))
        four_d = helper.make_tensor_value_info("gate_mean", mean.type.tensor_type.elem_type, None)
        del graph.input[:]
        graph.input.append(four_d)
    graph.node.append(helper.make_node("Sub", list(greater.input), ["gate_margin"]))
    margin = onnx.ValueInfoProto(name="gate_margin", type=graph.output[0].type)  # the logits' type and shape
    del graph.output[:]
    graph.output.append(margin)
    onnx.checker.check_model(part)
    return part


def _fold_ifs(proto, value: np.ndarray, keep_decision: bool):
    """``proto`` with each ``If`` that follows from the gate's decision replaced by the nodes of the branch it takes
    when the decision is ``value`` (a constant batch). The decision itself becomes that constant, or with
    ``keep_decision`` stays computed from the image (for a branch that reads it, as a per-image select does)."""
    import onnx
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    probe = onnx.ModelProto.FromString(proto.SerializeToString())
    decision = _only(probe, (DECISION_OP,)).output[0]
    for node in probe.graph.node:
        if decision in node.output:
            node.CopyFrom(helper.make_node("Constant", [], [decision], value=numpy_helper.from_array(value)))
    result = onnx.ModelProto.FromString(proto.SerializeToString()) if keep_decision else probe
    while ifs := [n for n in result.graph.node if n.op_type == "If"]:
        node = ifs[0]
        try:
            condition = bool(ReferenceEvaluator(_cut(probe, [], [node.input[0]])).run(None, {})[0])
        except Exception as exc:  # noqa: BLE001 - the condition reads more than the decision
            raise SrDeployError(f"the If node {node.name!r} does not follow from the gate's decision alone "
                                f"({str(exc).splitlines()[0][:120]}): srdeploy cannot cut this network's gate") from None
        for model in {id(m): m for m in (result, probe)}.values():
            graph = model.graph
            at = next(i for i, n in enumerate(graph.node) if n.op_type == "If" and n.output[0] == node.output[0])
            taken = graph.node[at]
            branch = next(a.g for a in taken.attribute if a.name == ("then_branch" if condition else "else_branch"))
            inlined = [*branch.node, *(helper.make_node("Identity", [inner.name], [outer])
                                       for inner, outer in zip(branch.output, taken.output))]
            nodes = [*graph.node[:at], *inlined, *graph.node[at + 1:]]
            del graph.node[:]
            graph.node.extend(nodes)
            present = {t.name for t in graph.initializer}
            graph.initializer.extend(t for t in branch.initializer if t.name not in present)
    part = _cut(result, [result.graph.input[0].name], [result.graph.output[0].name])
    onnx.checker.check_model(part)
    return part


def _decided(proto, value: bool):
    """``proto`` with the gate's decision fixed to ``value`` for every image: image → output, no gate, no ``If``."""
    return _fold_ifs(proto, np.array([value]), keep_decision=False)


def select_form(proto):
    """``proto`` without ``If``: both branches computed and each image's output selected by its own decision (the
    path the graph takes for a batch whose images decide differently), the same outputs as the ``If`` graph in one
    static graph. OpenVINO runs it faster than the ``If``, whose boundaries break its fusions (DSRNet ×2 INT8,
    256×256, AVX2: 0.53× ONNX Runtime FP32 against 0.66×). Metadata kept."""
    folded = _fold_ifs(proto, np.array([True, False]), keep_decision=True)
    folded.metadata_props.extend(proto.metadata_props)
    return folded


GATE_PARTS = ("gate_features", "gate_margin", "branch0", "branch1")


def gate_parts(proto) -> dict[str, object]:
    """The ONNX graphs a runtime runs to tile a globally gated network, each one input → one output, no ``If``:
    ``gate_features`` (image → F), ``gate_margin`` (mean of F, N×C×1×1 → N, > 0: branch 1) and ``branch0`` /
    ``branch1`` (image → output with the decision fixed). The parts keep the artifact's metadata.
    SrDeployError if the graph has no global gate to cut."""
    pool = _only(proto, POOL_OPS)
    image = proto.graph.input[0].name
    parts = {"gate_features": _cut(proto, [image], [pool.input[0]]), "gate_margin": _gate_margin(proto),
             "branch0": _decided(proto, False), "branch1": _decided(proto, True)}
    for name, part in parts.items():
        part.metadata_props.extend(proto.metadata_props)
        part.metadata_props.add(key="srdeploy.gate_part", value=name)
    return parts


def parts_split(run: dict[str, Callable[[np.ndarray], np.ndarray]]) -> GateSplit:
    """A GateSplit from a runtime's sessions of the four ``gate_parts`` (each numpy → numpy, float32 out)."""

    def decide(mean: np.ndarray) -> np.ndarray:
        return run["gate_margin"](mean.reshape(*mean.shape[:2], 1, 1)).reshape(len(mean)) > 0

    def forced(x: np.ndarray, chosen: np.ndarray) -> np.ndarray:
        chosen = np.asarray(chosen, dtype=bool).reshape(len(x))
        if chosen.all() or not chosen.any():
            return run[f"branch{int(chosen[0])}"](x)
        return np.concatenate([run[f"branch{int(c)}"](x[i:i + 1]) for i, c in enumerate(chosen)])

    return GateSplit(run["gate_features"], decide, forced)


def one_decision(split: GateSplit) -> Callable[[np.ndarray], np.ndarray]:
    """The network run as tiles run it, in one piece: features → their mean → decision → the chosen branch
    (what a runtime's parts must compute to equal the whole network; checked at export and on the device)."""
    return lambda x: split.forced(x, split.decide(split.features(x).mean(axis=(2, 3), dtype=np.float64)))


def onnxruntime_split(proto, options, providers: list[str]) -> GateSplit:
    """A GateSplit of ONNX Runtime sessions of the ``gate_parts`` (``options``, ``providers`` as the artifact's)."""
    import onnxruntime as ort

    def session(part) -> Callable[[np.ndarray], np.ndarray]:
        loaded = ort.InferenceSession(part.SerializeToString(), options, providers=providers)
        given = loaded.get_inputs()[0]
        dtype = np.float16 if given.type == "tensor(float16)" else np.float32
        return lambda x: loaded.run(None, {given.name: np.ascontiguousarray(x, dtype=dtype)})[0].astype(np.float32)

    return parts_split({name: session(part) for name, part in gate_parts(proto).items()})
