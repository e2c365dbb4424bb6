"""Calibration statistics cached on disk, keyed by model, checkpoint, data and method."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

from ..runtime.cache import cache_dir
from ..runtime.atomic import atomic_path


def cached_stats(key: dict, compute: Callable[[], dict]) -> dict:
    """``compute()`` once per ``key`` (a JSON-able dict); later calls read ``<cache>/calib/<hash>.json``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    path = Path(cache_dir()).parent / "calib" / f"{digest}.json"
    if path.is_file():
        return json.loads(path.read_text())["stats"]
    stats = compute()
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"key": key, "stats": stats}))
    return stats
