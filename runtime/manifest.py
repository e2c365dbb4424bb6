"""The sealed manifest of an artifact folder (``NAME.ncnn``, ``NAME.executorch``): ``srdeploy.json`` beside the
runtime's own files, which have no room for metadata. It holds the srdeploy metadata, the files and a sha256
sealed over the manifest and every file (in name order), checked on every open."""
from __future__ import annotations

import json
from pathlib import Path

from . import digest
from .atomic import inside
from .errors import SrDeployError, shown

MANIFEST = "srdeploy.json"
_DIGEST = '"sha256": "'


def seal_manifest(manifest: dict, files: dict[str, bytes]) -> bytes:
    """The manifest's bytes with the sha256 over them and every file (in name order) in its ``sha256`` entry."""
    text = json.dumps({**manifest, "sha256": digest.PLACEHOLDER.decode()}, indent=2).encode()
    return digest.seal(text, extra=b"".join(files[name] for name in sorted(files)))


def write_manifest(folder: Path, manifest: dict, files: dict[str, bytes]) -> None:
    """``files`` and their sealed manifest written into ``folder`` (a temporary folder renamed when complete)."""
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / MANIFEST).write_bytes(seal_manifest({**manifest, "files": sorted(files)}, files))


def read_manifest(folder: Path, fmt: str, reexport: str, runtime: str) -> tuple[dict, dict[str, bytes]]:
    """The manifest of an artifact folder of format ``fmt`` and its files' bytes, after the seal is checked; one
    line naming ``reexport`` if not (``runtime``: whose files carry no metadata, for the message)."""
    if not (folder / MANIFEST).is_file():
        raise SrDeployError(f"{folder} has no {MANIFEST}: it is not an srdeploy {runtime} artifact ({runtime}'s own "
                            f"files carry no metadata); {reexport}")
    data = (folder / MANIFEST).read_bytes()
    try:
        manifest = json.loads(data)
        names = sorted(manifest["files"])
    except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: [[[… a thousand deep
        raise SrDeployError(f"{folder / MANIFEST} is damaged (not the manifest srdeploy writes): {reexport}") from None
    outside = next((name for name in names if not isinstance(name, str) or inside(folder, name) is None), None)
    if outside is not None:
        raise SrDeployError(f"{folder / MANIFEST} names {str(outside)[:60]!r}, outside the artifact's folder: refused "
                            f"unread; {reexport}")
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise SrDeployError(f"artifact {folder} is incomplete ({shown(', '.join(missing), 120)} missing): {reexport}")
    files = {name: (folder / name).read_bytes() for name in names}
    at = data.find(_DIGEST.encode())
    if at < 0 or manifest.get("format") != fmt:
        raise SrDeployError(f"{folder / MANIFEST} carries no srdeploy digest: {reexport}")
    digest.verify(data, at + len(_DIGEST), folder, reexport, extra=b"".join(files[name] for name in names))
    metadata = manifest.get("metadata")
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise SrDeployError(f"{folder / MANIFEST} is damaged (its metadata is not a map of strings): {reexport}")
    return manifest, files
