"""The ncnn target (Android, Vulkan GPUs) on ncnn's own runtime: every zoo architecture's FP32 folder within 1e-5
of PyTorch, FP16 and INT8 (the project's search in ncnn's INT8 layout) through their gates, DSRNet as its gate
parts with tiles sharing the whole image's decision, the
Vulkan path on Mesa's software device (lavapipe), the commands on .ncnn artifacts, and bad input in one line."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from srdeploy import api, models
from srdeploy.models.registry import architecture
from srdeploy.models.torch_runner import TorchRunner
from srdeploy.runtime import images, metrics
from srdeploy.runtime.errors import SrDeployError
from srdeploy.runtime.tiling import tiled_infer
from tests.conftest import SHARED, ZOO_CHECKPOINTS, held_out_batch, need_shared, run_cli, weights, zoo_checkpoint
from tests.gate_sensitive import TILE, butterfly, gate_sensitive_state

ncnn = pytest.importorskip("ncnn", reason="ncnn is not installed: pip install ncnn pnnx (the dev extra has them)")
pytest.importorskip("pnnx", reason="pnnx is not installed: pip install pnnx (the dev extra has it)")

from srdeploy.runtime.sessions.ncnn import MANIFEST, NcnnSession, vulkan_devices  # noqa: E402

NO_VULKAN = "ncnn sees no Vulkan device: apt install mesa-vulkan-drivers libvulkan1 (Mesa's software device, lavapipe)"
def _export(model: str, precision: str, out: Path, **options) -> Path:
    return api.export_model(model, 2, target="ncnn", precision=precision, weights=str(zoo_checkpoint(model)), out=out,
                            options=api.ExportOptions(**options), progress=False).artifacts[0]


@pytest.fixture(scope="module")
def fsrcnn_ncnn(tmp_path_factory) -> Path:
    """FSRCNN ×2's FP32 folder, read (never changed) by the tests of the commands and of bad input."""
    return _export("fsrcnn", "fp32", tmp_path_factory.mktemp("fsrcnn"))


def test_every_architecture_is_covered():
    assert sorted(ZOO_CHECKPOINTS) == sorted(models.ARCHITECTURES)


@pytest.mark.parametrize("model", sorted(ZOO_CHECKPOINTS))
def test_fp32_on_ncnn_equals_pytorch(model, tmp_path):
    folder = _export(model, "fp32", tmp_path)
    assert folder.name == f"{model}_x2_fp32.ncnn" and (folder / MANIFEST).is_file()
    manifest = json.loads((folder / MANIFEST).read_text())
    assert set(manifest["graphs"]) == ({"gate_features", "gate_margin", "branch0", "branch1"} if model == "dsrnet"
                                       else {"model"})
    session = NcnnSession(folder)
    net = models.load(model, 2, zoo_checkpoint(model)).network
    x = held_out_batch(session.colour)
    expected = TorchRunner(net).infer(x)
    assert np.abs(session.infer(x) - expected).max() <= 1e-5 * max(1.0, float(np.abs(expected).max()))
    assert float(json.loads(manifest["metadata"]["ncnn_report"])["fp32_max_abs_vs_pytorch"]) <= 1e-5


def test_fp16_passes_its_gate_on_the_cpu_and_the_vulkan_device(tmp_path):
    folder = _export("lesrcnn", "fp16", tmp_path)
    report = json.loads(json.loads((folder / MANIFEST).read_text())["metadata"]["ncnn_report"])
    assert 0 <= report["drop_db_cpu"] <= 0.01 and report["drop_db"] <= 0.01
    assert ("drop_db_vulkan" in report) == bool(vulkan_devices())
    fp32_weight_bytes = 4 * sum(p.numel() for p in models.load("lesrcnn", 2, zoo_checkpoint("lesrcnn")).network.parameters())
    assert (folder / "model.bin").stat().st_size < 0.6 * fp32_weight_bytes  # FP16 weights
    assert api.parity(folder, progress=False).passed


@pytest.fixture(scope="module")
def gate_sensitive(tmp_path_factory):
    """DSRNet ×2 whose gate flips between 48-pixel tiles of the butterfly image, as an ncnn folder."""
    radius = architecture("dsrnet").export.receptive_radius
    lr = images.read_rgb(need_shared("datasets", "Set5", "LR_bicubic", "X2", "butterflyx2.png"))
    state = gate_sensitive_state(models.load("dsrnet", 2, weights("dsrnet_x2.pth")).network,
                                 torch.load(weights("dsrnet_x2.pth"), map_location="cpu", weights_only=True),
                                 torch.from_numpy(images.to_unit_float(lr)), radius)
    folder = tmp_path_factory.mktemp("gate")
    torch.save(state, folder / "dsrnet_gate_sensitive.pth")
    artifact = api.export_model("dsrnet", 2, target="ncnn", weights=str(folder / "dsrnet_gate_sensitive.pth"),
                                out=folder, progress=False).artifacts[0]
    return artifact, lr, models.load("dsrnet", 2, folder / "dsrnet_gate_sensitive.pth"), radius, \
        folder / "dsrnet_gate_sensitive.pth"


def _sr(output: np.ndarray) -> np.ndarray:
    return images.to_uint8(output[0].transpose(1, 2, 0))


def test_dsrnet_tiles_with_the_whole_image_decision(gate_sensitive):
    artifact, lr, model, radius, _ = gate_sensitive
    session, x = NcnnSession(artifact), images.to_unit_float(lr)
    assert session.has_global_gate
    whole = _sr(session.infer(x))
    assert metrics.psnr(whole, _sr(TorchRunner(model.network).infer(x))) >= 60
    assert metrics.psnr(_sr(tiled_infer(x, session.infer, 2, TILE, radius, 8)), whole) < 50  # each tile decides alone
    assert metrics.psnr(_sr(tiled_infer(x, session.infer, 2, TILE, radius, 8, gate=session.gate_split)), whole) >= 60


def test_a_batch_takes_each_image_s_own_branch(gate_sensitive):
    artifact, lr, model, radius, _ = gate_sensitive
    x = images.to_unit_float(lr)
    crops = np.concatenate([x[..., :64, :64], x[..., -64:, -64:], x[..., :64, -64:]])
    expected = TorchRunner(model.network).infer(crops)
    assert np.abs(NcnnSession(artifact).infer(crops) - expected).max() <= 1e-5


@pytest.mark.skipif(not vulkan_devices(), reason=NO_VULKAN)
def test_the_vulkan_path_computes_what_the_cpu_path_computes(fsrcnn_ncnn, gate_sensitive, cli):
    """On lavapipe (Mesa's software Vulkan): the same parity as the CPU path; not a GPU timing."""
    for folder in (fsrcnn_ncnn, gate_sensitive[0]):
        cpu, gpu = NcnnSession(folder), NcnnSession(folder, vulkan=True)
        x = held_out_batch(cpu.colour)
        assert np.abs(gpu.infer(x) - cpu.infer(x)).max() <= 1e-5
    report = api.parity(gate_sensitive[0], api.SessionOptions(vulkan=True), weights=str(gate_sensitive[4]),
                        progress=False)
    assert report.passed and report.backend == "NcnnSession"
    refused = cli("eval", "--artifact", str(gate_sensitive[0]), "--dataset", "d", "--vulkan")
    assert refused.returncode == 2 and "d is not a BasicSR-layout dataset" in refused.stderr
    onnx = cli("parity", "x.onnx", "--vulkan")
    assert onnx.returncode == 2 and onnx.stderr == "error: --vulkan is an ncnn setting: open an .ncnn\n"


def test_the_commands_take_ncnn_folders(fsrcnn_ncnn, tmp_path, cli):
    folder = fsrcnn_ncnn
    dataset = SHARED / "datasets" / "Set5"
    need_shared("datasets", "Set5")
    evaluated = cli("eval", "--artifact", str(folder), "--dataset", str(dataset), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["psnr"] == pytest.approx(37.06, abs=0.01)  # the published FSRCNN score
    image = images.write_image(tmp_path / "in.png", images.read_rgb(butterfly(SHARED)))
    tiled = cli("upscale", str(image), str(tmp_path / "tiled.png"), "--artifact", str(folder / "model.param"),
                    "--tile", "40")
    whole = cli("upscale", str(image), str(tmp_path / "whole.png"), "--artifact", str(folder), "--tile", "0")
    assert tiled.returncode == whole.returncode == 0, tiled.stderr
    assert metrics.psnr(images.read_rgb(tmp_path / "tiled.png"), images.read_rgb(tmp_path / "whole.png")) >= 60
    bench = cli("bench", str(folder), "--sizes", "64x48", "--runs", "3", "--budget", "0.5", "--json")
    row, = json.loads(bench.stdout)["results"]
    assert row["backend"] == "ncnn" and row["status"] == "ok" and row["median_ms"] > 0


def test_bad_input_is_one_line(fsrcnn_ncnn, tmp_path, cli):
    folder = fsrcnn_ncnn
    damaged = tmp_path / "damaged.ncnn"
    damaged.mkdir()
    for name in os.listdir(folder):
        (damaged / name).write_bytes((folder / name).read_bytes())
    data = bytearray((damaged / "model.bin").read_bytes())
    data[len(data) // 2] ^= 0x01
    (damaged / "model.bin").write_bytes(bytes(data))
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "model.param").write_bytes((folder / "model.param").read_bytes())
    for artifact, message in ((damaged, "is damaged (its bytes no longer match the sha256 recorded at export)"),
                              (loose / "model.param", "has no srdeploy.json beside it")):
        result = cli("upscale", str(butterfly(SHARED)), str(tmp_path / "out.png"), "--artifact", str(artifact))
        assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr
        assert not (tmp_path / "out.png").exists()
    with pytest.raises(SrDeployError, match="srdeploy.json"):
        os.remove(damaged / MANIFEST)
        NcnnSession(damaged)


@pytest.fixture(scope="module")
def fsrcnn_int8_ncnn(fsrcnn_int8, tmp_path_factory) -> Path:
    """FSRCNN ×2's INT8 folder, from the session's INT8 search (the gated Q/DQ graph of ``conftest.fsrcnn_int8``)."""
    return _export("fsrcnn", "int8", tmp_path_factory.mktemp("int8"), graphs={("int8", False, None): fsrcnn_int8})


def test_int8_carries_the_search_into_ncnn_s_int8_layout(fsrcnn_int8, fsrcnn_int8_ncnn):
    """The search's INT8 convolutions run as ncnn INT8 convolutions (its codes, its scales): ncnn computes what the
    Q/DQ graph computes on ONNX Runtime, and the folder passes the 0.1 dB gate with ≥ 80 % of the MACs in INT8."""
    from srdeploy.export.ncnn.ncnn_int8 import INT8_TAG
    from srdeploy.export.ncnn.ncnn_param import read_param
    from srdeploy.export.onnx.onnx_export import cpu_session

    proto, _ = fsrcnn_int8
    folder = fsrcnn_int8_ncnn
    quantized = [n for n in proto.graph.node if n.op_type in ("Conv", "ConvTranspose") and n.input[1].endswith(".dq")]
    layers = read_param((folder / "model.param").read_text())
    int8_layers = [l for l in layers if l.kind == "Convolution" and l.params.get("8") in ("2", "102")]
    assert len(int8_layers) == len(quantized) == 7 and not any(l.kind == "Deconvolution" for l in layers)
    assert (folder / "model.bin").read_bytes().count(INT8_TAG.to_bytes(4, "little")) >= len(quantized)
    report = json.loads(json.loads((folder / MANIFEST).read_text())["metadata"]["ncnn_report"])
    assert report["int8_convolutions"] == 7 and report["int8_mac_fraction"] >= 0.8
    assert 0 <= report["drop_db_cpu"] <= 0.1 and report["drop_db"] <= 0.1
    assert ("drop_db_vulkan" in report) == bool(vulkan_devices())
    session = NcnnSession(folder)
    x = held_out_batch(session.colour)
    expected = cpu_session(proto).run(None, {proto.graph.input[0].name: x})[0]
    found = session.infer(x)
    assert np.abs(found - expected).mean() <= 2e-4 and np.abs(found - expected).max() <= 2 / 255
    assert api.parity(folder, progress=False).passed


def test_ncnn_s_own_int8_gate_refuses_in_one_line(fsrcnn_int8, tmp_path):
    """A limit the Q/DQ graph is taken past (its cached gate) but ncnn's INT8 misses: refused, nothing written."""
    with pytest.raises(SrDeployError) as refused:
        _export("fsrcnn", "int8", tmp_path, max_psnr_drop=0.01, graphs={("int8", False, 0.01): fsrcnn_int8})
    assert "ncnn int8 fsrcnn ×2 on cpu loses" in str(refused.value) and "\n" not in str(refused.value)
    assert list(tmp_path.iterdir()) == []


def test_without_pnnx_the_export_is_refused_before_any_work(tmp_path):
    """pnnx hidden from the command: one line naming the install, exit 2, nothing written."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(
        "import sys\nclass _Absent:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'pnnx':\n            raise ModuleNotFoundError(\"No module named 'pnnx'\")\n"
        "sys.meta_path.insert(0, _Absent())\n")
    result = run_cli("export", "--model", "fsrcnn", "--target", "ncnn", "--out", str(tmp_path / "o"),
                     env={"PYTHONPATH": str(tmp_path / "site")})
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
        "error: --target ncnn converts with pnnx, which is not installed: pip install pnnx ncnn (or pip install -e "
        "'.[ncnn]')")
    assert not (tmp_path / "o").exists()


def test_omp_num_threads_caps_ncnn(fsrcnn_ncnn, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # ncnn's own default is every big core
    assert all(net.opt.num_threads == 1 for net in NcnnSession(fsrcnn_ncnn).nets.values())


@pytest.mark.parametrize("int8_keys, centred, terms", [
    ({"a@x"}, False, ["2", None]), ({"a@x", "b@r"}, False, ["102", "2"]), ({"a@x", "b@r"}, True, ["2", "2"])])
def test_int8_layers_are_told_apart_and_requantize_between_int8_convolutions(int8_keys, centred, terms, tmp_path):
    """Two convolutions with equal weights (DSRNet's mean shifts: an earlier build gave a float one the INT8 one's
    input scale and lost 0.34 dB): told apart by their inputs, only INT8 ones become INT8; an INT8 convolution read
    only by an INT8 one writes int8 for it (``8=102``, ncnn2int8's requantize); a centred input (``int8_centre``:
    an explicit ``Pad``, which pnnx leaves unconverted, and a subtraction) becomes ncnn's ``Padding``. ncnn
    computes what the Q/DQ graph computes on ONNX Runtime."""
    from onnx import TensorProto, helper, numpy_helper

    from srdeploy.calib.data import held_out_photo
    from srdeploy.export.ncnn.ncnn_export import blobs, convert
    from srdeploy.export.ncnn.ncnn_int8 import float_twin, quantize_graph
    from srdeploy.export.ncnn.ncnn_param import read_param
    from srdeploy.export.onnx.onnx_export import cpu_session
    from srdeploy.export.quant.int8_centre import centre, centred_keys
    from srdeploy.export.quant.int8_qdq import quantize

    codes = np.random.default_rng(0).integers(-127, 128, (3, 3, 3, 3)).astype(np.int8)
    scale = np.array([0.004, 0.003, 0.005], np.float32)
    weight = codes.astype(np.float32) * scale.reshape(-1, 1, 1, 1)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "a"], ["ya"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["ya"], ["r"]),
         helper.make_node("Conv", ["r", "b"], ["y"], pads=[1, 1, 1, 1])], "two",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [numpy_helper.from_array(weight, "a"), numpy_helper.from_array(weight.copy(), "b")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    amax = {"x": 1.0, "r": 0.5}
    if centred:  # r is post-ReLU: read as r − m (m per channel), with its padding made explicit
        centres = {"r": [0.2, 0.1, 0.25]}
        renamed = centred_keys(proto, centres)
        proto, int8_keys = centre(proto, centres), {renamed.get(k, k) for k in int8_keys}
        amax.update({k.split("@")[1]: 0.3 for k in renamed.values()})
    qdq = quantize(proto, amax, int8_keys, {"a": (codes, scale), "b": (codes, scale)})
    twin = float_twin(qdq)
    param, weights = convert(twin.graph, [[1, 3, 32, 32], [1, 3, 48, 40]], False, tmp_path)
    source, target = blobs(param.decode())
    param, weights, count = quantize_graph(twin.graph, twin.convs, param, weights, source)
    layers = read_param(param.decode())
    convolutions = [l for l in layers if l.kind == "Convolution"]
    assert ("Padding" in {l.kind for l in layers}) == centred and "Pad" not in {l.kind for l in layers}
    (tmp_path / "m.param").write_bytes(param)
    (tmp_path / "m.bin").write_bytes(weights)
    net = ncnn.Net()
    net.opt.use_bf16_storage = net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = False
    assert net.load_param(str(tmp_path / "m.param")) == 0 and net.load_model(str(tmp_path / "m.bin")) == 0
    x = np.ascontiguousarray(held_out_photo("rgb")[:, :40, :56])
    with net.create_extractor() as extractor:
        extractor.input(source, ncnn.Mat(x).clone())
        found = np.array(extractor.extract(target)[1])
    expected = cpu_session(qdq).run(None, {"x": x[None]})[0][0]
    # a chained INT8 input can round one code apart where ncnn's float sums differ from ONNX Runtime's by an ulp
    assert np.abs(found - expected).mean() <= 1e-4 and np.abs(found - expected).max() <= 1e-2 * np.abs(expected).max()
    assert count == len(int8_keys) and [l.params.get("8") for l in convolutions] == terms
