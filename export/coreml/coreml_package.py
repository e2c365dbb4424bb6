"""``export --target coreml``: convert, save, verify the saved package, measure its cost in dB, and only
then move it into place.

The package is written into a temporary folder beside the destination and checked there
(``coreml_verify``); its PSNR on held-out calibration photos (never Set5/Set14) is measured through the
FP16-emulating MIL executor and compared with PyTorch FP32. Over ``max_drop``, or any failed check: one
line, nothing written. The metadata (measured PSNR, checks) is then added to the same package and the
weights file is confirmed unchanged before the rename.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ...runtime.quality import crop_psnr
from ...calib.data import CropSpec, held_out_photo, lr_hr_crops, source_images
from ..accuracy_gate import COREML_MAX_DROP, check_coreml_accuracy, limit_for
from .coreml_export import CoreMLOptions, CoreMLShapes, convert, describe, traceable
from .coreml_gate_parts import export_gate_parts
from .coreml_verify import executor_infer, verify_package
from ...models.loading import SrModel
from ...runtime import digest
from ...runtime.atomic import replace_dir, scratch_dir
from ...runtime.sessions.coreml import SPEC_FILE, WEIGHTS_FILE, WEIGHTS_KEY, import_coremltools
from ...runtime.errors import SrDeployError
from ...runtime.parity import photo_crop
from ...models.torch_runner import TorchRunner

VALIDATION_SPEC = CropSpec(size=64, count=8, seed=1)  # held-out photo crops for the PSNR drop
# dB on held-out photos vs PyTorch FP32: FP16 alone as for ONNX FP16; compressed weights "without visible loss"


def verification_sizes(shapes: CoreMLShapes) -> list[tuple[int, int]]:
    """LR sizes the checks run at: the two smallest enumerated sizes, or an odd size and the minimum."""
    if shapes.enumerated:
        return sorted(shapes.enumerated, key=lambda hw: hw[0] * hw[1])[:2]
    odd = (min(max(shapes.min[0], 37), shapes.max[0]), min(max(shapes.min[1], 53), shapes.max[1]))
    return list(dict.fromkeys([odd, shapes.min]))


def verification_inputs(shapes: CoreMLShapes, colour: str, calib_dir: str | None = None) -> dict[str, np.ndarray]:
    """Crops of a held-out photo (1×C×H×W in [0, 1]) at ``verification_sizes``."""
    photo, rng = held_out_photo(colour, calib_dir), np.random.default_rng(0)
    return {f"photo_{h}x{w}": photo_crop(photo, h, w, rng)[None] for h, w in verification_sizes(shapes)}


@dataclass
class CoreMLReport:
    package: str
    options: dict
    verification: dict
    validation_psnr_pytorch: float
    validation_psnr_coreml: float  # FP16-emulated package on the held-out crops
    drop_db: float
    size_mb: float
    gate_parts: dict = field(default_factory=dict)  # part: its package's verification (runtime.global_gate)

    def as_dict(self) -> dict:
        return asdict(self)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def seal_package(package: Path) -> None:
    """Record the weights' sha256 in the package's spec and seal the spec with its own (``runtime.digest``):
    ``CoreMLSession`` checks both on open."""
    ct = import_coremltools()
    spec = ct.proto.Model_pb2.Model()
    spec.ParseFromString((package / SPEC_FILE).read_bytes())
    metadata = spec.description.metadata.userDefined
    metadata[WEIGHTS_KEY] = _sha256(package / WEIGHTS_FILE)
    metadata[digest.KEY] = digest.PLACEHOLDER.decode()
    (package / SPEC_FILE).write_bytes(digest.seal(spec.SerializeToString()))


def export_package(model: SrModel, options: CoreMLOptions, out_dir: str | Path, calib_dir: str | None = None,
                   max_drop: float | None = None, name: str | None = None) -> tuple[Path, CoreMLReport]:
    """Write ``out_dir/NAME.mlpackage`` for a loaded model after every check passed; return it and its report."""
    info = model.info
    config = info.export
    stem = name or f"{info.name}_x{info.scale}_{options.precision}" + (
        "" if options.compression == "none" else f"_{options.compression}")
    target = Path(out_dir) / f"{stem}.mlpackage"
    target.parent.mkdir(parents=True, exist_ok=True)
    work = scratch_dir(target.parent, stem)
    try:
        mlmodel = convert(model, options)
        checked = work / "checked.mlpackage"
        mlmodel.save(str(checked))
        net = traceable(model, options.image_io)
        inputs = verification_inputs(options.shapes, info.colour, calib_dir)
        verification = verify_package(checked, net, inputs, options.compression, options.image_io, config.input_name)
        if not verification.passed:
            raise SrDeployError(f"the Core ML package of {info.name} ×{info.scale} fails its check "
                                f"({verification.problems[0]}; {len(verification.problems)} problems): nothing written")
        rounding = info.eval_rounding
        crops = lr_hr_crops(source_images(calib_dir, "validation"), info.scale, VALIDATION_SPEC)
        psnr_torch = crop_psnr(TorchRunner(model.network).infer, crops, info.scale, info.colour, rounding)
        psnr_coreml = crop_psnr(executor_infer(checked, "fp16", options.image_io, config.input_name), crops,
                                info.scale, info.colour, rounding)
        drop = check_coreml_accuracy(psnr_torch, psnr_coreml, limit_for(COREML_MAX_DROP, options.compression, max_drop),
                                 f"{info.name} ×{info.scale}", options.precision, options.compression)
        measured = {"validation_psnr_pytorch": f"{psnr_torch:.4f}", "validation_psnr_coreml": f"{psnr_coreml:.4f}",
                    "validation_drop_db": f"{drop:.4f}", "verification": json.dumps(verification.as_dict())}
        parts, part_reports = {}, {}
        if model.has_global_gate and not options.image_io:  # tiles share the whole image's decision through these
            parts, part_reports = export_gate_parts(model, options, work, stem, inputs)
            measured["gate_parts"] = json.dumps({part: path.name for part, path in parts.items()})
        describe(mlmodel, model, options, measured)
        final = work / target.name
        mlmodel.save(str(final))
        if _sha256(final / WEIGHTS_FILE) != _sha256(checked / WEIGHTS_FILE):
            raise SrDeployError("the saved weights differ from the verified ones: this is a bug, please report it")
        seal_package(final)
        size = sum(p.stat().st_size for p in final.rglob("*") if p.is_file()) / 2**20
        for path in parts.values():
            seal_package(path)
            replace_dir(path, target.parent / path.name)
        replace_dir(final, target)
        verification.package = str(target)
        return target, CoreMLReport(str(target), {**asdict(options), "shapes": options.shapes.as_dict()},
                                    verification.as_dict(), psnr_torch, psnr_coreml, drop, size, part_reports)
    finally:
        shutil.rmtree(work, ignore_errors=True)
