"""Networks of your own: ``--model FILE.py:NAME`` or ``--model package.module:NAME`` (a class or a factory), with
``--weights CHECKPOINT`` and ``--model-args '{"scale": 2}'``.

``load_model`` is the one door for every command: a zoo name goes to ``loading.load``, anything with a colon is
imported here, built with its arguments, filled from its checkpoint (strict, ``weights_only=True``, the usual
wrappers unwrapped) and measured (``measure``): the export configuration the zoo writes by hand is derived.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from . import checkpoints
from .loading import ModelInfo, SrModel
from .measure import measure
from .registry import ExportConfig, checkpoint_by_sha256
from ..runtime.errors import SrDeployError

SHOWN = 3  # offending keys named in a mismatch message


def origin(source: dict[str, Any]) -> str:
    """Where a network of your own comes from (``ModelInfo.source``): its file, or its module."""
    return source.get("file") or source["module"]


def parse_args(text: str | dict | None) -> dict[str, Any]:
    """``--model-args``: a JSON object of keyword arguments."""
    if text is None or isinstance(text, dict):
        return dict(text or {})
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SrDeployError(f"--model-args {text!r} is not JSON ({exc.msg}): write e.g. '{{\"scale\": 2}}'") from None
    if not isinstance(value, dict):
        raise SrDeployError(f"--model-args {text!r} must be a JSON object of keyword arguments, e.g. '{{\"scale\": 2}}'")
    return value


def _import_file(path: Path, spec: str):
    if not path.is_file():
        raise SrDeployError(f"--model {spec}: {path} does not exist: pass FILE.py:NAME with an existing file")
    name = f"srdeploy_own_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's file may raise anything at import
        del sys.modules[name]
        raise SrDeployError(f"--model {spec}: importing {path} failed ({type(exc).__name__}: {exc})") from None
    return module


def import_factory(spec: str) -> tuple[Callable[..., nn.Module], dict[str, str]]:
    """The class or factory ``spec`` names, and where it came from ({"file" or "module", "name"})."""
    where, _, name = spec.rpartition(":")
    if not where or not name.isidentifier():
        raise SrDeployError(f"--model {spec!r}: write FILE.py:NAME or package.module:NAME (NAME a class or function)")
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where).expanduser().resolve()
        module, source = _import_file(path, spec), {"file": str(path)}
    else:
        try:
            module = importlib.import_module(where)
        except Exception as exc:  # noqa: BLE001 - ImportError, or anything the module raises at import
            raise SrDeployError(f"--model {spec}: cannot import {where} ({type(exc).__name__}: {exc}): is it "
                                "installed or on PYTHONPATH?") from None
        source = {"module": where}
    factory = getattr(module, name, None)
    if not callable(factory):
        found = [n for n, v in vars(module).items()
                 if inspect.isclass(v) and issubclass(v, nn.Module) and v.__module__ == module.__name__]
        raise SrDeployError(f"--model {spec}: {where} has no class or function {name} "
                            f"(its nn.Modules: {', '.join(found) or 'none'})")
    return factory, {**source, "name": name}


def build(factory: Callable[..., nn.Module], name: str, args: dict[str, Any]) -> nn.Module:
    """``factory(**args)``, with a one-line error for arguments that do not fit its signature."""
    try:
        inspect.signature(factory).bind(**args)
    except TypeError as exc:
        raise SrDeployError(f"{name}({', '.join(f'{k}={v!r}' for k, v in args.items())}): {exc}: pass its arguments "
                            "as --model-args '{\"NAME\": VALUE, ...}'") from None
    except ValueError:  # a builtin without a signature: let the call speak
        pass
    try:
        network = factory(**args)
    except Exception as exc:  # noqa: BLE001 - the user's constructor
        raise SrDeployError(f"{name}(**{args}) raised {type(exc).__name__}: {exc}") from None
    if not isinstance(network, nn.Module):
        raise SrDeployError(f"{name}(...) returned {type(network).__name__}, not a torch.nn.Module")
    return network


def apply_own_checkpoint(network: nn.Module, state: dict[str, torch.Tensor], path: Path, name: str) -> None:
    """Load ``state`` strictly; a mismatch is one line naming the first offending keys and shapes."""
    own = network.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    reshaped = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
                if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or reshaped:
        known = checkpoint_by_sha256(checkpoints.sha256_of(path))
        hint = f" (it is the official {known.model} ×{known.scale} checkpoint: --model {known.model})" if known else ""
        parts = [f"{label} {len(keys)} ({', '.join(keys[:SHOWN])}{', …' if len(keys) > SHOWN else ''})"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("shapes differ:", reshaped))
                 if keys]
        raise SrDeployError(f"checkpoint {path} does not fit {name}{hint}: {'; '.join(parts)}: pass this network's "
                            "checkpoint, or the --model-args it was trained with")
    network.load_state_dict({k: v.to(own[k].dtype) if v.is_floating_point() else v for k, v in state.items()})


def load_own(spec: str, weights: str | Path | None, args: dict[str, Any] | str | None = None,
             scale: int | None = None, say: Callable[[str], None] = lambda _: None) -> SrModel:
    """A network of your own, checkpoint loaded, with everything its export needs measured on it (``say``: told
    before the measuring starts, once the network and its checkpoint are known to fit)."""
    args = parse_args(args)
    factory, source = import_factory(spec)
    name = source["name"]
    if weights is None:
        raise SrDeployError(f"--model {spec} needs --weights CHECKPOINT: the trained weights of {name}")
    path = Path(weights)
    network = build(factory, name, args)
    apply_own_checkpoint(network, checkpoints.read_state_dict(path), path, name)
    network.eval().requires_grad_(False)
    say(f"measuring {name}: channels, scale, receptive radius, tiling")
    measured = measure(network, name)
    if scale is not None and scale != measured.scale:
        raise SrDeployError(f"{name} upscales ×{measured.scale}, not ×{scale}: pass --scale {measured.scale} or none")
    config = ExportConfig(min_size=max(ExportConfig.min_size, measured.min_size), receptive_radius=measured.receptive_radius,
                          whole_image=measured.whole_image)
    info = ModelInfo(name, measured.scale, "rgb" if measured.channels == 3 else "y", "state_dict", str(path),
                     checkpoints.sha256_of(path), {}, config, "round", title=f"{name} (your own network)",
                     paper=origin(source),
                     source={**source, "args": args, "checkpoint": str(path.resolve())})
    return SrModel(network, info)
