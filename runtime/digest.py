"""Artifacts that verify themselves: each records the sha256 of its own bytes.

Sealing: the artifact is serialized with a fixed 64-byte placeholder as the value of its ``srdeploy.sha256``
metadata entry, the sha256 of those bytes is taken, and the placeholder is overwritten with the digest's hex
(same length, so the file format is untouched). Checking: put the placeholder back over the recorded digest,
hash, compare. A damaged byte anywhere (weights, graph, metadata) is caught, before any runtime parses the
file, with hashlib alone. Works for every protobuf artifact whose metadata is a string map (ONNX, Core ML).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import SrDeployError

KEY = "srdeploy.sha256"
PLACEHOLDER = b"srdeploy: sha256 of this file with this text in its place".ljust(64, b".")


def seal(data: bytes, extra: bytes = b"") -> bytes:
    """``data`` (holding ``PLACEHOLDER`` once) with the digest of ``data + extra`` written in place of the
    placeholder (``extra``: a file that belongs with it, e.g. an OpenVINO IR's weights)."""
    if data.count(PLACEHOLDER) != 1:
        raise ValueError("a sealed artifact must hold the digest placeholder exactly once")
    return data.replace(PLACEHOLDER, hashlib.sha256(data + extra).hexdigest().encode())


def recorded(data: bytes, key: str) -> tuple[int, bytes] | None:
    """(offset, value) of the one 64-character string-map value under ``key`` in serialized ``data``."""
    mark = key.encode() + b"\x12\x40"  # a string-map entry in protobuf: the key, then field 2 (value), 64 bytes
    at = data.find(mark)
    if at < 0 or data.find(mark, at + 1) >= 0:
        return None
    start = at + len(mark)
    return start, data[start:start + 64]


def check(data: bytes, path: str | Path, fix: str) -> None:
    """A one-line error naming ``path`` and ``fix`` unless ``data`` holds one digest that matches its bytes."""
    found = recorded(data, KEY)
    if found is None:
        raise SrDeployError(f"artifact {path} carries no srdeploy digest (damaged, or not exported by this srdeploy "
                            f"version): {fix}")
    verify(data, found[0], path, fix)


def verify(data: bytes, start: int, path: str | Path, fix: str, extra: bytes = b"") -> None:
    """A one-line error unless the 64 bytes at ``start`` are the digest ``seal`` wrote for ``data + extra``."""
    recorded_digest = data[start:start + 64]
    if hashlib.sha256(data[:start] + PLACEHOLDER + data[start + 64:] + extra).hexdigest().encode() != recorded_digest:
        raise SrDeployError(f"artifact {path} is damaged (its bytes no longer match the sha256 recorded at export): "
                            f"{fix}")
