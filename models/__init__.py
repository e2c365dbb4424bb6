"""The srdeploy model zoo: ``load(name, scale, weights=None, **options)`` and ``list_models()``."""
from .loading import ModelInfo, load
from .registry import ARCHITECTURES, CHECKPOINTS, Architecture, Checkpoint, list_models

__all__ = ["ARCHITECTURES", "CHECKPOINTS", "Architecture", "Checkpoint", "ModelInfo", "list_models", "load"]
