"""The ``android`` target: a folder for an Android app on ncnn, the runtime of the SR apps people run there.

The bundle holds the ncnn model (``export.ncnn``: gated on ncnn itself) with its facts for C++
(``assets/model/srdeploy.txt``), a sample image, a minimal app (``android/``: a Kotlin activity and class, the JNI
bridge, Gradle and CMake files) whose native library is the bundle's upscaler (``cpp/srdeploy_sr.cpp``: tiles with
the receptive radius as context, DSRNet's gate decided once on the whole image, luma networks with Pillow's
bicubic chroma), the desktop build of that same file (``cpp/``, ``build_desktop.sh``) and a README with the exact
steps; ``srdeploy_bundle.json`` lists every file's sha256. Where ExecuTorch is installed, the bundle also holds the
FP32 ExecuTorch program (``assets/executorch/``, ``export.executorch``: gated on ExecuTorch itself) for phones
without Vulkan: the app runs its graphs through ExecuTorch's Android AAR (``ExecuTorchRunner.kt``) under the same
C++ tiling and colour. The app's sources are files in ``android_app/``, copied
as they are; srdeploy's tests parse the Kotlin and C++ (tree-sitter), and ``benchmarks/android_desktop_check.py``
builds the C++ against ncnn from source and compares its output with the Python session's.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import replace
from importlib import metadata
from pathlib import Path

from ..executorch.pte_export import export_executorch
from ..ncnn.ncnn_export import import_pnnx
from ..ncnn.target import gated_folder
from ..options import ExportOptions, ExportResult, Progress, result_for
from ...calib.data import source_images
from ...models.loading import SrModel
from ...runtime import images
from ...runtime.atomic import atomic_dir, check_bundle_folder
from ...runtime.precision import Precision
from ...runtime.sessions.executorch import unavailable as executorch_unavailable
from ...runtime.sessions.ncnn import MANIFEST, import_ncnn

SKELETON = Path(__file__).resolve().parent / "android_app"
BUNDLE_MANIFEST = "srdeploy_bundle.json"
FORMAT = "srdeploy-android-1"
MODEL = Path("assets/model")
SAMPLE = 128  # LR pixels of the sample image's side
EXECUTORCH = Path("assets/executorch")
DEFAULT_EXECUTORCH_AAR = "1.5.1"  # the AAR the app compiles against when no program is bundled (the tested version)


def check(options: ExportOptions, out: Path) -> None:
    """The bundle's folder (new, empty or a previous bundle), pnnx and ncnn, or one line (nothing written)."""
    check_bundle_folder(out, BUNDLE_MANIFEST, "srdeploy Android bundle")
    import_pnnx()
    import_ncnn()


def facts(manifest: dict) -> str:
    """``srdeploy.txt``: what the C++ upscaler reads of the model (scale, colour, context, graphs and blobs)."""
    meta = manifest["metadata"]
    config, bounds = json.loads(meta["export_config"]), json.loads(meta["shape_bounds"])
    lines = [f"scale {meta['scale']}", f"colour {meta['colour']}", f"radius {config['receptive_radius']}",
             f"min_size {bounds['min'][2]}"]
    lines += [f"graph {name} {graph['input']} {graph['output']}" for name, graph in manifest["graphs"].items()]
    return "\n".join(lines) + "\n"


def executorch_section(versions: dict) -> str:
    if "executorch" not in versions:
        return """
## The CPU path on ExecuTorch

This bundle has no ExecuTorch program (ExecuTorch was not installed where it was exported: `pip install
executorch`, then export again); the app runs ncnn on the CPU where the phone has no Vulkan.
"""
    return f"""
## The CPU path on ExecuTorch

`assets/executorch/model.pte` is the same network as an ExecuTorch {versions['executorch']} program lowered to
XNNPACK (FP32, checked by ExecuTorch's runtime against PyTorch when exported). Where the phone has no Vulkan the app
runs it on the CPU with ExecuTorch's Android AAR, `org.pytorch:executorch-android:{versions['executorch']}` from Maven
Central (`android/gradle.properties` pins it; keep it at the version the program was lowered with):
`Upscaler(assets, ExecuTorchRunner(context)).upscale(bitmap)`. The C++ keeps the tiling (cut to the program's
largest input, `max_size` in `assets/executorch/srdeploy.txt`), DSRNet's gate and the colour; `ExecuTorchRunner.run`
calls `Module.execute(method, EValue.from(Tensor.fromBlob(floats, shape)))` for each tile.
"""


def readme(name: str, scale: int, precision: str, versions: dict) -> str:
    return f"""# {name} ×{scale} ({precision}) on Android, with ncnn

Exported by srdeploy: the model in `assets/model/` (ncnn {versions['ncnn']}, converted by pnnx {versions['pnnx']};
`srdeploy.json` there is srdeploy's manifest, `srdeploy.txt` what the C++ reads), a sample image
(`assets/input.png`), the upscaler (`cpp/srdeploy_sr.cpp`, the same file on Android and on a desktop) and a
minimal app (`android/`). Every file's sha256 is in `{BUNDLE_MANIFEST}`.

## Build the app

1. Download ncnn's Android release with Vulkan, `ncnn-{versions['ncnn_release']}-android-vulkan.zip`, from
   https://github.com/Tencent/ncnn/releases (the version the model was converted with; a later one reads it too),
   and unzip it so that `android/ncnn-android-vulkan/arm64-v8a/lib/cmake/ncnn/ncnnConfig.cmake` exists.
2. Open `android/` in Android Studio (Koala or later) with the NDK 26.3.11579264 and CMake 3.22.1 from its SDK
   Manager, or from a shell with a Gradle 8.7+ install: `cd android && gradle wrapper && ./gradlew assembleDebug`.
3. Install and start it: `adb install app/build/outputs/apk/debug/app-debug.apk`. It upscales `assets/input.png`
   and says how long it took and whether it ran on the GPU (Vulkan) or the CPU.

In your own app, copy `cpp/`, `app/src/main/cpp/`, `Upscaler.kt` and `assets/model/`, then:
`Upscaler(assets).upscale(bitmap)` (tiles of 256 input pixels by default: bounded memory, the same pixels as
one pass over the whole image).

## The same code on a desktop

`bash build_desktop.sh NCNN_INSTALL IN.ppm OUT.ppm [TILE]` builds `cpp/` against an ncnn install (`cmake
--install` of ncnn built from source) and upscales a binary PPM: the same C++ as the app, which srdeploy checks
against its Python session (`benchmarks/android_desktop_check.py` in srdeploy).
""" + executorch_section(versions)


def export(net: SrModel, options: ExportOptions, out: Path, progress: Progress) -> ExportResult:
    """The Android bundle in ``out`` (``export.main`` shape): the ncnn model through its gate, the app, the C++."""
    precision = Precision.parse(options.precision)
    versions = {package: metadata.version(package) for package in ("pnnx", "ncnn")}
    versions["ncnn_release"] = versions["ncnn"].rsplit(".", 1)[-1]
    info = net.info
    missing = executorch_unavailable()
    if missing:
        progress(f"android bundle: no ExecuTorch CPU path ({missing})")
    else:
        versions["executorch"] = metadata.version("executorch")
    with tempfile.TemporaryDirectory() as scratch:
        folder, measured, report = gated_folder(net, options, Path(scratch), progress, versions)
        program = None
        if not missing:
            progress(f"android bundle: the ExecuTorch {versions['executorch']} program for the CPU path (FP32)")
            program, executorch_measured = export_executorch(net, Precision.FP32, Path(scratch) / "executorch", None,
                                                             options.calib, None, {"executorch": versions["executorch"]},
                                                             progress.shown)
        with atomic_dir(check_bundle_folder(out, BUNDLE_MANIFEST, "srdeploy Android bundle")) as work:
            shutil.copytree(SKELETON, work, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copytree(folder, work / MODEL)
            manifest = json.loads((folder / MANIFEST).read_text())
            (work / MODEL / "srdeploy.txt").write_text(facts(manifest))
            if program is not None:
                shutil.copytree(program, work / EXECUTORCH)
                largest = executorch_measured["max_hw"]
                (work / EXECUTORCH / "srdeploy.txt").write_text(facts(manifest) + f"max_size {min(largest)}\n")
            (work / "android" / "gradle.properties").write_text(
                "android.useAndroidX=true\n"
                f"executorchVersion={versions.get('executorch', DEFAULT_EXECUTORCH_AAR)}\n")
            photo = images.read_rgb(source_images(options.calib, "validation")[0])[:SAMPLE, :SAMPLE]
            images.write_image(work / "assets" / "input.png", photo)
            (work / "README.md").write_text(readme(info.name, info.scale, str(precision), versions))
            files = {p.relative_to(work).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                     for p in sorted(work.rglob("*")) if p.is_file()}
            bundle = {"format": FORMAT, "model": info.name, "scale": info.scale, "precision": str(precision),
                      "colour": info.colour, "versions": versions, "ncnn_report": measured, "files": files}
            if program is not None:
                bundle["executorch_report"] = executorch_measured
            (work / BUNDLE_MANIFEST).write_text(json.dumps(bundle, indent=2))
    cpu_path = "" if missing else ", the ExecuTorch FP32 program for the CPU"
    progress(f"android bundle: ncnn {precision} model{cpu_path}, the app (Kotlin + JNI), the C++ upscaler and its "
             "desktop build")
    result = result_for(net, "android", replace(options, precision=str(precision)), report, ncnn=measured)
    result.artifacts.append(out)
    return result
