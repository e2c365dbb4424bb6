"""The zoo: architectures and their official checkpoints, in the style of torchvision's weights API.

Each ``Checkpoint`` is a value carrying where it comes from (repository, commit, path → URL), its
sha256, the key layout it uses and the metrics srdeploy measured with it, so this file *is* the zoo's
documentation (``srdeploy models`` prints it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Mapping

from torch import nn

from . import cfsrcnn, dsrnet, esrgcnn, fsrcnn, lesrcnn
from ..runtime.errors import SrDeployError

KeyMap = Callable[[int], Mapping[str, str]]


@dataclass(frozen=True)
class ExportConfig:
    """How a network is exported (in the spirit of Hugging Face Optimum's export configs): tensor names,
    dynamic-axis bounds, opset, the FP32 parity tolerance and the receptive radius tiling needs."""

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
    # an output pixel depends on the whole image through something tiles cannot share (global pooling,
    # attention): never tiled (DSRNet's gate is shared instead: runtime.global_gate)
    whole_image: bool = False

    def shape_bounds(self, channels: int) -> dict[str, list[int]]:
        """Input shape bounds as metadata: min and max N×C×H×W."""
        return {
            "min": [self.min_batch, channels, self.min_size, self.min_size],
            "max": [self.max_batch, channels, self.max_size, self.max_size],
        }


@dataclass(frozen=True)
class Metric:
    psnr: float
    ssim: float


@dataclass(frozen=True)
class Checkpoint:
    """An official pretrained checkpoint."""

    model: str
    scale: int
    repository: str
    commit: str
    path: str
    sha256: str
    layout: str
    metrics: Mapping[str, Metric]  # dataset → measured by srdeploy (Y, shave=scale, uint8)
    reference_psnr: Mapping[str, float]  # dataset → measured with the public reference code
    notes: str = ""

    @property
    def url(self) -> str:
        return f"https://github.com/{self.repository}/raw/{self.commit}/{self.path}"

    @property
    def filename(self) -> str:
        """Name in the cache and in a local checkpoint directory (``SRDEPLOY_WEIGHTS_DIR``)."""
        return f"{self.model}_x{self.scale}.pth"


@dataclass(frozen=True)
class Architecture:
    """One network of the zoo: how to build it for a scale and how to read its public checkpoints."""

    name: str
    title: str
    paper: str
    scales: tuple[int, ...]
    colour: str  # "rgb" or "y": what the network's channels hold
    build: Callable[..., nn.Module]  # build(scale, **options)
    layouts: Mapping[str, KeyMap]  # layout name → official-key-prefix → module-key-prefix
    multi_scale: bool = False
    unused_keys: tuple[str, ...] = ()
    options: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # option → allowed values
    # How the reference evaluation turns the [0, 1] output into 8 bits: the LESRCNN family's
    # ``tensor.mul(255).clamp(0, 255).byte()`` truncates; yjn870's FSRCNN numbers need rounding.
    eval_rounding: str = "truncate"
    export: ExportConfig = ExportConfig()
    checkpoints: tuple[Checkpoint, ...] = ()  # the official ones, one per scale at most

    @property
    def channels(self) -> int:
        return 1 if self.colour == "y" else 3


_LESRCNN_REPO = ("hellloxiaotian/LESRCNN", "e3729ed3884cbaa67c1534a1ac9626c71d670d27")
_FSRCNN_REPO = ("yjn870/FSRCNN-pytorch", "ecd36324887023ea95e7224353d6836773207551")
_DSRNET_REPO = ("hellloxiaotian/DSRNet", "c0ec2f0120b8ba5a4d0169f2139118d7519751ba")

ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture(
            "fsrcnn", "FSRCNN (d=56, s=12, m=4), Y channel", "Dong et al., ECCV 2016", (2, 3, 4), "y",
            build=fsrcnn.FSRCNN,
            layouts={"yjn870": fsrcnn.yjn870_key_map, "paper": fsrcnn.paper_key_map},
            eval_rounding="round",
            # 5×5 (2) + four 3×3 (4) + 9×9 transposed conv (⌈4/s⌉ ≤ 2)
            export=ExportConfig(receptive_radius=8),
            checkpoints=(
                Checkpoint("fsrcnn", 2, *_FSRCNN_REPO, "weights/fsrcnn_x2.pth",
                    "1af70e2cbf0d11b942008d6c425e469e9fe275a68f3ac8b6c21e8672d6e67b69", "yjn870",
                    metrics={"Set5": Metric(37.06, 0.9556), "Set14": Metric(32.70, 0.9085)},
                    reference_psnr={"Set5": 37.06, "Set14": 32.70}),
                Checkpoint("fsrcnn", 3, *_FSRCNN_REPO, "weights/fsrcnn_x3.pth",
                    "f65b55819c1258048bc8c1ca96f9e24bd4339f779951d7f928144c08e3868d75", "yjn870",
                    metrics={"Set5": Metric(32.57, 0.9047), "Set14": Metric(29.20, 0.8171)},
                    reference_psnr={"Set5": 32.57, "Set14": 29.20}),
                Checkpoint("fsrcnn", 4, *_FSRCNN_REPO, "weights/fsrcnn_x4.pth",
                    "c15150d6787d487f38a68e66be5ec8a964182403af494e6a935fa03eeb56a630", "yjn870",
                    metrics={"Set5": Metric(30.49, 0.8587), "Set14": Metric(27.55, 0.7492)},
                    reference_psnr={"Set5": 30.49, "Set14": 27.55}),
            ),
        ),
        Architecture(
            "lesrcnn", "LESRCNN", "Tian et al., Knowledge-Based Systems 2020", (2, 3, 4), "rgb",
            build=lesrcnn.LESRCNN,
            layouts={"official": lesrcnn.official_key_map},
            # head 1 + 8 units + upsampler ≤ 2 + HR side (4 + 1)/s ≤ 3
            export=ExportConfig(receptive_radius=14),
            checkpoints=(
                Checkpoint("lesrcnn", 2, *_LESRCNN_REPO, "x2/lesrcnn_x2.pth",
                    "66b4b2ddb268486f78a3d49758a016417e64f602ef963667b5ce34039200bcde", "official",
                    metrics={"Set5": Metric(37.65, 0.9586), "Set14": Metric(33.31, 0.9148)},
                    reference_psnr={"Set5": 37.65, "Set14": 33.31}),
                Checkpoint("lesrcnn", 3, *_LESRCNN_REPO, "x3/lesrcnn_x3.pth",
                    "95cbabcbd243e5582118d3bba44fd751a80dd19a291d5f3b1ebd7c9b3b61346a", "official",
                    metrics={"Set5": Metric(33.93, 0.9231), "Set14": Metric(30.12, 0.8380)},
                    reference_psnr={"Set5": 33.93, "Set14": 30.12}),
                Checkpoint("lesrcnn", 4, *_LESRCNN_REPO, "x4/lesrcnn_x4.pth",
                    "1de9d0e1b1817de43fba3ce9c4b966fd8cde81e160d7432a844d6a2296f90cbc", "official",
                    metrics={"Set5": Metric(31.88, 0.8903), "Set14": Metric(28.44, 0.7771)},
                    reference_psnr={"Set5": 31.88, "Set14": 28.44}),
            ),
        ),
        Architecture(
            "lesrcnn_b", "LESRCNN multi-scale (blind)", "Tian et al., Knowledge-Based Systems 2020",
            (2, 3, 4), "rgb",
            build=partial(lesrcnn.LESRCNN, branch_scales=(2, 3, 4)),
            layouts={"official": partial(lesrcnn.official_key_map, multi_scale=True)},
            multi_scale=True,
            export=ExportConfig(receptive_radius=14),
        ),
        Architecture(
            "cfsrcnn", "CFSRCNN", "Tian et al., IEEE TMM 2020", (2, 3, 4), "rgb",
            build=cfsrcnn.CFSRCNN,
            layouts={"official": cfsrcnn.official_key_map},
            # head 1 + 16 stages + fuse 1 + 5 enhance + upsampler ≤ 2 + HR side (5 + 1)/s ≤ 3
            export=ExportConfig(receptive_radius=28),
        ),
        Architecture(
            "esrgcnn", "ESRGCNN (multi-scale)", "Tian et al., IEEE TNNLS 2022", (2, 3, 4), "rgb",
            build=esrgcnn.ESRGCNN,
            layouts={"official": esrgcnn.official_key_map},
            multi_scale=True,
            # head 1 + 6 modules × 6 + merge 1 + upsampler ≤ 2 + HR tail 1
            export=ExportConfig(receptive_radius=41),
        ),
        Architecture(
            "dsrnet", "DSRNet", "Tian et al., CAAI TIT 2023", (2, 3, 4), "rgb",
            build=dsrnet.DSRNet,
            layouts={"official": dsrnet.official_key_map},
            unused_keys=dsrnet.UNUSED_OFFICIAL_KEYS,
            options={"gate": dsrnet.GATE_MODES},
            # 4 + 2 + 4 + 6 + upsampler ≤ 2 + HR tail 1; the gate also sees the global average (tiling takes its
            # decision once, on the whole image: runtime.global_gate). A larger trace input keeps the traced gate
            # logits apart.
            export=ExportConfig(receptive_radius=19, trace_size=48),
            checkpoints=(
                Checkpoint("dsrnet", 2, *_DSRNET_REPO, "checkpoint/DSRNet/DSRNet_x2_600000.pth",
                    "a3ecaa491d8200676d6ae80295786c60724d1f2504d64cb7fff35d38745b7bc3", "official",
                    metrics={"Set5": Metric(36.83, 0.9552), "Set14": Metric(32.67, 0.9078)},
                    reference_psnr={"Set5": 36.83, "Set14": 32.67},
                    notes="gate=argmax picks branch 1 on every Set5/Set14 image with this checkpoint; "
                          "gate=branch0 scores 37.48/0.9583 on Set5 and 33.28/0.9148 on Set14"),
            ),
        ),
    )
}

CHECKPOINTS: tuple[Checkpoint, ...] = tuple(c for a in ARCHITECTURES.values() for c in a.checkpoints)


def architecture(name: str) -> Architecture:
    """The architecture called ``name``, or a one-line error listing the zoo."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise SrDeployError(
            f"unknown model {name!r}: choose one of {', '.join(ARCHITECTURES)} (srdeploy models)"
        ) from None


def check_scale(arch: Architecture, scale: int) -> None:
    if scale not in arch.scales:
        raise SrDeployError(
            f"{arch.name} has no ×{scale} model: choose --scale from {', '.join(map(str, arch.scales))}"
        )


def default_checkpoint(name: str, scale: int) -> Checkpoint | None:
    """The official checkpoint for ``name`` at ``scale``, if one is public."""
    return next((c for c in CHECKPOINTS if c.model == name and c.scale == scale), None)


def checkpoint_by_sha256(sha256: str) -> Checkpoint | None:
    return next((c for c in CHECKPOINTS if c.sha256 == sha256), None)


@dataclass(frozen=True)
class ZooEntry:
    """One (model, scale) of the zoo, with its official checkpoint if there is one."""

    architecture: Architecture
    scale: int
    checkpoint: Checkpoint | None


def list_models() -> list[ZooEntry]:
    """Every (model, scale) the zoo builds, in registry order."""
    return [
        ZooEntry(arch, scale, default_checkpoint(arch.name, scale))
        for arch in ARCHITECTURES.values()
        for scale in arch.scales
    ]
