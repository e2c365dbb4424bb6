"""``load(name, scale, weights)``: build a zoo network and fill it with a checkpoint, exactly.

Checkpoint keys are mapped onto the clean module names by the architecture's key maps (one per public
layout); the layout is recognised from the keys. Anything that does not fit — another model's
checkpoint, another scale, missing or extra tensors — is refused with expected vs found.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import checkpoints
from .registry import (ARCHITECTURES, Architecture, ExportConfig, architecture, check_scale, checkpoint_by_sha256,
                       default_checkpoint)
from ..runtime.errors import SrDeployError


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded network is and how it exports: written into every artifact made from it."""

    name: str
    scale: int
    colour: str  # "y" (one channel) or "rgb"
    layout: str  # the checkpoint's key layout
    checkpoint: str  # path of the file that was loaded
    checkpoint_sha256: str
    options: dict[str, Any]
    export: ExportConfig
    eval_rounding: str = "truncate"  # how the reference evaluation makes 8 bits of the output
    title: str = ""  # for people: the network's name and where it is published
    paper: str = ""
    # a network of your own: {"file" or "module", "name", "args", "checkpoint"}, where parity finds it; None: the zoo
    source: dict[str, Any] | None = None

    @property
    def channels(self) -> int:
        return 1 if self.colour == "y" else 3


@dataclass(frozen=True)
class SrModel:
    """A network ready to export: the eval-mode ``network`` and its ``info``. Calling it runs the network."""

    network: nn.Module
    info: ModelInfo

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    @property
    def has_global_gate(self) -> bool:
        """Whether an output pixel depends on the whole image through a gate (DSRNet)."""
        return bool(getattr(self.network, "has_global_gate", False))


def rename_keys(
    state: dict[str, torch.Tensor], key_map: dict[str, str], unused: tuple[str, ...]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Apply a layout's prefix map (longest prefix wins), dropping its known-unused keys.

    Returns the renamed tensors and the keys no prefix of the layout covers (kept unrenamed).
    """
    prefixes = sorted(key_map, key=len, reverse=True)
    renamed, uncovered = {}, []
    for key, value in state.items():
        if key in unused:
            continue
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is None:
            uncovered.append(key)
            renamed[key] = value
        else:
            renamed[key_map[prefix] + key[len(prefix):]] = value
    return renamed, uncovered


def _match_layout(
    arch: Architecture, scale: int, state: dict, expected: set[str] | None = None
) -> tuple[str, dict] | None:
    """The first layout that covers every key of ``state`` and yields exactly the model's keys."""
    expected = expected if expected is not None else set(arch.build(scale).state_dict())
    for layout, key_map in arch.layouts.items():
        renamed, uncovered = rename_keys(state, dict(key_map(scale)), arch.unused_keys)
        if not uncovered and set(renamed) == expected:
            return layout, renamed
    return None


def _fits(arch: Architecture, scale: int, state: dict) -> bool:
    matched = _match_layout(arch, scale, state)
    if matched is None:
        return False
    own = arch.build(scale).state_dict()
    return all(tensor.shape == own[key].shape for key, tensor in matched[1].items())


def _describe_mismatch(arch: Architecture, scale: int, state: dict, expected: set[str], path: Path) -> str:
    for other in ARCHITECTURES.values():
        if other.name != arch.name and any(_fits(other, s, state) for s in other.scales):
            return f"checkpoint {path} is a {other.name} checkpoint, not {arch.name}: pass --model {other.name}"
    layout = next(iter(arch.layouts))
    renamed, _ = rename_keys(state, dict(arch.layouts[layout](scale)), arch.unused_keys)
    missing, unexpected = sorted(expected - set(renamed)), sorted(set(renamed) - expected)
    return (
        f"checkpoint {path} does not fit {arch.name} ×{scale}: "
        f"missing {len(missing)} tensors (e.g. {missing[:2]}), unexpected {len(unexpected)} (e.g. {unexpected[:2]}); "
        "pass a checkpoint of this model"
    )


def _scale_hint(arch: Architecture, state: dict) -> str:
    fitting = [s for s in arch.scales if _fits(arch, s, state)]
    return f" (it looks like a ×{fitting[0]} checkpoint: pass --scale {fitting[0]})" if fitting else ""


def apply_checkpoint(model: nn.Module, arch: Architecture, scale: int, state: dict, path: Path) -> str:
    """Load ``state`` into ``model`` exactly (strict, same shapes, fp16 tensors cast to fp32); return the layout."""
    own = model.state_dict()
    matched = _match_layout(arch, scale, state, set(own))
    if matched is None:
        raise SrDeployError(_describe_mismatch(arch, scale, state, set(own), path))
    layout, renamed = matched
    for key, tensor in renamed.items():
        if tensor.shape != own[key].shape:
            raise SrDeployError(
                f"checkpoint {path} does not fit {arch.name} ×{scale}: {key} has shape {tuple(tensor.shape)}, "
                f"expected {tuple(own[key].shape)}{_scale_hint(arch, state)}"
            )
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in renamed.items()}, strict=True)
    return layout


def _check_options(arch: Architecture, options: dict[str, Any]) -> None:
    for key, value in options.items():
        if key not in arch.options:
            raise SrDeployError(f"{arch.name} has no option {key!r} (options: {', '.join(arch.options) or 'none'})")
        if value not in arch.options[key]:
            raise SrDeployError(f"{arch.name} option {key}={value!r} is invalid: choose one of {arch.options[key]}")


def load(name: str, scale: int, weights: str | Path | None = None, **options: Any) -> SrModel:
    """A network of the zoo with its checkpoint loaded (``.network``, eval mode) and what it is (``.info``).

    The forward pass takes float32 N×C×H×W in [0, 1] (C = 3 RGB, or 1 = Y for FSRCNN) and returns
    N×C×(scale·H)×(scale·W). ``weights`` is a checkpoint path, or None for the official checkpoint
    (downloaded and verified on first use). ``options``: architecture options, e.g. ``gate="branch0"``.
    """
    arch = architecture(name)
    check_scale(arch, scale)
    _check_options(arch, options)
    if weights is None:
        official = default_checkpoint(name, scale)
        if official is None:
            raise SrDeployError(
                f"no public checkpoint of {name} ×{scale} exists: pass --weights PATH (python API: weights=PATH)"
            )
        path = checkpoints.resolve(official)
    else:
        path = Path(weights)
    state = checkpoints.read_state_dict(path)
    sha256 = checkpoints.sha256_of(path)
    known = checkpoint_by_sha256(sha256)
    if known is not None and (known.model, known.scale) != (name, scale):
        raise SrDeployError(
            f"checkpoint {path} is the official {known.model} ×{known.scale} checkpoint, not {name} ×{scale}: "
            f"pass --model {known.model} --scale {known.scale} or another checkpoint"
        )
    model = arch.build(scale, **options)
    layout = apply_checkpoint(model, arch, scale, state, path)
    model.eval().requires_grad_(False)
    info = ModelInfo(name, scale, arch.colour, layout, str(path), sha256, dict(options), arch.export, arch.eval_rounding,
                     arch.title, arch.paper)
    return SrModel(model, info)
