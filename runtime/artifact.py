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
