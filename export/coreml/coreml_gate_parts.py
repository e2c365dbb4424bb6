"""Core ML packages of the parts of a network whose gate reads the whole image (DSRNet), so that tiles share the
whole image's decision on Apple devices too (``runtime.global_gate``; the iOS bundle's Swift code and
``CoreMLSession.gate_split`` run them), beside the network's own package:

- ``STEM_gate_features``: the image → the features the gate averages (1×C×H×W);
- ``STEM_gate_margin``: their mean, 1×C×1×1 → logit of branch 1 − logit of branch 0 (> 0: branch 1);
- ``STEM_branch0`` / ``STEM_branch1``: the image → the output with that branch, the gate not evaluated.

Each is converted as the network is (precision, sizes, compression, tensor I/O type) and checked as it is
(``coreml_verify``: constants against the checkpoint, FP32-mode and FP16-emulated outputs against PyTorch).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .coreml_export import CoreMLOptions, metadata, to_mlprogram, trace
from .coreml_verify import verify_package
from ..gate_modules import GateFeatures, GateMargin
from ...models.loading import SrModel
from ...runtime.errors import SrDeployError
from ...runtime.global_gate import GATE_PARTS

MEAN_INPUT = "gate_mean"


class Branch(nn.Module):
    def __init__(self, network: nn.Module, branch: int):
        super().__init__()
        self.network = network.with_branch(branch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


def part_file(stem: str, part: str) -> str:
    """The package name of ``part`` beside ``STEM.mlpackage``."""
    return f"{stem}_{part}.mlpackage"


def export_gate_parts(model: SrModel, options: CoreMLOptions, folder: Path, stem: str,
                      inputs: dict[str, np.ndarray]) -> tuple[dict[str, Path], dict[str, dict]]:
    """Convert, save into ``folder`` and check each part (probed with ``inputs``, the network's verification
    inputs, and their features' means); the packages (unsealed) and their verification reports. One line and
    nothing kept where a check fails."""
    import coremltools as ct

    info, net = model.info, model.network.eval()
    config = info.export
    dtype = np.float16 if options.fp16_io else np.float32
    with torch.no_grad():
        means = {name: net.gate_features(torch.from_numpy(x)).mean((2, 3), keepdim=True).numpy()
                 for name, x in inputs.items()}
    channels = next(iter(means.values())).shape[1]
    image = options.shapes.ct_shape(info.channels)
    specs = {  # part: (module, input name, input shape, output name, probes)
        "gate_features": (GateFeatures(net), config.input_name, image, "gate_features", inputs),
        "gate_margin": (GateMargin(net), MEAN_INPUT, (1, channels, 1, 1), "gate_margin", means),
        "branch0": (Branch(net, 0), config.input_name, image, config.output_name, inputs),
        "branch1": (Branch(net, 1), config.input_name, image, config.output_name, inputs),
    }
    assert tuple(specs) == GATE_PARTS
    packages, reports = {}, {}
    for part, (module, input_name, shape, output_name, probes) in specs.items():
        traced = trace(module.eval(), torch.from_numpy(next(iter(probes.values()))), f"{info.name} {part}")
        mlmodel = to_mlprogram(traced, [ct.TensorType(name=input_name, shape=shape, dtype=dtype)],
                               [ct.TensorType(name=output_name, dtype=dtype)], options, info.name)
        path = folder / part_file(stem, part)
        mlmodel.save(str(path))
        verification = verify_package(path, module, probes, options.compression, False, input_name)
        if not verification.passed:
            raise SrDeployError(f"the Core ML package of {info.name} ×{info.scale}'s {part} fails its check "
                                f"({verification.problems[0]}): nothing written")
        entries = metadata(model, options, {"gate_part": part, "verification": json.dumps(verification.as_dict())})
        if part == "gate_margin":
            entries["srdeploy.shape_bounds"] = json.dumps({"min": [1, channels, 1, 1], "max": [1, channels, 1, 1]})
        mlmodel.short_description = f"{info.title} ×{info.scale}: {part} (srdeploy gate part, {stem}.mlpackage)"
        mlmodel.user_defined_metadata.update(entries)
        mlmodel.save(str(path))
        packages[part], reports[part] = path, verification.as_dict()
    return packages, reports
