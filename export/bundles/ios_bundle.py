"""``export --target ios``: a folder an iOS developer drops into Xcode.

    DIR/
      NAME.mlpackage       the checked Core ML package (tensor interface)
      NAME_PART.mlpackage  a whole-image gate's parts (DSRNet: gate_features, gate_margin, branch0, branch1)
      CLASS.swift          load the model, upscale a CGImage / CVPixelBuffer with seamless tiling
      README.md            measured quality, the checks that passed, supported sizes, how to use it

Written into a temporary folder and renamed into place: a failed export leaves nothing behind.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..coreml.coreml_export import CoreMLOptions
from ..coreml.coreml_gate_parts import part_file
from ..coreml.coreml_package import CoreMLReport, export_package
from .ios_swift import SwiftModel, swift_source
from ...models.loading import SrModel
from ...models.registry import default_checkpoint
from ...runtime.atomic import atomic_dir, check_bundle_folder
from ...runtime.errors import SrDeployError, command
from ...runtime.tables import markdown_table

BUNDLE_MARKER = "srdeploy-ios.json"


def swift_model(model: SrModel, options: CoreMLOptions, resource: str, gate_channels: int = 0) -> SwiftModel:
    """The Swift file's constants; ``gate_channels``: the width of a whole-image gate's features (its parts
    exported beside the package), 0 for none."""
    info, config = model.info, model.info.export
    bounds = options.shapes.bounds(info.channels)
    return SwiftModel(
        class_name=f"{info.name.replace('_', ' ').title().replace(' ', '')}X{info.scale}Upscaler",
        resource=resource, input_name=config.input_name, output_name=config.output_name, scale=info.scale,
        channels=info.channels, overlap=config.receptive_radius, sizes=options.shapes.enumerated,
        min_size=tuple(bounds["min"][2:]), max_size=tuple(bounds["max"][2:]), default_size=options.shapes.default,
        fp16_io=options.fp16_io, whole_image_only=config.whole_image, gate_channels=gate_channels,
    )


def _tiling_note(swift: SwiftModel) -> str:
    if swift.whole_image_only:
        return ("This network looks at the whole image (global pooling or attention), so the Swift code never\n"
                "tiles: an image must fit one size the package accepts (else `UpscaleError.imageTooLargeForOneWindow`).\n"
                "Tiles alone would compute something else than the whole image.")
    gate = ("" if not swift.gate_channels else
            f"\n\nThe network's gate reads the whole image, so tiles alone could pick another branch than the whole image.\n"
            f"The four gate-part packages beside it (`{swift.resource}_gate_features`, `_gate_margin`, `_branch0`,\n"
            "`_branch1`; add them to the target too) let the Swift code decide once: the gate's features summed over\n"
            "the tile cores (the whole image's mean, exactly), the gate's margin from that mean, and every tile run\n"
            f"through the chosen branch, as {command('upscale')} does. Each part passed the same checks as the package.")
    return (f"Images larger than a tile are processed in tiles with {swift.overlap} low-resolution pixels of context on every\n"
            "side (the network's receptive radius), keeping only each tile's core: the result equals a whole-image run\n"
            f"(the same rule as {command('upscale')}, tested in srdeploy's suite). Range-flexible packages tile at\n"
            f"their default size, {swift.default_size[0]}×{swift.default_size[1]}, the one size Core ML runs on the Neural Engine."
            + gate)


def bundle_readme(model: SrModel, report: CoreMLReport, swift: SwiftModel) -> str:
    info, v = model.info, report.verification
    official = default_checkpoint(info.name, info.scale)
    cases = [[name, "×".join(map(str, c["shape"])), f"{c['fp32_max_abs']:.1e}", f"{c['fp16_psnr']:.1f}",
              "-" if c["fp16_off_by_level_pct"] is None else f"{c['fp16_off_by_level_pct']:.3f}", {None: "-", True: "equal", False: "DIFFER"}[c["decisions_equal"]]]
             for name, c in v["cases"].items()]
    quality = [["held-out photo crops (PyTorch FP32)", f"{report.validation_psnr_pytorch:.3f}", ""],
               ["held-out photo crops (this package, FP16 emulated)", f"{report.validation_psnr_coreml:.3f}",
                f"{-report.drop_db:+.4f}"]]
    if official and official.sha256 == info.checkpoint_sha256:
        quality += [[f"{d} (PyTorch FP32, srdeploy eval)", f"{m.psnr:.2f}", ""] for d, m in official.metrics.items()]
    sizes = (", ".join(f"{h}×{w}" for h, w in swift.sizes) + " (enumerated: each runs on the Neural Engine)"
             if swift.sizes else f"any H×W from {swift.min_size[0]}×{swift.min_size[1]} to "
             f"{swift.max_size[0]}×{swift.max_size[1]} (range: the Neural Engine only at the default size)")
    options = report.options
    return f"""# {info.name} ×{info.scale} for iOS (srdeploy bundle)

`{swift.resource}.mlpackage`: Core ML ML program, {options['precision'].upper()} compute, weights
{options['compression']}, minimum deployment target {options['deployment_target']}, {report.size_mb:.2f} MB.

- Input `{swift.input_name}`: 1×{info.channels}×H×W {'FP16' if swift.fp16_io else 'FP32'} multi-array,
  {'RGB' if info.channels == 3 else 'BT.601 luminance (Y)'} in [0, 1]. Output `{swift.output_name}`:
  1×{info.channels}×{info.scale}H×{info.scale}W, same layout.
- Sizes (low-resolution H×W): {sizes}.

## Use it
Add `{swift.resource}.mlpackage` and `{swift.class_name}.swift` to your target, then:

```swift
let upscaler = try {swift.class_name}()
let upscaled: CGImage = try upscaler.upscale(image)         // or upscale(pixelBuffer)
```

{_tiling_note(swift)}

## Quality (Y channel PSNR, dB)
{markdown_table(["data", "PSNR", "Δ vs PyTorch"], quality)}

## Checks run before this bundle was written (on Linux, without Core ML)
- Constants: {v['constants']['checked']} checkpoint tensors found in the package
  {'bit-exactly (FP16-rounded)' if not v['constants']['compressed'] else 'after decompression, within the format error'}.
- Outputs of the package's MIL program, run by srdeploy's NumPy executor on held-out photo crops:

{markdown_table(["case", "input", "FP32-mode max abs", "FP16-emulated PSNR", "% >1 level", "gate"], cases)}

What this cannot catch: the Core ML compiler's own rewrites and the Neural Engine's or GPU's accumulation
order. Check on a device once: `upscaler.upscale` on a photo vs `srdeploy upscale` on the same photo.
"""


def check_destination(out: str | Path) -> Path:
    """``out`` may be new, empty, or a previous iOS bundle (replaced); anything else is refused."""
    return check_bundle_folder(out, BUNDLE_MARKER, "srdeploy iOS bundle")


def write_ios_bundle(model: SrModel, options: CoreMLOptions, out: str | Path, calib_dir: str | None = None,
                     max_drop: float | None = None) -> tuple[Path, CoreMLReport]:
    """The bundle for ``model`` in ``out`` (new, empty or a previous bundle, which is replaced)."""
    if options.image_io:
        raise SrDeployError("the iOS bundle's Swift code drives the tensor interface: drop --image-io "
                            "(or use --target coreml for an image-typed package)")
    out = check_destination(out)
    with atomic_dir(out) as work:
        package, report = export_package(model, options, work, calib_dir, max_drop)
        margin = next(iter(report.gate_parts["gate_margin"]["cases"].values())) if report.gate_parts else None
        swift = swift_model(model, options, package.stem, margin["shape"][1] if margin else 0)
        (work / f"{swift.class_name}.swift").write_text(swift_source(swift))
        (work / "README.md").write_text(bundle_readme(model, report, swift))
        (work / BUNDLE_MARKER).write_text(json.dumps({"package": package.name, "swift": f"{swift.class_name}.swift",
                                                      "gate_parts": {part: part_file(package.stem, part)
                                                                     for part in report.gate_parts},
                                                      "report": report.as_dict()}, indent=2))
    report.package = str(out / package.name)
    return out, report


def check(options, out: Path) -> None:
    """The bundle's folder (new, empty or a previous bundle) and its Core ML options, or one line."""
    from ..coreml.target import check as check_coreml

    check_destination(out)
    check_coreml(options, out)


def export(net: SrModel, options, out: Path, progress):
    """The iOS bundle in ``out``: the checked package, Swift code and README (``export.main`` shape)."""
    from ..coreml.target import checked_package

    return checked_package(net, options, out, progress, "ios", write_ios_bundle)
