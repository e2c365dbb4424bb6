"""The golden fixtures of ``shared/fixtures/reference``: which zoo network, scale, checkpoint and gate each
one runs, and its (input, reference output) cases. Read by the fixture tests and the GPU run."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# The forced-branch fixtures ran the official DSRNet ×2 weights with the gate's bias overridden; the
# gate option computes the same (tests/test_golden_fixtures.py checks both ways).
FORCED_GATE = {"dsrnet_x2_forced_branch0": "branch0", "dsrnet_x2_forced_branch1": "branch1"}


@dataclass(frozen=True)
class Fixture:
    name: str
    model: str  # zoo name
    scale: int
    checkpoint: Path
    options: dict
    folder: Path
    index_entry: dict

    def cases(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(input, reference output) pairs, float32 N×C×H×W."""
        with np.load(self.folder / f"{self.name}.npz") as data:
            return [(data[c["input"]], data[c["output"]]) for c in self.index_entry["cases"]]


def zoo_name_and_scale(fixture_name: str) -> tuple[str, int]:
    model, scale = re.match(r"([a-z]+)_(?:multiscale_random_at_)?x(\d)", fixture_name).groups()
    if "multiscale" in fixture_name and model == "lesrcnn":
        model = "lesrcnn_b"
    return model, int(scale)


def load_fixtures(shared: Path) -> list[Fixture]:
    """Every fixture listed in ``shared/fixtures/reference/index.json`` ([] when the file is absent)."""
    folder = Path(shared) / "fixtures" / "reference"
    index = folder / "index.json"
    if not index.is_file():
        return []
    found = []
    for entry in json.loads(index.read_text())["fixtures"]:
        model, scale = zoo_name_and_scale(entry["name"])
        checkpoint = (folder / entry["checkpoint"] if "checkpoint" in entry
                      else Path(shared) / "weights" / f"{model}_x{scale}.pth")
        options = {"gate": FORCED_GATE[entry["name"]]} if entry["name"] in FORCED_GATE else {}
        found.append(Fixture(entry["name"], model, scale, checkpoint, options, folder, entry))
    return found
