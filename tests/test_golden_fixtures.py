"""The fidelity contract: every golden output of the public reference implementations is reproduced.

Tolerance: max|ours − ref| ≤ 1e-5 · max|ref| (random-weight networks have large outputs)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from srdeploy import models
from srdeploy.benchmarks.reference_fixtures import zoo_name_and_scale
from tests.conftest import SHARED, fixture_index, need_shared, weights

FIXTURES = {f["name"]: f for f in fixture_index()} or {"(fixtures absent)": None}
FORCED_BIAS = {"dsrnet_x2_forced_branch0": [50.0, -50.0], "dsrnet_x2_forced_branch1": [-50.0, 50.0]}
RTOL = 1e-5


def checkpoint_of(fixture: dict, model: str, scale: int):
    if "checkpoint" in fixture:
        return need_shared("fixtures", "reference", fixture["checkpoint"])
    return weights(f"{model}_x{scale}.pth")


def assert_matches_fixture(model: torch.nn.Module, fixture: dict) -> None:
    data = np.load(SHARED / "fixtures" / "reference" / f"{fixture['name']}.npz")
    for case in fixture["cases"]:
        reference = data[case["output"]]
        with torch.no_grad():
            ours = model(torch.from_numpy(data[case["input"]])).numpy()
        assert ours.shape == tuple(case["out_shape"]) == reference.shape
        error = np.abs(ours - reference).max()
        assert error <= RTOL * np.abs(reference).max(), f"{fixture['name']}: max error {error:.3g}"


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture(name, tmp_path):
    fixture = FIXTURES[name]
    if fixture is None:
        need_shared("fixtures", "reference", "index.json")
    model_name, scale = zoo_name_and_scale(name)
    path = checkpoint_of(fixture, model_name, scale)
    if name in FORCED_BIAS:  # the reference run: official weights with the gate bias overridden
        state = torch.load(path, map_location="cpu", weights_only=True)
        state["gate.fc2.bias"] = torch.tensor(FORCED_BIAS[name])
        torch.save(state, tmp_path / "overridden.pth")
        path = tmp_path / "overridden.pth"
    assert_matches_fixture(models.load(model_name, scale, path), fixture)


@pytest.mark.parametrize("branch", [0, 1])
def test_forced_branch_option_matches_reference(branch):
    """``gate="branchK"`` on the unmodified official checkpoint computes the forced-branch fixture."""
    fixture = FIXTURES.get(f"dsrnet_x2_forced_branch{branch}")
    if fixture is None:
        need_shared("fixtures", "reference", "index.json")
    model = models.load("dsrnet", 2, weights("dsrnet_x2.pth"), gate=f"branch{branch}")
    assert_matches_fixture(model, fixture)


def test_forced_branches_differ():
    """Guard against a gate that ignores its decision: forcing the other branch changes our output (so the two
    fixture matches above test two different computations)."""
    arrays = need_shared("fixtures", "reference", "dsrnet_x2_forced_branch0.npz")  # a skip without ../shared
    case = FIXTURES["dsrnet_x2_forced_branch0"]["cases"][0]
    x = torch.from_numpy(np.load(arrays)[case["input"]])
    with torch.no_grad():
        outputs = [models.load("dsrnet", 2, weights("dsrnet_x2.pth"), gate=f"branch{b}")(x) for b in (0, 1)]
    assert (outputs[0] - outputs[1]).abs().max() > 1e-3
