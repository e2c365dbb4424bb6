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

This module cuts ONNX graphs (ONNX Runtime); ``runtime.openvino_backend`` cuts OpenVINO models the same way.
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


def split_onnx(proto) -> tuple[object, object, object]:
    """(features, decide, forced) ONNX graphs of a globally gated network; SrDeployError if it has no gate."""
    pools = [n for n in proto.graph.node if n.op_type in POOL_OPS]
    decisions = [n for n in proto.graph.node if n.op_type == DECISION_OP]
    if len(pools) != 1 or len(decisions) != 1:
        raise SrDeployError(f"the graph has {len(pools)} global average and {len(decisions)} {DECISION_OP} nodes, "
                            f"not the one global gate srdeploy can cut: re-export it with {command('export')}")
    image, output = proto.graph.input[0].name, proto.graph.output[0].name
    pool, decision = pools[0], decisions[0].output[0]
    return (_cut(proto, [image], [pool.input[0]]),
            _cut(proto, [pool.output[0]], [decision]),
            _cut(proto, [image, decision], [output]))


def onnxruntime_split(proto, options, providers: list[str]) -> GateSplit:
    """A GateSplit of ONNX Runtime sessions (``options``, ``providers`` as the artifact's own session)."""
    import onnxruntime as ort

    sessions = [ort.InferenceSession(part.SerializeToString(), options, providers=providers)
                for part in split_onnx(proto)]
    features, decide, forced = sessions
    mean_input = decide.get_inputs()[0]
    mean_dtype = np.float16 if mean_input.type == "tensor(float16)" else np.float32
    mean_rank = len(mean_input.shape)  # N×C, or N×C×1×1 where the average keeps its dimensions
    image_name = forced.get_inputs()[0].name
    decision_name = forced.get_inputs()[1].name

    def features_of(x: np.ndarray) -> np.ndarray:
        return features.run(None, {features.get_inputs()[0].name: x})[0]

    def decide_on(mean: np.ndarray) -> np.ndarray:
        return decide.run(None, {mean_input.name: mean.astype(mean_dtype).reshape(*mean.shape, *[1] * (mean_rank - 2))})[0]

    def forced_run(x: np.ndarray, chosen: np.ndarray) -> np.ndarray:
        return forced.run(None, {image_name: x, decision_name: chosen.astype(bool)})[0]

    return GateSplit(features_of, decide_on, forced_run)
