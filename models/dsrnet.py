"""DSRNet (Tian et al., CAAI TIT 2023): image super-resolution via a dynamic network.

REB (residual enhancement block): four 3×3 + ReLU layers with a residual from the second to the fourth;
WEB (wide enhancement block): a 3×3 + ReLU trunk plus a gated pair of branches fed from its second layer,
either four 3×3 layers (gate index 1) or 3×3/1×1/3×3/1×1 (gate index 0), added to the trunk;
FRB (feature refinement block): five 3×3 + ReLU layers, a long residual from the REB, one more 3×3 + ReLU;
CB (construction block): sub-pixel upsampling and a 3×3 to RGB.

Faithful to the reference forward pass: the trunk applies its fourth layer (``conv8``) three times; the
checkpoint's ``conv9``/``conv10`` weights are never used (they are dropped on load).

The gate: the reference samples ``gumbel_softmax(logits, hard=True)``, a different branch on each run,
and takes branch 1 only if *every* image in the batch picks it. srdeploy is deterministic and
batch-invariant: each image takes the argmax of its own gate logits (``gate="argmax"``, the default), or
a forced branch (``gate="branch0"``/``"branch1"``). With the official ×2 checkpoint the argmax is always
branch 1, which scores 36.83 dB on Set5; forcing branch 0 scores 37.48 dB (see the registry).

How the argmax gate runs: ``gate_execution="cond"`` (default; ONNX ``If``) computes only the chosen branch
for uniform batches; ``"select"`` computes both branches and selects per image, a static graph with the same
decisions (the Core ML export uses it, see ``export/coreml/coreml_export.py``).
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import MEAN_SHIFT_KEYS, MeanShift, Upsampler, conv, conv_relu, upsampler_key_map

FEATURES = 64
GATE_MODES = ("argmax", "branch0", "branch1")
GATE_EXECUTIONS = ("cond", "select")


class Gate(nn.Module):
    """Squeeze-and-excitation style gate: global average → FC 64→16 → ReLU → FC 16→2 logits."""

    def __init__(self, channels: int = FEATURES, reduction: int = 4):
        super().__init__()
        self.fc1 = nn.Linear(channels, channels // reduction)
        self.fc2 = nn.Linear(channels // reduction, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(F.adaptive_avg_pool2d(x, 1).flatten(1))

    def logits(self, mean: torch.Tensor) -> torch.Tensor:
        """The two branch logits from the features' global average (N×C)."""
        return self.fc2(F.relu(self.fc1(mean)))


def _branch1(logits: torch.Tensor) -> torch.Tensor:
    """Per image, whether the gate picks branch 1 (ties go to index 0, like argmax)."""
    return logits[:, 1] > logits[:, 0]


class DSRNet(nn.Module):
    def __init__(self, scale: int, gate: str = "argmax"):
        super().__init__()
        if gate not in GATE_MODES:
            raise ValueError(f"gate must be one of {GATE_MODES}, not {gate!r}")
        self.scale = scale
        self.gate_mode = gate
        self.gate_execution = "cond"
        self.sub_mean = MeanShift(-1)
        self.reb = nn.ModuleList([conv_relu(3 if i == 0 else FEATURES, FEATURES) for i in range(4)])
        self.web = nn.ModuleList([conv_relu(FEATURES, FEATURES) for _ in range(4)])
        self.gate = Gate()
        self.branch1 = nn.Sequential(*[conv_relu(FEATURES, FEATURES, 3) for _ in range(4)])
        self.branch0 = nn.Sequential(*[conv_relu(FEATURES, FEATURES, k) for k in (3, 1, 3, 1)])
        self.frb = nn.ModuleList([conv_relu(FEATURES, FEATURES) for _ in range(6)])
        self.upsample = Upsampler(FEATURES, scale)
        self.tail = conv(FEATURES, 3)
        self.add_mean = MeanShift(+1)

    @property
    def has_global_gate(self) -> bool:
        """Whether an output pixel depends on the whole image (through the gate's global average)."""
        return self.gate_mode == "argmax"

    def decide(self, mean: torch.Tensor) -> torch.Tensor:
        """Per-image gate decision from the gate features' global average (N×C): bool N, True → branch 1."""
        return _branch1(self.gate.logits(mean))

    def gate_margin(self, mean: torch.Tensor) -> torch.Tensor:
        """Logit of branch 1 − logit of branch 0 from the features' global average (N×C): > 0 where ``decide``."""
        logits = self.gate.logits(mean)
        return logits[:, 1] - logits[:, 0]

    def with_branch(self, branch: int) -> DSRNet:
        """A copy that always runs ``branch`` (0 or 1), the gate not evaluated."""
        forced = copy.deepcopy(self)
        forced.gate_mode = f"branch{branch}"
        return forced

    def gated_branch(self, features: torch.Tensor, branch1: torch.Tensor | None = None) -> torch.Tensor:
        """The chosen branch's output, per image, as a data-dependent conditional (ONNX ``If``).

        All images pick branch 1 → only branch 1 runs; none does → only branch 0 runs; a mixed batch runs
        both and selects per image. Uniform batches (batch 1 included) compute one branch only.
        ``branch1``: a decision taken elsewhere (bool N, e.g. on the whole image for its tiles), used as is.
        """
        if self.gate_mode == "branch0":
            return self.branch0(features)
        if self.gate_mode == "branch1":
            return self.branch1(features)
        if self.gate_execution not in GATE_EXECUTIONS:
            raise ValueError(f"gate_execution must be one of {GATE_EXECUTIONS}, not {self.gate_execution!r}")
        pick1 = _branch1(self.gate(features)) if branch1 is None else branch1

        def per_image(f: torch.Tensor) -> torch.Tensor:
            return torch.where(pick1.view(-1, 1, 1, 1), self.branch1(f), self.branch0(f))

        if self.gate_execution == "select":
            return per_image(features)

        def not_all_branch1(f: torch.Tensor) -> torch.Tensor:
            return torch.cond(pick1.any(), per_image, self.branch0, (f,))

        return torch.cond(pick1.all(), self.branch1, not_all_branch1, (features,))

    def front(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """REB and the WEB's first two layers: (x1, x4, x6); x6 feeds the trunk, the gate and its branches."""
        x1 = self.reb[0](self.sub_mean(x))
        x2 = self.reb[1](x1)
        x4 = self.reb[3](self.reb[2](x2))
        return x1, x4, self.web[1](self.web[0](x2 + x4))

    def gate_features(self, x: torch.Tensor) -> torch.Tensor:
        """What the gate averages over the image (N×64×H×W)."""
        return self.front(x)[2]

    def forward(self, x: torch.Tensor, branch1: torch.Tensor | None = None) -> torch.Tensor:
        x1, x4, x6 = self.front(x)
        trunk = self.web[3](self.web[3](self.web[3](self.web[2](x6))))
        y = trunk + self.gated_branch(x6, branch1)
        for layer in self.frb[:5]:
            y = layer(y)
        y = self.frb[5](y + x4 + x1)
        return self.add_mean(self.tail(self.upsample(y)))


def official_key_map(scale: int, multi_scale: bool = False) -> dict[str, str]:
    """hellloxiaotian/DSRNet layout: conv1…conv17, conv7_1…conv10_1, conv7_2…conv10_2, gate.fc1/fc2."""
    mapping = {**MEAN_SHIFT_KEYS, "conv17.0.": "tail.", "gate.": "gate."}
    for i in range(4):
        mapping[f"conv{1 + i}.0."] = f"reb.{i}.0."
        mapping[f"conv{5 + i}.0."] = f"web.{i}.0."
        mapping[f"conv{7 + i}_1.0."] = f"branch1.{i}.0."
        mapping[f"conv{7 + i}_2.0."] = f"branch0.{i}.0."
    for i in range(6):
        mapping[f"conv{11 + i}.0."] = f"frb.{i}.0."
    mapping.update(upsampler_key_map(scale, multi_scale))
    return mapping


# Present in every official-layout checkpoint, unused by the reference forward pass.
UNUSED_OFFICIAL_KEYS = ("conv9.0.weight", "conv10.0.weight")
