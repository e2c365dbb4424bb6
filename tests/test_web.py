"""The web target: the folder ``export --target web`` writes (its manifest, its pinned onnxruntime-web with
integrity hashes, its refusals) and the page itself in a real browser, Debian's chromium headless on loopback:
Set5 through FSRCNN, LESRCNN and DSRNet ×2 equal to ONNX Runtime in Python within one 8-bit level, tiles equal to
the whole image, damaged models, tampered runtime files and non-images refused on the page, a screenshot showing
both images."""
from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import need_shared
from srdeploy import api
from srdeploy.benchmarks import web_browser
from srdeploy.export.web import ort_files
from srdeploy.export.web.target import MANIFEST
from srdeploy.runtime import images
from srdeploy.runtime.pipeline import upscale_picture

SET5_X2 = ("baby", "bird", "butterfly", "head", "woman")
no_browser = web_browser.unavailable()
browser_only = pytest.mark.skipif(no_browser is not None, reason=f"the page runs in chromium: {no_browser}")


def export_web(model: str, out: Path, precision: str = "fp32") -> Path:
    need_shared("weights", f"{model}_x2.pth")
    api.export_model(model, 2, target="web", precision=precision, out=out, progress=False)
    return out


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("web")
    return {model: export_web(model, root / f"{model}_x2_web") for model in ("fsrcnn", "lesrcnn", "dsrnet")}


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> Path:
    """Set5's ×2 inputs, a translucent PNG (alpha ramp over a Set5 image) and a file that is not an image."""
    set5 = need_shared("datasets", "Set5", "LR_bicubic", "X2")
    folder = tmp_path_factory.mktemp("pictures")
    for name in SET5_X2:
        shutil.copy(set5 / f"{name}x2.png", folder / f"{name}.png")
    rgb = images.read_rgb(set5 / "birdx2.png")
    ramp = np.tile(np.linspace(0, 255, rgb.shape[1]).astype(np.uint8), (rgb.shape[0], 1))
    Image.fromarray(np.dstack([rgb, ramp])).save(folder / "translucent.png")
    (folder / "not_an_image.png").write_bytes(b"this is text, not a PNG\n")
    return folder


def python_output(folder: Path, source: Path) -> np.ndarray:
    """What srdeploy's Python runtime makes of ``source`` with the folder's own graph on ONNX Runtime (RGB, or RGBA
    where the input has alpha)."""
    import onnxruntime as ort

    manifest = json.loads((folder / MANIFEST).read_text())
    session = ort.InferenceSession(str(folder / "model.onnx"))
    name = session.get_inputs()[0].name
    picture = upscale_picture(images.read_picture(source), lambda x: session.run(None, {name: x})[0], manifest["colour"])
    return picture.rgb if picture.alpha is None else np.dstack([picture.rgb, picture.alpha])


def page_output(path: Path) -> np.ndarray:
    """The page's PNG as RGB (its encoder may write opaque pixels as RGBA), or RGBA where it has transparency."""
    pixels = np.asarray(Image.open(path))
    return pixels[..., :3] if pixels.shape[2] == 4 and pixels[..., 3].min() == 255 else pixels


# ---------------------------------------------------------------------------------------------------- the folder


def test_folder_holds_the_page_the_model_and_pinned_runtime_with_their_hashes(folders):
    folder = folders["fsrcnn"]
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["format"] == "srdeploy-web-1" and manifest["scale"] == 2 and manifest["colour"] == "y"
    for name, sha in manifest["files"].items():  # every file of the folder, each with its sha256
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == sha, name
    assert sorted(manifest["files"]) == sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                                               if p.is_file() and p.name != MANIFEST)
    assert manifest["graphs"]["model"]["sha256"] == manifest["files"]["model.onnx"]
    html = (folder / "index.html").read_text()
    mapping = json.loads(re.search(r'<script type="importmap">(.*?)</script>', html, re.S).group(1))
    assert mapping["imports"] == {"onnxruntime-web/wasm": "./ort/ort.wasm.min.mjs",
                                  "onnxruntime-web/webgpu": "./ort/ort.webgpu.min.mjs"}
    for url, integrity in mapping["integrity"].items():  # the vendored bytes are onnxruntime-web 1.31.1's
        digest = base64.b64encode(hashlib.sha384((folder / url).read_bytes()).digest()).decode()
        assert integrity == f"sha384-{digest}"
        assert integrity.removeprefix("sha384-") in {d for _, d in ort_files.FILES.values()}
    assert json.loads((folder / MANIFEST).read_text())["ort"]["version"] == ort_files.VERSION == "1.31.1"


def test_dsrnet_folder_carries_its_gate_parts(folders):
    manifest = json.loads((folders["dsrnet"] / MANIFEST).read_text())
    assert manifest["global_gate"] is True
    assert set(manifest["graphs"]) == {"model", "gate_features", "gate_margin", "branch0", "branch1"}


def test_without_npm_the_page_loads_the_pinned_cdn_with_integrity(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ort_files.shutil, "which", lambda name: None)  # npm not on PATH, nothing cached
    monkeypatch.setenv("SRDEPLOY_CACHE_DIR", str(tmp_path / "empty-cache" / "checkpoints"))
    need_shared("weights", "fsrcnn_x2.pth")
    result = api.export_model("fsrcnn", 2, target="web", out=tmp_path / "web", progress=True)
    folder = result.artifacts[0]
    assert not (folder / "ort").exists()
    html = (folder / "index.html").read_text()
    mapping = json.loads(re.search(r'<script type="importmap">(.*?)</script>', html, re.S).group(1))
    assert mapping["imports"]["onnxruntime-web/wasm"] == ort_files.CDN + "ort.wasm.min.mjs"
    assert mapping["integrity"][ort_files.CDN + "ort-wasm-simd-threaded.mjs"] == \
        "sha384-" + ort_files.FILES["wasm_glue"][1]
    assert "from https://cdn.jsdelivr.net/npm/onnxruntime-web@1.31.1/dist/ (npm not found" in capsys.readouterr().err


def test_refusals_before_any_work(tmp_path, capsys):
    from srdeploy.cli import main

    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "keep.jpg").write_bytes(b"mine")
    assert main(["export", "--model", "fsrcnn", "--target", "web", "--out", str(foreign)]) == 2
    assert "is not an srdeploy web folder: choose an empty or new --out folder" in capsys.readouterr().err
    assert (foreign / "keep.jpg").read_bytes() == b"mine"
    assert main(["export", "--model", "fsrcnn", "--target", "web", "--fp16-io", "--out", str(tmp_path / "w")]) == 2
    assert "--fp16-io: the page feeds the graph float32 tensors" in capsys.readouterr().err
    assert main(["serve", str(foreign)]) == 2
    assert "is not a web export (no srdeploy-web.json)" in capsys.readouterr().err


def test_serve_sets_the_headers_of_webassembly_threads(folders):
    import urllib.request

    from srdeploy.runtime import web_serve

    httpd, base = web_serve.in_background(folders["fsrcnn"])
    try:
        with urllib.request.urlopen(base + "ort/ort-wasm-simd-threaded.wasm") as response:
            assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
            assert response.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
            assert response.headers["Content-Type"] == "application/wasm"
        with pytest.raises(OSError):  # a port in use is refused, not shared
            web_serve.server(folders["fsrcnn"], httpd.server_address[1])
    finally:
        httpd.shutdown()


# ---------------------------------------------------------------------------------------------------- in chromium


@browser_only
@pytest.mark.slow
@pytest.mark.parametrize("model", ["fsrcnn", "lesrcnn", "dsrnet"])
def test_set5_in_the_browser_equals_python_within_one_level(folders, pictures, model):
    folder = folders[model]
    names = [f"{name}.png" for name in SET5_X2]
    with web_browser.browser(folder, pictures) as browser:
        results = browser.open([browser.url(name) for name in names] + [browser.url("baby.png", tile=64)])
        for name, result in zip(names + ["baby.png (tiled)"], results):
            assert result.done, (name, result.title, result.console)
            assert result.report["threads"] == 2 or result.report["threads"] == 1 and not result.report["isolated"]
            got = page_output(result.output)
            expected = python_output(folder, pictures / name.split()[0])
            assert got.shape == expected.shape
            assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1, name
        assert results[-1].report["tiles"] == 16  # 256² in tiles of 64: the gate decided once over all of them


@browser_only
@pytest.mark.slow
def test_tiles_and_alpha_equal_python(folders, pictures, tmp_path):
    """A translucent PNG through a luma network (Pillow's bicubic chroma and alpha, the colour under transparent
    pixels kept): whole and tiled, both within one level of Python's."""
    folder = folders["fsrcnn"]
    with web_browser.browser(folder, pictures, tmp_path) as browser:
        whole, tiled = browser.open([browser.url("translucent.png", tile=0), browser.url("translucent.png", tile=40)])
    expected = python_output(folder, pictures / "translucent.png")
    assert expected.shape[2] == 4
    assert tiled.report["tiles"] == 16 and whole.report["tiles"] == 1
    for result in (whole, tiled):
        got = page_output(result.output)
        assert got.shape == expected.shape
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def damaged_copy(folder: Path, into: Path, name: str, change) -> Path:
    copy = into / f"{folder.name}-{name.replace('/', '_')}"
    shutil.copytree(folder, copy)
    change(copy / name)
    return copy


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def append_comment(path: Path) -> None:
    path.write_text(path.read_text() + "\n// changed\n")


@browser_only
@pytest.mark.slow
def test_the_page_refuses_in_one_line(folders, pictures, tmp_path):
    folder = folders["fsrcnn"]
    cases = {
        "model.onnx": (flip_byte, "model.onnx does not match its sha256 in srdeploy-web.json (damaged or replaced): "
                                  "export the folder again"),
        # valid JavaScript, changed: only the import map's integrity tells
        "ort/ort-wasm-simd-threaded.mjs": (append_comment, "cannot be loaded by onnxruntime-web"),
        "ort/ort.wasm.min.mjs": (append_comment, "onnxruntime-web cannot be loaded"),
        "ort/ort-wasm-simd-threaded.wasm": (flip_byte, "onnxruntime-web's ort-wasm-simd-threaded.wasm cannot be fetched"),
        MANIFEST: (lambda p: p.write_text(p.read_text().replace('"max_pixels": 100000000', '"max_pixels": 1000')),
                   "baby.png has 256×256 = 0 MP, above the 0 MP limit: downscale it"),
    }
    for name, (change, message) in cases.items():
        copy = damaged_copy(folder, tmp_path, name, change)
        with web_browser.browser(copy, pictures) as browser:
            result, = browser.open([browser.url("baby.png")])
        assert result.title.startswith("error") and message in result.error, (name, result.error)
        assert "\n" not in result.error and not result.output
    with web_browser.browser(folder, pictures) as browser:
        not_image, bad_tile = browser.open([browser.url("not_an_image.png"), browser.url("baby.png", tile="big")])
    assert not_image.error == "not_an_image.png is not an image this browser can decode: pass a PNG, JPEG or WebP file"
    assert bad_tile.error == "tile=big is not a whole number: pass tile=N"
    assert not any("pageerror" in line for line in not_image.console + bad_tile.console)  # no uncaught exception


@browser_only
@pytest.mark.slow
def test_screenshot_shows_both_images(folders, pictures, tmp_path):
    folder = folders["lesrcnn"]
    with web_browser.browser(folder, pictures, tmp_path) as browser:
        result, = browser.open([browser.url("butterfly.png")], screenshot=tmp_path / "page.png")
    shot = np.asarray(Image.open(tmp_path / "page.png").convert("RGB")).astype(float)
    shown = {"srdeploy-input": np.asarray(Image.open(pictures / "butterfly.png").convert("RGB")),
             "srdeploy-output": np.asarray(Image.open(result.output).convert("RGB"))}
    for element, expected in shown.items():
        left, top, width, height = (round(v) for v in result.images[element]["box"])
        assert width > 100 and height > 100, element
        crop = shot[top:top + height, left:left + width]
        scaled = np.asarray(Image.fromarray(expected).resize((width, height), Image.BILINEAR)).astype(float)
        assert np.abs(crop - scaled).mean() < 12, element  # the image is on the page where the page says
        assert np.abs(crop - scaled[::-1]).mean() > 30, element  # and that test tells a wrong picture apart


@browser_only
@pytest.mark.slow
def test_webgpu_on_swiftshader_equals_python(folders, pictures, tmp_path):
    """WebGPU on Chromium's software adapter (SwiftShader): the page's WebGPU path computes what Python does (no
    timing: a software adapter says nothing of a GPU's speed)."""
    folder = folders["fsrcnn"]
    with web_browser.browser(folder, pictures, tmp_path) as browser:
        result, = browser.open([browser.url("bird.png", backend="webgpu")], flags=web_browser.SWIFTSHADER_WEBGPU)
        plain, = browser.open([browser.url("bird.png", backend="webgpu")])
    assert result.done, result.error
    assert result.report["backend"] == "webgpu"
    got, expected = page_output(result.output), python_output(folder, pictures / "bird.png")
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    assert plain.error == "this browser offers no WebGPU adapter: drop backend=webgpu to run on WebAssembly"


@browser_only
def test_without_isolation_the_page_runs_on_one_thread(folders, pictures, tmp_path):
    """A plain static server (no COOP/COEP): no WebAssembly threads, the same pixels on one."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folders["fsrcnn"]))
    handler.log_message = lambda *args: None
    plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    try:
        with web_browser.browser(folders["fsrcnn"], pictures, tmp_path) as browser:
            browser.page_base = f"http://127.0.0.1:{plain.server_address[1]}/"
            result, = browser.open([browser.url("head.png")])
    finally:
        plain.shutdown()
    assert result.done, (result.error, result.console)
    assert result.report["isolated"] is False and result.report["threads"] == 1
    assert np.abs(page_output(result.output).astype(int) -
                  python_output(folders["fsrcnn"], pictures / "head.png").astype(int)).max() <= 1
