"""onnxruntime-web, pinned to one version, for the web target's page: vendored from the npm package where ``npm``
is available (``npm pack`` into srdeploy's cache, then the six files the page loads), otherwise loaded from a
pinned CDN URL; either way each file carries its subresource-integrity hash (sha384), which the page's import map
and its own fetch of the WebAssembly binary check."""
from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ...runtime.atomic import atomic_path
from ...runtime.cache import cache_root
from ...runtime.errors import SrDeployError

VERSION = "1.31.1"
CDN = f"https://cdn.jsdelivr.net/npm/onnxruntime-web@{VERSION}/dist/"
# The files the page loads, by role, with their sha384 in the npm package of VERSION (the CDN serves the same bytes);
# a vendored file is hashed again as it is copied.
FILES = {
    "wasm_entry": ("ort.wasm.min.mjs", "Vo83xJ0b4xRW+799QzqOViZ2AdoasAnbfsI9UCyxkEGv/8dtIqcHTZ4EJOlDMcfc"),
    "wasm_glue": ("ort-wasm-simd-threaded.mjs", "L9olMNCg9w3FaNhr+m7EAeeiUpM5zy2Nlh6APnoogtFXjsL4ZZZRXlYhSVJc1r3j"),
    "wasm_binary": ("ort-wasm-simd-threaded.wasm", "bQJgW/bZhNOlc9KU45Zu0dyd0EFfNpkOZjfHyH/90dkZQSBBGkFTsAJaabSyYA4Z"),
    "webgpu_entry": ("ort.webgpu.min.mjs", "aMG9NGKcj83ZD2AMjPev6sLctK3QhG+MTjMhAxuHlNCjMuYUrTBEHKo9NfA+UqZq"),
    "webgpu_glue": ("ort-wasm-simd-threaded.asyncify.mjs",
                    "MZXSqYGZtrCJ8cYZ26C4RYRYYoYtDVV2GnAEL1cLiD+oOr3MrUSe3Hur4S7NidC1"),
    "webgpu_binary": ("ort-wasm-simd-threaded.asyncify.wasm",
                      "Da9/alSN2rEHI5XIgPPOp70/HfJ82/URSSpUwy1h4UmGMPkJtb6PoMwvcBHy5h8P"),
}
FOLDER = "ort"  # where vendored files go in the page's folder


@dataclass(frozen=True)
class OrtFiles:
    """Where the page takes onnxruntime-web from: ``base`` (``ort/`` or the CDN URL), the files by role with their
    ``integrity``, and ``source`` in one line for people."""

    base: str
    integrity: dict[str, str]  # role → "sha384-…"
    source: str
    vendored: bool

    def as_dict(self) -> dict:
        return {"version": VERSION, "base": self.base, "vendored": self.vendored,
                "files": {role: {"name": FILES[role][0], "integrity": self.integrity[role]} for role in FILES}}


def sri(data: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


def npm_package(progress) -> Path | None:
    """The npm tarball of onnxruntime-web VERSION in srdeploy's cache (``npm pack`` once), or None without npm."""
    cached = cache_root() / "npm" / f"onnxruntime-web-{VERSION}.tgz"
    if cached.is_file():
        return cached
    npm = shutil.which("npm")
    if npm is None:
        return None
    progress(f"onnxruntime-web {VERSION}: npm pack (once, into {cached.parent})")
    cached.parent.mkdir(parents=True, exist_ok=True)
    scratch = cached.parent / f".pack-{VERSION}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    try:
        done = subprocess.run([npm, "pack", f"onnxruntime-web@{VERSION}", "--pack-destination", str(scratch),
                               "--silent"], capture_output=True, text=True, timeout=600)
        packed = scratch / f"onnxruntime-web-{VERSION}.tgz"
        if done.returncode != 0 or not packed.is_file():
            reason = (done.stderr.strip().splitlines() or ["no tarball"])[-1][:160]
            raise SrDeployError(f"npm pack onnxruntime-web@{VERSION} failed ({reason}): check npm's registry access, "
                                "or export where npm is not on PATH to load it from the CDN")
        with atomic_path(cached) as tmp:
            shutil.copyfile(packed, tmp)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return cached


def vendor(folder: Path, progress) -> OrtFiles:
    """onnxruntime-web's files in ``folder/ort`` from the npm package (their hashes checked against the pinned
    ones), or, without npm, the pinned CDN URL and hashes."""
    package = npm_package(progress)
    if package is None:
        return OrtFiles(CDN, {role: f"sha384-{digest}" for role, (_, digest) in FILES.items()},
                        f"onnxruntime-web {VERSION} from {CDN} (npm not found: the page needs that CDN; with npm on "
                        "PATH the export vendors it)", vendored=False)
    (folder / FOLDER).mkdir()
    integrity = {}
    with tarfile.open(package) as tar:
        for role, (name, digest) in FILES.items():
            data = tar.extractfile(f"package/dist/{name}").read()
            if sri(data) != f"sha384-{digest}":
                raise SrDeployError(f"{package} holds another {name} than onnxruntime-web {VERSION}'s: delete it and "
                                    "export again")
            (folder / FOLDER / name).write_bytes(data)
            integrity[role] = sri(data)
    return OrtFiles(f"./{FOLDER}/", integrity, f"onnxruntime-web {VERSION} vendored from its npm package into "
                    f"{FOLDER}/", vendored=True)
