"""The srdeploy model zoo and networks of your own: ``load_model(model, scale, weights, gate, model_args)``,
``load(name, scale, weights=None, **options)`` for the zoo, and ``list_models()``."""
from .loading import ModelInfo, SrModel, load
from .own import is_own, load_model, load_own
from .registry import ARCHITECTURES, CHECKPOINTS, Architecture, Checkpoint, list_models

__all__ = ["ARCHITECTURES", "CHECKPOINTS", "Architecture", "Checkpoint", "ModelInfo", "SrModel", "is_own", "list_models",
           "load", "load_model", "load_own"]
