"""The Android bundle (``--target android``): its files and their sha256, the facts the C++ reads, the Kotlin and
C++ parsed (tree-sitter), the Kotlin's native methods and the JNI functions one to one, and the build files'
paths inside the bundle; its ExecuTorch program for the CPU path (the gate parts as methods, the facts with the
program's bound, the AAR pinned to the exporter's version). Building the C++ against ncnn and comparing it with the Python session is a script, not
CI (``benchmarks/android_desktop_check.py``: ncnn's build takes long)."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from srdeploy import api
from srdeploy.runtime.errors import SrDeployError
from tests.conftest import parse_errors, weights

pytest.importorskip("ncnn", reason="ncnn is not installed: pip install ncnn pnnx (the dev extra has them)")
pytest.importorskip("pnnx", reason="pnnx is not installed: pip install pnnx (the dev extra has it)")
tree_sitter = pytest.importorskip("tree_sitter", reason="tree-sitter is not installed (the dev extra has it)")
kotlin = pytest.importorskip("tree_sitter_kotlin", reason="tree-sitter-kotlin is not installed (the dev extra has it)")
cpp = pytest.importorskip("tree_sitter_cpp", reason="tree-sitter-cpp is not installed (the dev extra has it)")

APP = Path("android/app/src/main")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """DSRNet ×2's bundle: four graphs (its gate parts), the most the C++ reads."""
    out = tmp_path_factory.mktemp("android") / "dsrnet_android"
    result = api.export_model("dsrnet", 2, target="android", weights=str(weights("dsrnet_x2.pth")), out=out,
                              progress=False)
    assert result.artifacts == [out] and result.as_dict()["target"] == "android"
    return out


def test_every_file_is_listed_with_its_sha256(bundle):
    manifest = json.loads((bundle / "srdeploy_bundle.json").read_text())
    files = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} - {"srdeploy_bundle.json"}
    assert set(manifest["files"]) == files
    assert all(hashlib.sha256((bundle / name).read_bytes()).hexdigest() == digest
               for name, digest in manifest["files"].items())
    assert manifest["model"] == "dsrnet" and manifest["colour"] == "rgb" and manifest["precision"] == "fp32"
    assert manifest["ncnn_report"]["fp32_max_abs_vs_pytorch"] <= 1e-5


def test_the_facts_the_cpp_reads_are_the_model_s(bundle):
    model = bundle / "assets" / "model"
    ncnn_manifest = json.loads((model / "srdeploy.json").read_text())
    lines = (model / "srdeploy.txt").read_text().splitlines()
    assert lines[:4] == ["scale 2", "colour rgb", "radius 19", "min_size 8"]
    graphs = {line.split()[1]: tuple(line.split()[2:]) for line in lines[4:]}
    assert graphs == {name: (g["input"], g["output"]) for name, g in ncnn_manifest["graphs"].items()}
    assert set(graphs) == {"gate_features", "gate_margin", "branch0", "branch1"}
    assert all((model / f"{name}.param").is_file() and (model / f"{name}.bin").is_file() for name in graphs)
    readme = (bundle / "README.md").read_text()
    release = json.loads((bundle / "srdeploy_bundle.json").read_text())["versions"]["ncnn_release"]
    assert f"ncnn-{release}-android-vulkan.zip" in readme and "./gradlew assembleDebug" in readme


def test_the_kotlin_and_the_cpp_parse(bundle):
    for path in (bundle / APP / "java/com/srdeploy/sample").glob("*.kt"):
        assert parse_errors(kotlin, path.read_bytes()) == [], path.name
    jni = (bundle / APP / "cpp/jni_bridge.cpp").read_text()
    sources = {"jni_bridge.cpp": jni.replace("JNIEXPORT ", "").replace(" JNICALL", ""),  # as the preprocessor leaves it
               **{p.name: p.read_text() for p in (bundle / "cpp").iterdir() if p.suffix in (".cpp", ".h")}}
    assert len(sources) == 4
    for name, source in sources.items():
        assert parse_errors(cpp, source.encode()) == [], name


def test_each_native_method_has_its_jni_function(bundle):
    kotlin_source = (bundle / APP / "java/com/srdeploy/sample/Upscaler.kt").read_text()
    package = re.search(r"^package ([\w.]+)", kotlin_source, re.M).group(1)
    natives = set(re.findall(r"external fun (\w+)\(", kotlin_source))
    jni = set(re.findall(r"Java_(\w+?)_Upscaler_(\w+)\(", (bundle / APP / "cpp/jni_bridge.cpp").read_text()))
    assert natives == {"load", "loadExecuTorch", "scale", "onVulkan", "upscale"}
    assert jni == {(package.replace(".", "_"), name) for name in natives}
    assert 'System.loadLibrary("srdeploy")' in kotlin_source
    assert "add_library(srdeploy SHARED" in (bundle / APP / "cpp/CMakeLists.txt").read_text()
    manifest = (bundle / APP / "AndroidManifest.xml").read_text()
    assert 'android:name=".MainActivity"' in manifest and (bundle / APP / "java/com/srdeploy/sample/MainActivity.kt").is_file()


def test_the_build_files_point_inside_the_bundle(bundle):
    """The app's CMake finds the shared C++ at cpp/, Gradle the assets at assets/ (paths relative to their files)."""
    cmake = (bundle / APP / "cpp/CMakeLists.txt").read_text()
    shared = re.search(r"set\(SHARED \$\{CMAKE_SOURCE_DIR\}/([./]+cpp)\)", cmake).group(1)
    assert ((bundle / APP / "cpp" / shared).resolve() / "srdeploy_sr.cpp").is_file()
    gradle = (bundle / "android/app/build.gradle.kts").read_text()
    assets = re.search(r'assets\.srcDir\("([^"]+)"\)', gradle).group(1)
    assert ((bundle / "android/app" / assets).resolve() / "model" / "srdeploy.txt").is_file()
    assert ((bundle / "android/app" / assets).resolve() / "input.png").is_file()
    desktop = (bundle / "cpp/CMakeLists.txt").read_text()
    assert "desktop_main.cpp srdeploy_sr.cpp" in desktop and (bundle / "build_desktop.sh").stat().st_mode & 0o100


def test_the_cpu_path_is_the_executorch_program_of_the_same_network(bundle, tmp_path):
    """assets/executorch: the FP32 program with DSRNet's four gate parts as methods (the names the C++ asks the
    Kotlin runner for; "model" maps to forward), equal to the bundle's ncnn model; its facts are the ncnn model's plus
    the program's largest input; Gradle compiles against the AAR of the version that lowered it."""
    pytest.importorskip("executorch", reason="ExecuTorch is not installed: pip install executorch (the dev extra has it)")
    import shutil
    from importlib import metadata

    from srdeploy.runtime.sessions.executorch import ExecuTorchSession
    from srdeploy.runtime.sessions.ncnn import NcnnSession
    from tests.conftest import held_out_batch

    folder = bundle / "assets" / "executorch"
    shutil.copytree(folder, tmp_path / "dsrnet.executorch")
    session = ExecuTorchSession(tmp_path / "dsrnet.executorch")
    assert sorted(session.runner.methods) == ["branch0", "branch1", "gate_features", "gate_margin"]
    x = held_out_batch("rgb")
    assert abs(session.infer(x) - NcnnSession(bundle / "assets" / "model").infer(x)).max() <= 1e-4
    model_facts = (bundle / "assets" / "model" / "srdeploy.txt").read_text()
    assert (folder / "srdeploy.txt").read_text() == model_facts + "max_size 320\n"
    version = metadata.version("executorch")
    assert f"executorchVersion={version}" in (bundle / "android" / "gradle.properties").read_text().splitlines()
    assert 'implementation("org.pytorch:executorch-android:${property("executorchVersion")}")' in \
        (bundle / "android/app/build.gradle.kts").read_text()
    runner = (bundle / APP / "java/com/srdeploy/sample/ExecuTorchRunner.kt").read_text()
    assert 'if (graph == "model") "forward" else graph' in runner and "module.execute(method," in runner
    assert f"org.pytorch:executorch-android:{version}" in (bundle / "README.md").read_text()


def test_a_foreign_folder_is_refused_and_left_alone(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "mine.jpg").write_bytes(b"a user's file")
    with pytest.raises(SrDeployError, match="exists and is not an srdeploy Android bundle: choose an empty or new "
                                            "--out folder"):
        api.export_model("fsrcnn", 2, target="android", out=tmp_path / "photos", progress=False)
    assert [p.name for p in (tmp_path / "photos").iterdir()] == ["mine.jpg"]
