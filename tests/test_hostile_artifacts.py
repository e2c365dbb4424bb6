"""Hostile artifacts (issue 34): a sealed digest is a checksum, not a signature, so anyone can seal a crafted file.
An ONNX file that keeps a tensor outside itself (external data: ``../``, an absolute path, a plain name, a link out
of the folder) is refused in one line, in the project's words, before ONNX Runtime or OpenVINO reads it."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from srdeploy.runtime import digest
from srdeploy.runtime.errors import SrDeployError
from srdeploy.runtime.sessions.onnxruntime import OnnxSession


def crafted(location: str) -> bytes:
    """A sealed ONNX file (y = x + w) whose ``w`` lies outside it at ``location``, 16 bytes."""
    weight = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    entry = model.metadata_props.add()
    entry.key, entry.value = digest.KEY, digest.PLACEHOLDER.decode()
    return digest.seal(model.SerializeToString())


def sessions():
    yield OnnxSession
    try:
        from srdeploy.runtime.sessions.openvino import OpenVinoSession, unavailable
    except ImportError:
        return
    if unavailable() is None:
        yield OpenVinoSession


@pytest.mark.parametrize("session", list(sessions()), ids=lambda s: s.__name__)
@pytest.mark.parametrize("location", ["../secret.bin", "/tmp/secret.bin", "secret.bin", "link.bin"])
def test_external_data_is_refused_unread(tmp_path, session, location):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(4, dtype=np.float32).tobytes())
    folder = tmp_path / "artifact"
    folder.mkdir()
    (folder / "link.bin").symlink_to(secret)
    path = folder / "model.onnx"
    path.write_bytes(crafted(location))
    with pytest.raises(SrDeployError) as refused:
        session(path)
    message = str(refused.value)
    assert f"keeps tensor 'w' outside the file (external data {location!r})" in message
    assert "refused unread" in message and "\n" not in message and len(message) < 300


def test_a_tensor_inside_a_subgraph_is_found_too(tmp_path):
    """External data in an If branch's Constant: the walk reaches subgraphs."""
    from srdeploy.runtime.artifact import refuse_external_data

    inner = TensorProto(name="c", dims=[1], data_type=TensorProto.FLOAT, data_location=TensorProto.EXTERNAL)
    inner.external_data.add(key="location", value="../../etc/passwd")
    branch = helper.make_graph([helper.make_node("Constant", [], ["y"], value=inner)], "b", [],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    graph = helper.make_graph([helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch)], "g",
                              [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    with pytest.raises(SrDeployError, match="external data '../../etc/passwd'"):
        refuse_external_data(helper.make_model(graph).SerializeToString(), tmp_path / "m.onnx")


GOOD = {"model": "fsrcnn", "scale": "2", "colour": "y", "shape_bounds": '{"min": [1, 1, 8, 8], "max": [64, 1, 4096, 4096]}',
        "export_config": '{"receptive_radius": 9}'}


@pytest.mark.parametrize("key, value, message", [
    ("scale", "0", "scale '0': not an integer from 1 to 16"),
    ("scale", "1000000000", "scale '1000000000'"),
    ("scale", "-2", "scale '-2'"),
    ("scale", "abc", "scale 'abc'"),
    ("colour", "x" * 1_000_000, "colour 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…': not y or rgb"),
    ("shape_bounds", "{]", "shape_bounds '{]'"),
    ("shape_bounds", '{"min": [1, 1, -5, -5], "max": [1, 1, 9, 9]}', "shape_bounds"),
    ("shape_bounds", '{"min": [1, 1, 8, 8], "max": [1, 1, 1000000000, 8]}', "shape_bounds"),
    ("shape_bounds", '{"min": [1, 1, 9, 9], "max": [1, 1, 8, 8]}', "min ≤ max"),
    ("shape_bounds", '{"min": [1, 1, 8], "max": [1, 1, 8]}', "shape_bounds"),
    ("export_config", '{"receptive_radius": -7}', "receptive_radius not an integer from 0 to 4096"),
    ("export_config", '{"receptive_radius": "9"}', "receptive_radius"),
])
def test_absurd_metadata_is_one_line(key, value, message):
    """Values a crafted file may hold, each alone in otherwise sound metadata: one line naming the value (cut at
    40 characters) and the fix; before this check they ended in tracebacks (a zero-size reshape, struct.error,
    JSONDecodeError) or ran with a negative radius."""
    from srdeploy.runtime.artifact import ArtifactSession, metadata_problem

    assert metadata_problem(GOOD) is None
    session = ArtifactSession()
    session.path, session.metadata = "crafted.onnx", {**GOOD, key: value}
    with pytest.raises(SrDeployError) as refused:
        session.check_metadata()
    text = str(refused.value)
    assert message in text and "re-export it" in text and "\n" not in text and len(text) < 400


@pytest.mark.parametrize("name", ["../secret.bin", "/tmp/secret.bin", "link.bin", "sub/../../secret.bin"])
def test_a_sealed_manifest_naming_files_outside_its_folder_is_refused_unread(tmp_path, name):
    """An artifact folder's manifest (ncnn, ExecuTorch) sealed over a file outside the folder: refused before the
    file is read, in one line."""
    from srdeploy.runtime.manifest import MANIFEST, read_manifest, seal_manifest

    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"not yours")
    folder = tmp_path / "crafted.executorch"
    folder.mkdir()
    (folder / "link.bin").symlink_to(secret)
    manifest = {"format": "srdeploy-executorch-1", "metadata": {}, "files": [name]}
    (folder / MANIFEST).write_bytes(seal_manifest(manifest, {name: secret.read_bytes()}))
    with pytest.raises(SrDeployError) as refused:
        read_manifest(folder, "srdeploy-executorch-1", "re-export it", "ExecuTorch")
    assert f"names {name!r}, outside the artifact's folder: refused unread" in str(refused.value)


def test_a_jetson_manifest_naming_files_outside_the_bundle_is_refused(tmp_path):
    import hashlib
    import json

    from srdeploy.runtime.bundle_check import FORMAT, MANIFEST, load_manifest

    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"not yours")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    files = {"../secret.bin": hashlib.sha256(secret.read_bytes()).hexdigest()}
    (bundle / MANIFEST).write_text(json.dumps({"format": FORMAT, "model": "fsrcnn", "scale": 2, "files": files}))
    with pytest.raises(SrDeployError, match="names '../secret.bin', outside the bundle: refused unread"):
        load_manifest(bundle)


def test_an_openvino_ir_whose_weights_link_out_of_its_folder_is_refused(tmp_path):
    pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install openvino")
    from srdeploy.runtime.sessions.openvino import check_ir

    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "model.bin").write_bytes(b"\0" * 16)
    (tmp_path / "ir").mkdir()
    (tmp_path / "ir" / "model.xml").write_text("<net/>")
    (tmp_path / "ir" / "model.bin").symlink_to(tmp_path / "elsewhere" / "model.bin")
    with pytest.raises(SrDeployError, match="model.bin is a link out of its folder: refused unread"):
        check_ir(tmp_path / "ir" / "model.xml")


def test_a_core_ml_package_with_a_file_linking_out_is_refused_unread(tmp_path):
    from srdeploy.runtime.sessions.coreml import WEIGHTS_FILE, check_package

    (tmp_path / "secret.bin").write_bytes(b"not yours")
    package = tmp_path / "model.mlpackage"
    (package / WEIGHTS_FILE).parent.mkdir(parents=True)
    (package / WEIGHTS_FILE).symlink_to(tmp_path / "secret.bin")
    with pytest.raises(SrDeployError, match="is a link out of the package: refused unread"):
        check_package(package)


# ---------------------------------------------------------------------------------------------------- fuzzing's findings
# (benchmarks/fuzz.py, docs/reliability.md): each was an uncaught exception before its fix.

SANE = {"model": "probe", "scale": "1", "colour": "y", "shape_bounds": '{"min": [1, 1, 4, 4], "max": [1, 1, 64, 64]}',
        "export_config": '{"receptive_radius": 1}'}


def sealed_model(weight_channels: int, model_name: bytes = b"probe") -> bytes:
    """A sealed ONNX file y = conv(x, w), its input's channels left open, ``w`` reading ``weight_channels``; its
    srdeploy metadata sane but for the model name, written as raw bytes (protobuf's own API takes text only)."""
    weight = numpy_helper.from_array(np.ones((1, weight_channels, 1, 1), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "c", "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, "h", "w"])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    stand_in = "N" * len(model_name)
    for key, value in {**SANE, "model": stand_in, "sha256": digest.PLACEHOLDER.decode()}.items():
        model.metadata_props.add(key=f"srdeploy.{key}", value=value)
    return digest.seal(model.SerializeToString().replace(stand_in.encode(), model_name))


def test_metadata_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(sealed_model(1, model_name=b"\xd1\xd1probe"))
    with pytest.raises(SrDeployError, match=r"has metadata that is not UTF-8 text: it was not exported by srdeploy"):
        OnnxSession(path)


def test_a_graph_that_fails_in_a_kernel_is_one_line(tmp_path):
    """It loads (its input's channels are open), then its convolution reads 3 channels of a 1-channel input."""
    path = tmp_path / "model.onnx"
    path.write_bytes(sealed_model(3))
    session = OnnxSession(path)
    with pytest.raises(SrDeployError, match=r"ONNX Runtime cannot run artifact .*: its graph does not compute; "
                                            r"re-export it") as caught:
        session.infer(np.zeros((1, 1, 8, 8), np.float32))
    assert "\n" not in str(caught.value)
    assert OnnxSession(tmp_path.joinpath("model.onnx")).metadata["model"] == "probe"  # the probe is sane otherwise


def test_a_checkpoint_whose_zip_end_record_spans_disks_is_one_line(tmp_path):
    """A zip64 end-record locator naming another disk made ``zipfile.is_zipfile`` itself raise."""
    import torch

    from srdeploy.models.checkpoints import read_state_dict

    path = tmp_path / "model.pth"
    torch.save({"w": torch.zeros(2)}, path)
    data = bytearray(path.read_bytes())
    at = data.rfind(b"PK\x06\x07")  # the zip64 end-of-central-directory locator PyTorch writes
    assert at > 0
    data[at + 4:at + 8] = (32).to_bytes(4, "little")  # the disk holding the zip64 end record: 32
    path.write_bytes(bytes(data))
    with pytest.raises(SrDeployError, match=r"is damaged \(its zip archive cannot be read\): download it again"):
        read_state_dict(path)


@pytest.fixture(scope="module")
def fsrcnn_ir(tmp_path_factory):
    pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install openvino")
    from conftest import need_shared
    from srdeploy.api import export_model

    need_shared("weights", "fsrcnn_x2.pth")
    return export_model("fsrcnn", 2, target="openvino", out=tmp_path_factory.mktemp("ir"), progress=False).artifacts[0]


def resealed_ir(source, tmp_path, old: bytes, new: bytes):
    """``source``'s IR with ``old`` replaced by ``new`` in its .xml, sealed again (as anyone can)."""
    from srdeploy.runtime.sessions.openvino import _IR_DIGEST, seal_ir

    xml = source.read_bytes().replace(old, new, 1)
    found = _IR_DIGEST.search(xml)
    weights = source.with_suffix(".bin").read_bytes()
    (tmp_path / "m.bin").write_bytes(weights)
    (tmp_path / "m.xml").write_bytes(seal_ir(xml[:found.start(1)] + digest.PLACEHOLDER + xml[found.end(1):], weights))
    return tmp_path / "m.xml"


def test_an_ir_with_a_layer_name_that_is_not_utf8_is_one_line(fsrcnn_ir, tmp_path):
    """Found by fuzzing: OpenVINO reads the name, Python cannot decode it (UnicodeDecodeError)."""
    from srdeploy.runtime.sessions.openvino import OpenVinoSession

    path = resealed_ir(fsrcnn_ir, tmp_path, b'name="node_conv2d/WithoutBiases"', b'name="\xff\xfe"')
    with pytest.raises(SrDeployError, match="has names or metadata that are not UTF-8 text"):
        OpenVinoSession(path, run=False, cache=False)


def test_an_ir_with_a_nested_section_in_its_metadata_opens_without_it(fsrcnn_ir, tmp_path):
    """Found by fuzzing: a nested rt_info section came back as a dict (AttributeError); it is no metadata of ours."""
    from srdeploy.runtime.sessions.openvino import OpenVinoSession

    path = resealed_ir(fsrcnn_ir, tmp_path, b"<srdeploy>", b'<srdeploy><nested><inner value="1" /></nested>')
    session = OpenVinoSession(path, run=False, cache=False)
    assert session.scale == 2 and "nested" not in session.metadata


def test_a_core_ml_package_whose_options_are_not_json_is_one_line(tmp_path):
    """Found by fuzzing: a resealed spec whose coreml_options is not JSON (JSONDecodeError when read anywhere)."""
    pytest.importorskip("coremltools", reason="coremltools is not installed: pip install -e '.[coreml]'")
    from conftest import need_shared
    from srdeploy.api import export_model
    from srdeploy.benchmarks.fuzz import resealed
    from srdeploy.runtime.sessions.coreml import SPEC_FILE, CoreMLSession

    need_shared("weights", "fsrcnn_x2.pth")
    package = export_model("fsrcnn", 2, target="coreml", out=tmp_path / "out", progress=False).artifacts[0]
    spec = (package / SPEC_FILE).read_bytes()
    assert b'{"compression": "none"' in spec
    (package / SPEC_FILE).write_bytes(resealed(spec.replace(b'{"compression": "none"', b'{compression": "none""', 1)))
    with pytest.raises(SrDeployError, match="coreml_options is not a JSON object"):
        CoreMLSession(package, run=False)
