"""What every deployable artifact session shares: srdeploy metadata, shape bounds, the input check
(``runtime.opener.open_artifact`` picks the backend for a file)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np

from .errors import SrDeployError, command
from .global_gate import GateSplit, no_split

REQUIRED_METADATA = ("model", "scale", "colour", "shape_bounds", "export_config")
PREFIX = "srdeploy."


def srdeploy_metadata(entries: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The ``srdeploy.*`` (key, value) pairs of an artifact's metadata, keys without the prefix."""
    return {k.removeprefix(PREFIX): v for k, v in entries if k.startswith(PREFIX)}


MAX_SCALE = 16
MAX_SIDE = 1 << 16  # pixels: a shape bound beyond this is no export's
MAX_RADIUS = 4096


def metadata_problem(metadata: dict[str, str]) -> str | None:
    """What makes an artifact's srdeploy metadata unusable (a crafted or damaged value), in a few words; None if
    the values every session reads are sane: scale, colour, shape bounds, receptive radius."""
    def shown(key: str) -> str:
        value = metadata[key]
        return repr(value if len(value) <= 40 else value[:40] + "…")

    scale = metadata["scale"]
    if not (scale.isdigit() and 1 <= int(scale) <= MAX_SCALE):
        return f"scale {shown('scale')}: not an integer from 1 to {MAX_SCALE}"
    if metadata["colour"] not in ("y", "rgb"):
        return f"colour {shown('colour')}: not y or rgb"
    try:
        bounds = json.loads(metadata["shape_bounds"])
        low, high = bounds["min"], bounds["max"]
        sane = all(len(b) == 4 and all(type(v) is int and 1 <= v <= MAX_SIDE for v in b) for b in (low, high)) and \
            all(a <= b for a, b in zip(low, high)) and low[1] == high[1]
    except (ValueError, TypeError, KeyError, RecursionError):  # RecursionError: [[[… a thousand deep
        sane = False
    if not sane:
        return f"shape_bounds {shown('shape_bounds')}: not N×C×H×W from 1 to {MAX_SIDE}, min ≤ max, one C"
    try:
        radius = json.loads(metadata["export_config"])["receptive_radius"]
    except (ValueError, TypeError, KeyError, RecursionError):
        radius = None
    if not (type(radius) is int and 0 <= radius <= MAX_RADIUS):
        return f"export_config {shown('export_config')}: receptive_radius not an integer from 0 to {MAX_RADIUS}"
    return None


class ArtifactSession:
    """Base of the backends: ``metadata`` (srdeploy keys without prefix), ``bounds`` (min/max N×C×H×W),
    ``path``; subclasses implement ``infer``."""

    path: Path
    metadata: dict[str, str]
    bounds: dict[str, list[int]]
    runtime_name: str  # the runtime in words, for messages
    in_flight: int = 1  # requests worth running at once (more in a runtime's throughput mode)

    def check_metadata(self) -> None:
        missing = [k for k in REQUIRED_METADATA if k not in self.metadata]
        if missing or "receptive_radius" not in self.metadata.get("export_config", ""):
            raise SrDeployError(
                f"artifact {self.path} lacks srdeploy metadata ({', '.join(missing) or 'receptive_radius'}): "
                f"it was not exported by this srdeploy version; re-export it with {command('export')}"
            )
        problem = metadata_problem(self.metadata)
        if problem:
            raise SrDeployError(f"artifact {self.path} has unusable srdeploy metadata ({problem}): re-export it with "
                                f"{command('export')}")

    @property
    def channels(self) -> int:
        return int(self.bounds["min"][1])

    @property
    def scale(self) -> int:
        return int(self.metadata["scale"])

    @property
    def shape_bounds(self) -> dict[str, list[int]]:
        return self.bounds

    @property
    def colour(self) -> str:
        return self.metadata["colour"]

    @property
    def receptive_radius(self) -> int:
        return int(json.loads(self.metadata["export_config"])["receptive_radius"])

    @property
    def whole_image(self) -> bool:
        """An output pixel depends on the whole image (measured at export): never tiled."""
        return bool(json.loads(self.metadata["export_config"]).get("whole_image", False))

    @property
    def has_global_gate(self) -> bool:
        """Whether an output pixel depends on the whole image, through a gate on a global average (DSRNet)."""
        return self.metadata.get("global_gate") == "true"

    def gate_split(self) -> GateSplit:
        """The artifact's gate cut out (``runtime.global_gate``), for tiling a globally gated network."""
        raise no_split(self.path.name, self.runtime_name)

    def accepts(self, shape: tuple[int, ...]) -> bool:
        low, high = self.bounds["min"], self.bounds["max"]
        return len(shape) == 4 and all(lo <= s <= hi for lo, s, hi in zip(low, shape, high))

    def check_input(self, x: np.ndarray) -> None:
        """A one-line error when ``x`` is not N×C×H×W within the artifact's bounds."""
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise SrDeployError(
                f"input of shape {x.shape} does not fit {self.path.name}: it expects N×{self.channels}×H×W"
            )
        low, high = self.bounds["min"], self.bounds["max"]
        for axis, label in ((0, "batch"), (2, "height"), (3, "width")):
            if x.shape[axis] < low[axis]:
                raise SrDeployError(
                    f"input {label} {x.shape[axis]} is below the artifact's minimum {low[axis]} "
                    f"(bounds {low[axis]}…{high[axis]}): the image is too small for this artifact"
                )
            if x.shape[axis] > high[axis]:
                raise SrDeployError(
                    f"input {label} {x.shape[axis]} is above the artifact's maximum {high[axis]} "
                    f"(bounds {low[axis]}…{high[axis]}): tile the image (upscale --tile) or split the batch"
                )


def refuse_external_data(data: bytes, path: Path) -> None:
    """One line if the ONNX file ``data`` keeps any tensor outside itself ("external data", which a crafted file
    can point anywhere: ``../``, absolute paths, links; a sealed digest is a checksum, not a signature): srdeploy's
    artifacts hold every weight inside, so such a file is refused before any runtime reads it. Parsed with the
    onnx package; without it, ONNX Runtime refuses any external path of a model given as bytes, which is how
    ``OnnxSession`` opens it (onnxruntime 1.32: ``../``, absolute and plain names alike, measured)."""
    try:
        import onnx
    except ImportError:
        return
    try:
        model = onnx.load_model_from_string(data)
    except Exception:  # noqa: BLE001 - the runtime that opens it next says what is wrong, in its words
        return
    outside = next((t for t in _tensors(model.graph) if t.data_location == onnx.TensorProto.EXTERNAL), None)
    if outside is not None:
        location = next((e.value for e in outside.external_data if e.key == "location"), "?")[:80]
        raise SrDeployError(f"artifact {path} keeps tensor {outside.name[:40]!r} outside the file (external data "
                            f"{location!r}): srdeploy's artifacts hold their weights inside; refused unread, "
                            f"re-export it with {command('export')}")


def _tensors(graph):
    """Every tensor of an ONNX graph: initializers, sparse ones, node attributes, subgraphs'."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        for attribute in node.attribute:
            yield from ([attribute.t] if attribute.HasField("t") else [])
            yield from attribute.tensors
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from _tensors(sub)
