"""``ModelSpec``: which network a command loads, as one value: a zoo name with its scale, checkpoint and the
architecture's own options (DSRNet's ``gate``), or a network of your own with its constructor's arguments."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..runtime.errors import SrDeployError


@dataclass(frozen=True)
class ModelSpec:
    """A network to load. ``model``: a zoo name (``scale`` default 2; ``weights`` default the official checkpoint;
    ``options`` the architecture's, e.g. ``{"gate": "branch0"}`` for DSRNet) or your own network, FILE.py:NAME or
    package.module:NAME with ``weights`` and ``model_args`` (its scale, channels and receptive radius are
    measured)."""

    model: str
    scale: int | None = None
    weights: str | Path | None = None
    options: dict[str, Any] = field(default_factory=dict)
    model_args: dict[str, Any] | str | None = None

    @property
    def own(self) -> bool:
        """A network of your own: FILE.py:NAME or package.module:NAME (a zoo name has no colon)."""
        return ":" in self.model

    def check(self) -> None:
        """Options where they belong: the zoo's to a zoo name, ``model_args`` to your own network; a zoo scale that
        exists. One line each, before anything is loaded."""
        if self.own and self.options:
            raise SrDeployError(f"--{next(iter(self.options))} is an option of a zoo architecture: a network of your "
                                "own takes --model-args")
        if not self.own:
            from .registry import architecture, check_scale

            if self.model_args is not None:
                raise SrDeployError(f"--model-args is for a network of your own (FILE.py:NAME); {self.model} takes "
                                    "--scale and its own options")
            check_scale(architecture(self.model), self.scale or 2)

    def load(self, say: Callable[[str], None] = lambda _: None):
        """The ``models.SrModel``: checkpoint loaded and checked (``say``: progress of measuring your own network)."""
        from .loading import load
        from .own import load_own

        self.check()
        if self.own:
            return load_own(self.model, self.weights, self.model_args, self.scale, say)
        return load(self.model, self.scale or 2, self.weights, **self.options)


def load_model(model: str, scale: int | None = None, weights: str | Path | None = None,
               options: dict[str, Any] | None = None, model_args: dict[str, Any] | str | None = None,
               say: Callable[[str], None] = lambda _: None):
    """``ModelSpec(model, scale, weights, options, model_args).load(say)``: a zoo model or a network of your own."""
    return ModelSpec(model, scale, weights, dict(options or {}), model_args).load(say)


def command_flags(info) -> str:
    """The command-line flags that load the network ``info`` describes (a ``ModelInfo``) again."""
    import json
    import shlex

    from .own import origin

    source = info.source
    if source is None:
        return f"--model {info.name} --scale {info.scale}" + "".join(f" --{k} {v}" for k, v in info.options.items())
    spec = f"{origin(source)}:{source['name']}"
    args = f" --model-args {shlex.quote(json.dumps(source['args']))}" if source["args"] else ""
    return f"--model {shlex.quote(spec)} --weights {shlex.quote(info.checkpoint)}{args}"
