"""Self-verifying artifacts (runtime/digest.py) on a real ONNX protobuf: the recorded digest is the sha256 the
test computes itself, every damaged byte is caught, and each refusal names its cause. Fast: the mutation run
of runtime/digest.py uses these tests."""
from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from srdeploy.runtime import digest
from srdeploy.runtime.errors import SrDeployError

FIX = "export it again"


def artifact(entries: int = 1, padding: int = 0) -> bytes:
    """A small ONNX model whose metadata holds the placeholder under the digest key ``entries`` times, after an
    entry of ``padding`` characters (which moves the digest to another offset in the file)."""
    weight = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(1, 3, 2, 2), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 3, 3])], [weight])
    model = helper.make_model(graph)
    if padding:
        entry = model.metadata_props.add()
        entry.key, entry.value = "srdeploy.note", "x" * padding
    for _ in range(entries):
        entry = model.metadata_props.add()
        entry.key, entry.value = digest.KEY, digest.PLACEHOLDER.decode()
    entry = model.metadata_props.add()
    entry.key, entry.value = "srdeploy.model", "lesrcnn"
    return model.SerializeToString()


def test_the_seal_is_the_sha256_of_the_file_with_the_placeholder():
    data = artifact()
    sealed = digest.seal(data)
    assert len(sealed) == len(data) and sealed.count(digest.PLACEHOLDER) == 0
    recorded = {p.key: p.value for p in onnx.load_model_from_string(sealed).metadata_props}[digest.KEY]
    assert recorded == hashlib.sha256(data).hexdigest()  # computed here, not by the code under test
    start, value = digest.recorded(sealed, digest.KEY)
    assert value == recorded.encode() and sealed[start:start + 64] == value
    assert sealed[:start] == data[:start] and sealed[start + 64:] == data[start + 64:]
    digest.check(sealed, "a.onnx", FIX)  # no error


def test_the_digest_is_found_at_any_offset():
    """Every byte offset of the digest slot, odd and even, below and above 64, 128, 256 (bit patterns a slice
    or a search start could get wrong)."""
    offsets = set()
    for padding in range(0, 300, 1):
        data = artifact(padding=padding)
        sealed = digest.seal(data)
        start, value = digest.recorded(sealed, digest.KEY)
        offsets.add(start)
        assert value == hashlib.sha256(data).hexdigest().encode() and len(value) == 64
        digest.check(sealed, "a.onnx", FIX)
    assert len(offsets) == 300 and min(offsets) < 256 < max(offsets)
    raw = digest.KEY.encode() + b"\x12\x40" + b"7" * 64  # the entry at the very start of the data
    assert digest.recorded(raw, digest.KEY) == (len(digest.KEY) + 2, b"7" * 64)


def test_every_damaged_byte_is_caught():
    sealed = digest.seal(artifact())
    start, _ = digest.recorded(sealed, digest.KEY)
    for at in (0, 1, start - 1, start, start + 63, start + 64, len(sealed) // 2, len(sealed) - 1):
        damaged = bytearray(sealed)
        damaged[at] ^= 0x01
        reason = "(is damaged|carries no srdeploy digest)"  # the key's own bytes hit: no digest slot found
        with pytest.raises(SrDeployError, match=rf"^artifact a.onnx {reason} .*: {FIX}$"):
            digest.check(bytes(damaged), "a.onnx", FIX)
    with pytest.raises(SrDeployError, match="is damaged"):
        digest.check(sealed + b"\x00", "a.onnx", FIX)  # a byte appended
    with pytest.raises(SrDeployError, match="is damaged"):
        digest.check(sealed[:-1], "a.onnx", FIX)  # a byte cut off


def test_a_file_without_one_digest_is_refused_with_its_reason():
    for data in (artifact(0), artifact(2)):  # none, or two: which one would be the file's?
        assert digest.recorded(data, digest.KEY) is None
        with pytest.raises(SrDeployError, match=rf"^artifact b.onnx carries no srdeploy digest \(damaged, or not "
                                                rf"exported by this srdeploy version\): {FIX}$"):
            digest.check(data, "b.onnx", FIX)
    unsealed = artifact()  # the placeholder left in place: not a digest of anything
    with pytest.raises(SrDeployError, match="is damaged"):
        digest.check(unsealed, "c.onnx", FIX)


def test_seal_needs_exactly_one_placeholder():
    for entries in (0, 2):
        with pytest.raises(ValueError, match="exactly once"):
            digest.seal(artifact(entries))


def test_a_companion_file_is_part_of_the_digest():
    data, weights = artifact(), b"\x01\x02\x03 the IR's .bin"
    sealed = digest.seal(data, weights)
    start, value = digest.recorded(sealed, digest.KEY)
    assert value == hashlib.sha256(data + weights).hexdigest().encode()
    digest.verify(sealed, start, "m.xml", FIX, weights)
    for other in (weights[:-1], weights + b"\x00", b"\x00" + weights[1:], b""):
        with pytest.raises(SrDeployError, match=rf"^artifact m.xml is damaged .*: {FIX}$"):
            digest.verify(sealed, start, "m.xml", FIX, other)


def test_the_digest_is_found_only_under_its_own_key():
    sealed = digest.seal(artifact())
    assert digest.recorded(sealed, "srdeploy.model") is None  # a value of another length is not a digest slot
    assert digest.recorded(sealed, "srdeploy.other") is None
    start, value = digest.recorded(sealed, digest.KEY)
    assert sealed[start - len(digest.KEY) - 2:start] == digest.KEY.encode() + b"\x12\x40"
