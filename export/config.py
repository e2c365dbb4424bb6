"""Per-model export configuration, in the spirit of Hugging Face Optimum's export configs.

One small value per zoo model instead of ``if name == …`` in the exporters: tensor names, dynamic-axis
bounds, opset and the parity tolerance an FP32 artifact must meet against PyTorch.
"""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class OnnxExportConfig:
    input_name: str = "lr"
    output_name: str = "sr"
    opset: int = 18
    min_batch: int = 1
    max_batch: int = 64
    min_size: int = 8  # smallest LR height/width the artifact accepts
    max_size: int = 4096  # largest LR height/width (declared bound of the symbolic axes)
    trace_size: int = 32  # LR size of the example input used for tracing
    fp32_rtol: float = 1e-4  # max|artifact − torch| ≤ fp32_rtol · max|torch|

    def shape_bounds(self, channels: int) -> dict[str, list[int]]:
        """Input shape bounds as metadata: min and max N×C×H×W."""
        return {
            "min": [self.min_batch, channels, self.min_size, self.min_size],
            "max": [self.max_batch, channels, self.max_size, self.max_size],
        }


_DEFAULT = OnnxExportConfig()
EXPORT_CONFIGS: dict[str, OnnxExportConfig] = {
    "fsrcnn": _DEFAULT,
    "lesrcnn": _DEFAULT,
    "lesrcnn_b": _DEFAULT,
    "cfsrcnn": _DEFAULT,
    "esrgcnn": _DEFAULT,
    # The gate averages the whole feature map; a larger trace input keeps its logits well separated.
    "dsrnet": replace(_DEFAULT, trace_size=48),
}


def export_config(name: str) -> OnnxExportConfig:
    return EXPORT_CONFIGS[name]
