"""Where srdeploy caches things: ``$SRDEPLOY_CACHE_DIR`` (the checkpoints) or ``~/.cache/srdeploy/checkpoints``;
the other caches (calibration statistics, engines, OpenVINO's compiled models) live beside it."""
from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR_ENV = "SRDEPLOY_CACHE_DIR"


def cache_dir() -> Path:
    """The checkpoint cache."""
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "srdeploy" / "checkpoints")


def cache_root() -> Path:
    """The folder holding every srdeploy cache."""
    return cache_dir().parent
