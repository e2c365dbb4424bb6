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
    # LR pixels an output pixel depends on in each direction (summed conv radii, HR-side layers
    # divided by the scale, rounded up); the default tile overlap of ``upscale``.
    receptive_radius: int = 0

    def shape_bounds(self, channels: int) -> dict[str, list[int]]:
        """Input shape bounds as metadata: min and max N×C×H×W."""
        return {
            "min": [self.min_batch, channels, self.min_size, self.min_size],
            "max": [self.max_batch, channels, self.max_size, self.max_size],
        }


_DEFAULT = OnnxExportConfig()
EXPORT_CONFIGS: dict[str, OnnxExportConfig] = {
    # 5×5 (2) + four 3×3 (4) + 9×9 transposed conv (⌈4/s⌉ ≤ 2)
    "fsrcnn": replace(_DEFAULT, receptive_radius=8),
    # head 1 + 8 units + upsampler ≤ 2 + HR side (4 + 1)/s ≤ 3
    "lesrcnn": replace(_DEFAULT, receptive_radius=14),
    "lesrcnn_b": replace(_DEFAULT, receptive_radius=14),
    # head 1 + 16 stages + fuse 1 + 5 enhance + upsampler ≤ 2 + HR side (5 + 1)/s ≤ 3
    "cfsrcnn": replace(_DEFAULT, receptive_radius=28),
    # head 1 + 6 modules × 6 + merge 1 + upsampler ≤ 2 + HR tail 1
    "esrgcnn": replace(_DEFAULT, receptive_radius=41),
    # 4 + 2 + 4 + 6 + upsampler ≤ 2 + HR tail 1; the gate also sees the global average (tiling takes its
    # decision once, on the whole image: runtime.global_gate). A larger trace input keeps the traced gate
    # logits apart.
    "dsrnet": replace(_DEFAULT, receptive_radius=19, trace_size=48),
}


def export_config(name: str) -> OnnxExportConfig:
    return EXPORT_CONFIGS[name]
