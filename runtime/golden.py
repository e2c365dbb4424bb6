"""Golden input/output pairs: written next to an artifact by ``parity --save-golden`` (where PyTorch
is), checked by ``parity --golden`` anywhere (numpy + the artifact's backend only)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import SrDeployError

GOLDEN_FILE = "golden.npz"
MANIFEST_FILE = "golden.json"


def save_golden(folder: str | Path, cases: dict[str, tuple[np.ndarray, np.ndarray]], manifest: dict) -> Path:
    """Write ``{name: (input, reference output)}`` and a manifest, each atomically."""
    folder = Path(folder)
    arrays = {f"{name}.{kind}": array for name, (x, y) in cases.items() for kind, array in (("input", x), ("output", y))}
    with atomic_path(folder / GOLDEN_FILE) as tmp:
        np.savez_compressed(tmp, **arrays)
    with atomic_path(folder / MANIFEST_FILE) as tmp:
        tmp.write_text(json.dumps({**manifest, "cases": sorted(cases)}, indent=2))
    return folder


def load_golden(folder: str | Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict]:
    folder = Path(folder)
    if not (folder / GOLDEN_FILE).is_file() or not (folder / MANIFEST_FILE).is_file():
        raise SrDeployError(f"{folder} holds no {GOLDEN_FILE} + {MANIFEST_FILE}: write them with parity --save-golden")
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    with np.load(folder / GOLDEN_FILE) as data:
        cases = {name: (data[f"{name}.input"], data[f"{name}.output"]) for name in manifest["cases"]}
    return cases, manifest
