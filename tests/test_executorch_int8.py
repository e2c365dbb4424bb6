"""ExecuTorch INT8 (export/executorch/pte_int8.py): the gate through ExecuTorch's runtime refuses and admits in
one line, the drop it reports is what ExecuTorch computes, and a weight read by two convolutions no longer makes
XNNPACK refuse the program. Its own file, so that test runners spread it apart from the FP32 exports."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from srdeploy import models
from tests.conftest import need_shared, weights

pytest.importorskip("executorch", reason="ExecuTorch is not installed: pip install executorch (the dev extra has it)")

from srdeploy.runtime.sessions.executorch import ExecuTorchSession  # noqa: E402

pytestmark = pytest.mark.slow  # the INT8 search, PT2E calibration and XNNPACK lowering (1–2 minutes)


class SharedConvolution(torch.nn.Module):
    """One convolution read on two paths, as LESRCNN's upsampler."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.shared = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.tail = torch.nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, x):
        features = torch.relu(self.head(x))
        return self.tail(torch.relu(self.shared(features) + self.shared(torch.relu(features - 0.1))))


def test_a_weight_read_twice_is_copied_so_xnnpack_takes_the_int8_program():
    """XNNPACKQuantizer quantizes a shared weight for its first reader only; XNNPACK then refuses the program
    (``xnn_status_invalid_parameter``). With ``unshared_weights`` it loads and computes the float network within
    int8 noise."""
    from executorch.runtime import Runtime

    from srdeploy.export.executorch.pte_export import exporter, lower
    from srdeploy.export.executorch.pte_int8 import quantized, unshared_weights

    torch.manual_seed(0)
    network = SharedConvolution().eval()
    exported = exporter(1, 8, 64, 64)
    batch = np.random.default_rng(0).random((8, 1, 32, 32), dtype=np.float32)
    programs = {}
    for copied in (False, True):
        module = exported(network).module()
        module = unshared_weights(module) if copied else module
        programs[copied] = lower(exported(quantized(module, set(), batch, "static")))
    with pytest.raises(RuntimeError):
        Runtime.get().load_program(programs[False]).load_method("forward")
    method = Runtime.get().load_program(programs[True]).load_method("forward")
    x = torch.from_numpy(batch[:1])
    (found,) = method.execute([x])
    with torch.no_grad():
        expected = network(x)
    assert float((found - expected).abs().max()) <= 0.05 * float(expected.abs().max())


def test_int8_is_gated_through_executorch(tmp_path, cli):
    """FSRCNN ×2 INT8 passes the default 0.1 dB gate with the search's float channels split out (it was refused
    at 0.27 dB with whole layers float), and the drop it reports is what ExecuTorch computes on the held-out
    crops, measured here again; a 0.05 dB gate refuses that program in one line."""
    from srdeploy.calib.data import lr_hr_crops, source_images
    from srdeploy.export.executorch.pte_export import psnr_gate
    from srdeploy.export.precision import VALIDATION_SPEC
    from srdeploy.models.torch_runner import TorchRunner
    from srdeploy.runtime.errors import SrDeployError
    from srdeploy.runtime.precision import Precision
    from srdeploy.runtime.quality import crop_psnr

    need_shared("weights", "fsrcnn_x2.pth")
    written = cli("export", "--model", "fsrcnn", "--target", "executorch", "--precision", "int8",
                  "--out", str(tmp_path / "int8"))
    assert written.returncode == 0, written.stderr
    session = ExecuTorchSession(written.stdout.strip())
    report = json.loads(session.metadata["executorch_report"])
    assert session.metadata["precision"] == "int8" and report["int8"]["int8_mac_fraction"] >= 0.8
    assert report["int8"]["search"]["float_channels"] and not report["int8"]["search"]["not_carried"]["float_channels"]
    net = models.load("fsrcnn", 2, weights("fsrcnn_x2.pth"))
    crops = lr_hr_crops(source_images(None, "validation"), 2, VALIDATION_SPEC)
    psnr = lambda infer: crop_psnr(infer, crops, 2, net.info.colour, net.info.eval_rounding)  # noqa: E731
    drop = psnr(TorchRunner(net.network).infer) - psnr(session.infer)
    assert 0.0 < drop <= 0.1 and abs(drop - report["drop_db"]) <= 1e-3
    with pytest.raises(SrDeployError) as refused:
        psnr_gate(session.path, net, None, Precision.INT8, 0.05)
    assert "through ExecuTorch loses" in str(refused.value) and "\n" not in str(refused.value)
    assert str(refused.value).endswith("over the 0.05 dB limit: nothing written; raise --max-psnr-drop to accept it")


class Chain(torch.nn.Module):
    """Convolution → PReLU → … → a transposed convolution, as FSRCNN, and a reader behind a sum (no split)."""

    def __init__(self):
        super().__init__()
        self.head, self.head_act = torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.PReLU(8)
        self.shrink, self.shrink_act = torch.nn.Conv2d(8, 6, 1), torch.nn.PReLU(6)
        self.body, self.body_act = torch.nn.Conv2d(6, 4, 3, padding=1), torch.nn.ReLU()
        self.up = torch.nn.ConvTranspose2d(4, 1, 4, stride=2, padding=1)
        self.side = torch.nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        y = self.body_act(self.body(self.shrink_act(self.shrink(self.head_act(self.head(x))))))
        return self.side(self.up(y) + 0.5)


def test_float_channels_are_split_out_without_slices():
    """``split_float_channels``: the split network computes the network (float), its float-reading parts are
    named, each part knows its weight and output channels, no channel slice reaches the exported graph (XNNPACK
    crashes on those once the size varies), and a reader that does not sit behind a convolution and an
    activation is left whole."""
    from srdeploy.export.executorch.pte_export import exporter, subpixel_network
    from srdeploy.export.executorch.pte_int8 import module_names, search_scales, split_float_channels

    torch.manual_seed(0)
    network = Chain().eval()
    split = split_float_channels(network, {"shrink": [1, 5], "body": [0], "up": [2], "side": [0]})
    assert split.left == {"side": [0]}
    assert split.float_readers == {"shrink.out0_in1", "shrink.out1_in1", "body.out0_in1", "body.out1_in1",
                                   "up.out0_in1"}
    assert split.origins["body.out1_in0"] == ("body.weight", [2])
    assert split.origins["up.out0_in1"] == ("up.weight", None)
    x = torch.rand(2, 1, 24, 20)
    with torch.no_grad():
        assert float((split.network(x) - network(x)).abs().max()) <= 1e-6
    deployed = subpixel_network(split.network)[0]
    graph = exporter(1, 8, 64, 64)(deployed).module().graph
    targets = {str(node.target) for node in graph.nodes if node.op == "call_function"}
    assert not {t for t in targets if "slice" in t or "index" in t or "narrow" in t or "split" in t}, targets

    class Variant:  # the search's weight scales, one per output channel (one for a transposed convolution)
        codes = {"body.weight": (None, np.array([0.1, 0.2, 0.3, 0.4], np.float32)),
                 "up.weight": (None, np.array([0.5], np.float32))}

    scales = search_scales(Variant(), split.origins)
    found = {}
    for node in graph.nodes:
        if node.op == "call_function" and "conv" in str(node.target) and (given := scales(node)) is not None:
            (origin,) = module_names(node) & set(split.origins)
            found[origin] = given.tolist()
    assert found["body.out0_in0"] == found["body.out0_in1"] == pytest.approx([0.1, 0.2, 0.4])
    assert found["body.out1_in0"] == pytest.approx([0.3])
    assert found["up.out0_in0"] == found["up.out0_in1"] == pytest.approx([0.5] * 4)  # the sub-pixel form's 4 phases


def test_a_whole_image_gate_is_quantized_as_its_parts_named_as_the_network():
    """DSRNet INT8 (its gate reads the whole image): the features and the two branches are separate programs whose
    modules carry the network's own names (the search's float layers are found by them), and the parts, run as
    the runtime runs them (features → mean → float margin → the chosen branch), compute the network."""
    from srdeploy.export.executorch.pte_export import exporter, subpixel_network
    from srdeploy.export.executorch.pte_int8 import features_only, module_names, parts_runner
    from srdeploy.export.gate_modules import GateMargin
    from srdeploy.models.torch_runner import TorchRunner
    from tests.conftest import held_out_batch

    need_shared("weights", "dsrnet_x2.pth")
    network = models.load("dsrnet", 2, weights("dsrnet_x2.pth")).network
    exported = exporter(3, 8, 64, 64)
    parts = {"gate_features": exported(features_only(network)).module(),
             **{f"branch{b}": exported(subpixel_network(network.with_branch(b))[0]).module() for b in (0, 1)}}
    names = set().union(*(module_names(n) for n in parts["gate_features"].graph.nodes if n.op == "call_function"))
    convolutions = {name for name, m in network.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert names & convolutions and not {n for n in names if n.startswith("network.")}
    x = held_out_batch("rgb")
    expected = TorchRunner(network).infer(x)
    found = parts_runner(parts, TorchRunner(GateMargin(network)).infer)(x)
    assert np.abs(found - expected).max() <= 1e-4 * max(1.0, float(np.abs(expected).max()))
