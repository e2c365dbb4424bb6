"""Shapes, batch invariance, DSRNet's per-image gate, and exportability of every zoo network."""
from __future__ import annotations

import pytest
import torch

from srdeploy import models
from srdeploy.models.registry import ARCHITECTURES, list_models
from srdeploy.runtime.errors import SrDeployError
from tests.conftest import weights

ENTRIES = [(e.architecture.name, e.scale) for e in list_models()]


def random_model(name: str, scale: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return ARCHITECTURES[name].build(scale).eval()


@pytest.mark.parametrize("name,scale", ENTRIES)
def test_output_shape(name, scale):
    channels = ARCHITECTURES[name].channels
    with torch.no_grad():
        out = random_model(name, scale)(torch.rand(2, channels, 7, 9))
    assert out.shape == (2, channels, 7 * scale, 9 * scale)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_batch_invariance(name):
    """Each image of a batch gets the output it gets alone (up to float rounding: oneDNN picks other
    convolution kernels for other batch sizes, ~1e-6 relative)."""
    model = random_model(name, 2)
    torch.manual_seed(1)
    batch = torch.rand(3, ARCHITECTURES[name].channels, 12, 15) * torch.tensor([0.2, 1.0, 0.6]).view(3, 1, 1, 1)
    with torch.no_grad():
        together = model(batch)
        alone = torch.cat([model(batch[i : i + 1]) for i in range(3)])
    assert (together - alone).abs().max() <= 1e-5 * alone.abs().max()


def split_gate_checkpoint(tmp_path) -> tuple[torch.Tensor, object]:
    """A batch of 4 images and the official DSRNet ×2 weights with the gate bias moved so that two
    images pick branch 0 and two pick branch 1; returns (batch, checkpoint path)."""
    state = torch.load(weights("dsrnet_x2.pth"), map_location="cpu", weights_only=True)
    model = models.load("dsrnet", 2, weights("dsrnet_x2.pth")).network
    torch.manual_seed(2)
    batch = torch.rand(4, 3, 16, 16) * torch.tensor([0.05, 0.3, 0.7, 1.0]).view(4, 1, 1, 1)
    with torch.no_grad():
        logits = model.gate(model.web[1](model.web[0](_reb_output(model, batch))))
    margin = (logits[:, 1] - logits[:, 0]).sort().values
    state["gate.fc2.bias"][0] += float(margin[1] + margin[2]) / 2  # threshold between the 2nd and 3rd image
    torch.save(state, tmp_path / "split_gate.pth")
    return batch, tmp_path / "split_gate.pth"


def test_dsrnet_gate_is_per_image(tmp_path):
    """A batch whose images pick different branches: each gets its own branch's output (the reference
    would have run branch 0 for all of them)."""
    batch, path = split_gate_checkpoint(tmp_path)
    split = models.load("dsrnet", 2, path).network
    with torch.no_grad():
        decisions = split.decide(split.web[1](split.web[0](_reb_output(split, batch))).mean((2, 3)))
        assert 0 < int(decisions.sum()) < 4
        together = split(batch)
        forced = {b: models.load("dsrnet", 2, path, gate=f"branch{b}") for b in (0, 1)}
        for i, pick1 in enumerate(decisions.tolist()):
            alone = split(batch[i : i + 1])
            expected = forced[int(pick1)](batch[i : i + 1])
            assert (together[i] - alone[0]).abs().max() <= 1e-5 * alone.abs().max()
            assert (alone - expected).abs().max() <= 1e-5 * alone.abs().max()


def _reb_output(model, x):
    x1 = model.reb[0](model.sub_mean(x))
    x2 = model.reb[1](x1)
    return x2 + model.reb[3](model.reb[2](x2))


def test_dsrnet_select_gate_equals_cond_gate(tmp_path):
    """The Core ML export's static select computes what the conditional does, per image."""
    batch, path = split_gate_checkpoint(tmp_path)
    model = models.load("dsrnet", 2, path).network
    with torch.no_grad():
        cond = model(batch)
        model.gate_execution = "select"
        select = model(batch)
    assert torch.equal(cond, select)


def test_dsrnet_argmax_gate_exports_without_python_branching():
    """No Python ``if`` on tensor values: torch.export traces the gate with symbolic batch and size."""
    model = random_model("dsrnet", 2)
    batch, height, width = (torch.export.Dim(n, min=1, max=64) for n in ("batch", "height", "width"))
    exported = torch.export.export(
        model, (torch.rand(2, 3, 16, 16),), dynamic_shapes=({0: batch, 2: height, 3: width},)
    )
    x = torch.rand(3, 3, 10, 12)
    with torch.no_grad():
        assert torch.allclose(exported.module()(x), model(x), atol=1e-6)


def test_one_spec_per_architecture():
    """Each architecture is one value: its export config and its official checkpoints travel with it, and the
    zoo-wide checkpoint list is made from them (nothing to keep in step by hand)."""
    from srdeploy.models.registry import ARCHITECTURES, CHECKPOINTS, architecture

    assert [c for a in ARCHITECTURES.values() for c in a.checkpoints] == list(CHECKPOINTS) and len(CHECKPOINTS) == 7
    for arch in ARCHITECTURES.values():
        assert all(c.model == arch.name and c.scale in arch.scales for c in arch.checkpoints)
        assert len({c.scale for c in arch.checkpoints}) == len(arch.checkpoints)
        assert arch.export.receptive_radius > 0 and arch.export.min_size <= arch.export.trace_size
    assert architecture("dsrnet").export.trace_size == 48 and architecture("esrgcnn").export.receptive_radius == 41
    with pytest.raises(SrDeployError, match=r"^unknown model 'edsr': choose one of fsrcnn, lesrcnn"):
        architecture("edsr").export


def test_precision_is_a_value_with_a_one_line_error():
    import json

    from srdeploy.runtime.compare import TOLERANCES
    from srdeploy.runtime.precision import Precision

    assert Precision.parse("int8") is Precision.INT8 and Precision.INT8 == "int8"
    assert f"x_{Precision.FP16}.onnx" == "x_fp16.onnx" and json.dumps([Precision.FP32]) == '["fp32"]'
    assert TOLERANCES["fp16"] is TOLERANCES[Precision.FP16] and set(TOLERANCES) == set(Precision)
    with pytest.raises(SrDeployError, match=r"^precision 'int4' is not available: choose one of fp32, fp16, int8, bf16$"):
        Precision.parse("int4")
