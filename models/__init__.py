"""The srdeploy model zoo and networks of your own: ``ModelSpec(model, scale, weights, options, model_args).load()``
(``load_model`` the same as a call), ``load(name, scale, weights=None, **options)`` for the zoo, and
``list_models()``. The names load on first use (PEP 562), so that ``models.spec`` and ``models.runners`` are
imported without PyTorch on the artifact path."""
from importlib import import_module

_WHERE = {"ModelInfo": "loading", "SrModel": "loading", "load": "loading", "load_own": "own",
          "ARCHITECTURES": "registry", "CHECKPOINTS": "registry", "Architecture": "registry", "Checkpoint": "registry",
          "list_models": "registry", "ModelSpec": "spec", "load_model": "spec"}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_WHERE[name]}", __name__), name)
