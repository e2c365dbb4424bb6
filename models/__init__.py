"""The srdeploy model zoo: ``load(name, scale, weights=None, **options)`` and ``list_models()``."""
from models.loading import ModelInfo, load
from models.registry import ARCHITECTURES, CHECKPOINTS, Architecture, Checkpoint, list_models

__all__ = ["ARCHITECTURES", "CHECKPOINTS", "Architecture", "Checkpoint", "ModelInfo", "list_models", "load"]
