"""Checkpoint resolution, download and every way a checkpoint can be wrong."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from srdeploy import models
from srdeploy.models import checkpoints
from srdeploy.models.registry import default_checkpoint
from srdeploy.runtime.errors import SrDeployError
from tests.conftest import need_shared, weights


def test_official_checkpoint_resolved_from_local_dir():
    weights("lesrcnn_x2.pth")
    model = models.load("lesrcnn", 2)  # conftest points SRDEPLOY_WEIGHTS_DIR at ../shared/weights
    assert model.info.checkpoint_sha256 == default_checkpoint("lesrcnn", 2).sha256
    assert model.info.layout == "official" and not model.network.training


def test_both_fsrcnn_layouts_load():
    assert models.load("fsrcnn", 2, weights("fsrcnn_x2.pth")).info.layout == "yjn870"
    alt = need_shared("fixtures", "reference", "fsrcnn_x2_altlayout_random.pth")
    assert models.load("fsrcnn", 2, alt).info.layout == "paper"


@pytest.mark.parametrize("seed", range(25))
def test_corrupt_checkpoint(tmp_path, seed):
    """Random bytes, and a zip-format checkpoint with random bytes overwritten: always the one-line error naming
    what the file is (zip CRCs catch damaged tensor data; legacy-format files have no checksum, only the
    registry's sha256)."""
    rng = np.random.default_rng(seed)
    path = tmp_path / "corrupt.pth"
    if seed % 2:
        path.write_bytes(rng.bytes(4096))
    else:
        data = bytearray(need_shared("fixtures", "reference", "fsrcnn_x2_altlayout_random.pth").read_bytes())
        start = int(rng.integers(0, len(data) - 64))
        data[start : start + 64] = rng.bytes(64)
        path.write_bytes(bytes(data))
    expected = "is not a PyTorch checkpoint: pass a .pth file saved by torch.save" if seed % 2 else "is damaged"
    with pytest.raises(SrDeployError, match=re.escape(expected)) as refused:
        models.load("fsrcnn", 2, path)
    assert len(str(refused.value)) < 300


@pytest.mark.parametrize("model, file", [("dsrnet", "dsrnet_x2.pth"), ("lesrcnn", "lesrcnn_x2.pth")])
def test_truncated_checkpoint(tmp_path, model, file):
    """Cut in half, in the zip format (DSRNet's) and the pre-1.6 one (LESRCNN's): damaged, not 'not a checkpoint'
    (its header is PyTorch's)."""
    data = weights(file).read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SrDeployError, match=r"is damaged \(truncated or corrupt\): download it again"):
        models.load(model, 2, path)


def _damaged_archive(damage: str) -> bytes:
    """The real fixture checkpoint re-packed as a zip, then damaged so that zipfile itself raises while reading."""
    source = need_shared("fixtures", "reference", "fsrcnn_x2_altlayout_random.pth")
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if damage == "deflate stream" else zipfile.ZIP_STORED
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(buffer, "w", compression=method) as repacked:
        for name in original.namelist():
            repacked.writestr(name, original.read(name))
    data = bytearray(buffer.getvalue())
    central = data.index(b"PK\x01\x02")  # the first member's central-directory entry
    local = data.index(b"PK\x03\x04")
    if damage == "sizes past the end":
        struct.pack_into("<II", data, central + 20, 1 << 30, 1 << 30)  # EOFError
    elif damage == "deflate stream":
        start = local + 30 + sum(struct.unpack_from("<HH", data, local + 26))
        data[start : start + 16] = b"\xff" * 16  # a reserved block type: zlib.error
    elif damage == "encrypted flag":
        data[central + 8] |= 1  # RuntimeError: password required
        data[local + 6] |= 1
    else:
        struct.pack_into("<H", data, central + 10, 99)  # NotImplementedError: unknown compression method
    return bytes(data)


@pytest.mark.parametrize(
    "damage, raised",
    [
        ("sizes past the end", EOFError),
        ("deflate stream", zlib.error),
        ("encrypted flag", RuntimeError),
        ("compression method", NotImplementedError),
    ],
)
def test_an_archive_zipfile_cannot_read_is_the_one_line_error(tmp_path, damage, raised):
    """Whatever zipfile raises inside a damaged archive (not only BadZipFile) is the checkpoint's one-line error."""
    path = tmp_path / "damaged.pth"
    path.write_bytes(_damaged_archive(damage))
    with pytest.raises(raised), zipfile.ZipFile(path) as archive:
        archive.testzip()  # what zipfile itself raises on this damage
    with pytest.raises(SrDeployError) as refused:
        models.load("fsrcnn", 2, path)
    assert str(refused.value) == (f"checkpoint {path} is damaged (its zip archive cannot be read): download it again "
                                  "or pass another --weights")


def test_checkpoint_of_another_official_model():
    with pytest.raises(SrDeployError, match=r"official dsrnet ×2 checkpoint, not lesrcnn ×2"):
        models.load("lesrcnn", 2, weights("dsrnet_x2.pth"))


def test_checkpoint_of_another_official_scale():
    with pytest.raises(SrDeployError, match=r"official fsrcnn ×3 checkpoint, not fsrcnn ×2"):
        models.load("fsrcnn", 2, weights("fsrcnn_x3.pth"))


def test_unknown_checkpoint_of_another_model():
    path = need_shared("fixtures", "reference", "cfsrcnn_x2_random.pth")
    with pytest.raises(SrDeployError, match="is a cfsrcnn checkpoint, not lesrcnn"):
        models.load("lesrcnn", 2, path)


def test_unknown_checkpoint_of_another_scale():
    path = need_shared("fixtures", "reference", "cfsrcnn_x3_random.pth")
    with pytest.raises(SrDeployError, match=r"expected \(256, 64, 3, 3\) \(it looks like a ×3 checkpoint"):
        models.load("cfsrcnn", 2, path)


def test_single_scale_checkpoint_for_multi_scale_model():
    with pytest.raises(SrDeployError, match="official lesrcnn ×2 checkpoint, not lesrcnn_b ×2"):
        models.load("lesrcnn_b", 2, weights("lesrcnn_x2.pth"))


def test_multi_scale_checkpoint_for_single_scale_model():
    path = need_shared("fixtures", "reference", "lesrcnn_multiscale_random.pth")
    with pytest.raises(SrDeployError, match="is a lesrcnn_b checkpoint, not lesrcnn: pass --model lesrcnn_b"):
        models.load("lesrcnn", 3, path)


def test_missing_tensors_are_named(tmp_path):
    state = torch.load(weights("lesrcnn_x2.pth"), map_location="cpu", weights_only=True)
    del state["conv18.0.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(SrDeployError, match=r"missing 1 tensors \(e.g. \['tail.weight'\]\)"):
        models.load("lesrcnn", 2, tmp_path / "partial.pth")


class _RunsCode:
    """Unpickling this would run a shell command that creates a file (what a malicious checkpoint does)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("payload", ["code", "object"])
def test_pickled_code_is_refused_without_running_it(tmp_path, payload):
    marker, path = tmp_path / "ran", tmp_path / ("x" * 120) / "code.pth"  # a long path: the line stays short
    path.parent.mkdir()
    torch.save({"weight": torch.zeros(1), "hook": _RunsCode(marker) if payload == "code" else Path("/")}, path)
    with pytest.raises(Exception) as blocked:  # the loader's own refusal: several lines of PyTorch's words
        torch.load(path, map_location="cpu", weights_only=True)
    assert len(str(blocked.value).strip().splitlines()) > 1
    with pytest.raises(SrDeployError) as refused:
        models.load("lesrcnn", 2, path)
    message = str(refused.value)
    named = "posix.system" if payload == "code" else "pathlib.PosixPath"
    assert message == (f"checkpoint {path} holds Python code or objects ({named}), not only tensors: refused without "
                       "running it; save the weights alone (torch.save(model.state_dict(), PATH)) and pass that file")
    assert len(message) < 300 + len(str(path)) - 40 and "\n" not in message and "weights_only" not in message
    assert not marker.exists()


@pytest.mark.parametrize("name,scale,match", [
    ("srcnn", 2, r"unknown model 'srcnn': choose one of fsrcnn, lesrcnn"),
    ("lesrcnn", 5, r"lesrcnn has no ×5 model: choose --scale from 2, 3, 4"),
    ("cfsrcnn", 2, r"no public checkpoint of cfsrcnn ×2 exists: pass --weights PATH"),
])
def test_bad_requests(name, scale, match):
    with pytest.raises(SrDeployError, match=match):
        models.load(name, scale)


def test_bad_option():
    with pytest.raises(SrDeployError, match="option gate='first' is invalid"):
        models.load("dsrnet", 2, gate="first")
    with pytest.raises(SrDeployError, match="lesrcnn has no option 'gate'"):
        models.load("lesrcnn", 2, gate="branch0")


def test_missing_weights_path(tmp_path):
    with pytest.raises(SrDeployError, match="does not exist"):
        models.load("lesrcnn", 2, tmp_path / "nope.pth")


def _served(name: str) -> models.Checkpoint:
    """The registry entry, served from a local file:// URL instead of its public host."""
    return dataclasses.replace(default_checkpoint(*name.rsplit("_x", 1)[:1], int(name[-1])), path=name)


def test_download_verifies_and_renames(tmp_path, monkeypatch):
    source = weights("fsrcnn_x2.pth")
    monkeypatch.delenv("SRDEPLOY_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("SRDEPLOY_CACHE_DIR", str(tmp_path / "cache"))
    entry = default_checkpoint("fsrcnn", 2)
    monkeypatch.setattr(type(entry), "url", property(lambda self: source.as_uri()))
    path = checkpoints.resolve(entry)
    assert path == tmp_path / "cache" / "fsrcnn_x2.pth" and path.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in path.parent.iterdir()) == ["fsrcnn_x2.pth"]  # no temporary left


def test_download_with_wrong_hash_leaves_nothing(tmp_path):
    source = weights("fsrcnn_x2.pth")
    found = hashlib.sha256(source.read_bytes()).hexdigest()
    for expected in ("0" * 64, "f" * 64):  # sorting below and above the file's own hash
        with pytest.raises(SrDeployError, match="the server sent a different file") as refused:
            checkpoints.download(source.as_uri(), tmp_path / "x.pth", expected)
        assert f"has sha256 {found[:16]}…, expected {expected[:16]}…: " in str(refused.value)
        assert list(tmp_path.iterdir()) == []


def test_a_sha256_mismatch_is_refused_whichever_way_it_differs(tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(b"weights")
    found = hashlib.sha256(b"weights").hexdigest()
    assert checkpoints.sha256_of(path) == found
    checkpoints.verify(path, found)
    for expected in ("0" * 64, "f" * 64):  # sorting below and above the file's own hash
        with pytest.raises(SrDeployError) as refused:
            checkpoints.verify(path, expected)
        assert f"has sha256 {found[:16]}…, expected {expected[:16]}…: " in str(refused.value)


@pytest.mark.parametrize("content, what", [
    (b"these are not weights\n" * 8, "is not a PyTorch checkpoint: pass a .pth file saved by torch.save"),
    (b'{"weight": [0.5]}', "is not a PyTorch checkpoint: pass a .pth file saved by torch.save"),
    (b"", "is empty: pass a .pth file saved by torch.save"),
])
def test_a_file_that_is_no_checkpoint_is_named_so_in_one_short_line(tmp_path, content, what):
    path = tmp_path / "notes.pth"
    path.write_bytes(content)
    with pytest.raises(SrDeployError) as refused:
        checkpoints.read_state_dict(path)
    assert str(refused.value) == f"checkpoint {path} {what}" and len(str(refused.value)) < 300


def test_offline_error_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv("SRDEPLOY_WEIGHTS_DIR", raising=False)
    entry = default_checkpoint("lesrcnn", 3)
    monkeypatch.setattr(type(entry), "url", property(lambda self: "http://127.0.0.1:9/lesrcnn_x3.pth"))
    with pytest.raises(SrDeployError, match=r"cannot download lesrcnn_x3.pth .* put the file at .* or pass --weights"):
        checkpoints.resolve(entry)


def test_corrupt_file_in_local_dir(tmp_path, monkeypatch):
    (tmp_path / "lesrcnn_x2.pth").write_bytes(b"not a checkpoint")
    monkeypatch.setenv("SRDEPLOY_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(SrDeployError, match=r"has sha256 .* expected 66b4b2ddb268486f"):
        models.load("lesrcnn", 2)


def test_non_finite_weights_are_refused(tmp_path):
    state = torch.load(weights("fsrcnn_x2.pth"), map_location="cpu", weights_only=True)
    state["mid_part.4.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    with pytest.raises(SrDeployError, match=r"holds NaN or Inf in mid_part.4.weight"):
        models.load("fsrcnn", 2, tmp_path / "nan.pth")


@pytest.mark.parametrize("place", ["SRDEPLOY_WEIGHTS_DIR", "SRDEPLOY_CACHE_DIR"])
def test_a_loadable_but_wrong_file_is_refused_wherever_it_is_found(tmp_path, monkeypatch, place):
    """FSRCNN ×3's checkpoint has exactly the tensors of ×2: only the sha256 check can tell them apart, in the
    local folder and in the cache alike."""
    (tmp_path / "fsrcnn_x2.pth").write_bytes(weights("fsrcnn_x3.pth").read_bytes())
    for variable in ("SRDEPLOY_WEIGHTS_DIR", "SRDEPLOY_CACHE_DIR"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv(place, str(tmp_path))
    entry = default_checkpoint("fsrcnn", 2)
    monkeypatch.setattr(type(entry), "url", property(lambda self: "http://127.0.0.1:9/fsrcnn_x2.pth"))  # no download
    with pytest.raises(SrDeployError, match=r"fsrcnn_x2.pth has sha256 .* expected"):
        models.load("fsrcnn", 2)


def test_training_wrappers_are_unwrapped_preferring_the_ema_weights(tmp_path):
    ema, raw = {"conv.weight": torch.ones(2, 2)}, {"conv.weight": torch.zeros(2, 2)}
    cases = {
        "ema_first.pth": ({"params": raw, "params_ema": ema, "iter": 7}, ema),
        "nested.pth": ({"model": {"state_dict": {f"module.{k}": v for k, v in ema.items()}}, "epoch": 3}, ema),
        "net.pth": ({"net": raw, "optimizer": {"lr": 1e-3}}, raw),
        "bare.pth": (ema, ema),
    }
    for name, (saved, expected) in cases.items():
        torch.save(saved, tmp_path / name)
        loaded = checkpoints.read_state_dict(tmp_path / name)
        assert loaded.keys() == expected.keys() and all(torch.equal(loaded[k], expected[k]) for k in expected), name
    for name, saved in {"no_tensors.pth": {"params": {"lr": 1e-3}}, "list.pth": [torch.zeros(2)], "empty.pth": {}}.items():
        torch.save(saved, tmp_path / name)
        with pytest.raises(SrDeployError, match="holds no state_dict of tensors"):
            checkpoints.read_state_dict(tmp_path / name)
