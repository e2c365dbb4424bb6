"""Float fallback per channel (``export.int8_channels``): the split is exact in float, the noise it
ranks by adds up over channels, and the choice spends the MAC budget where the noise is."""
from __future__ import annotations

import numpy as np

from srdeploy import models
from srdeploy.calib.data import CropSpec, lr_hr_crops, network_batch, source_images
from srdeploy.export.quant import int8_calibration, int8_centre, int8_channels, int8_graph
from srdeploy.export.onnx.onnx_export import run_proto, to_onnx
from tests.conftest import weights


def _fsrcnn_x2() -> tuple:
    proto = to_onnx(models.load("fsrcnn", 2, weights("fsrcnn_x2.pth")))
    batch = network_batch(lr_hr_crops(source_images(), 2, CropSpec(size=32, count=4)), "y")
    return proto, batch


def test_split_channels_is_exact_and_reads_the_float_part_in_its_own_layer():
    """Consecutive chains (``map.2`` reads one split tensor and writes the next) and the ConvTranspose."""
    proto, batch = _fsrcnn_x2()
    assert int8_channels.chain_tensors(proto) == [f"prelu{s}" for s in ["", "_1", "_2", "_3", "_4", "_5", "_6"]]
    split, float_keys = int8_channels.split_channels(proto, {"prelu_1": [3], "prelu_2": [11, 0], "prelu_6": [2, 55, 30]})
    reference = run_proto(proto, batch)
    odd = batch[:1, :, :29, :31]
    for x, y in ((batch, reference), (odd, run_proto(proto, odd))):
        assert np.abs(run_proto(split, x) - y).max() <= 1e-5 * np.abs(y).max()
    assert float_keys == {"map.0.weight.float_channels@prelu_1.float_channels",
                          "map.2.weight.float_channels@prelu_2.float_channels",
                          "deconv.weight.float_channels@prelu_6.float_channels"}
    sites = {s.key: s for s in int8_graph.layers(split)}
    assert float_keys < set(sites) and "map.0.weight.int8_channels@prelu_1.int8_channels" in sites
    dims = {w.name: tuple(w.dims) for w in split.graph.initializer}
    assert dims["map.2.weight.float_channels"] == (12, 2, 3, 3) and dims["deconv.weight.float_channels"] == (3, 1, 9, 9)
    assert sum(n.op_type == "Split" for n in split.graph.node) == 3


def test_channel_noise_adds_up_to_the_layer_noise():
    """Rounding errors of different channels are independent: their output noise adds up to that of
    rounding the whole tensor (what makes a ranking per channel meaningful)."""
    proto, batch = _fsrcnn_x2()
    centres = int8_centre.choose_centres(proto, batch)
    full = int8_centre.centre(proto, centres)
    stats = int8_calibration.activation_histograms(full, batch)
    amax = {k: int8_calibration.activation_amax(v["histogram"], v["peak"], "minmax") for k, v in stats.items() if k != "macs"}
    for layer in int8_graph.layers(full):
        if layer.weight in ("map.2.weight", "deconv.weight"):
            per_channel = int8_channels.channel_noise(full, amax, layer, batch)
            whole = int8_channels.channel_noise(full, amax, layer, batch, whole=True)
            assert len(per_channel) == int8_channels.layer_channels(full, layer) and per_channel.min() > 0
            assert abs(per_channel.sum() / whole[0] - 1) < 0.15


def test_choose_takes_a_whole_layer_first_when_that_removes_more_noise():
    units = [int8_channels.Unit("n@t", "t", c, noise, 1.0) for c, noise in enumerate([8.0, 4.0, 1.0, 0.5])]
    units.append(int8_channels.Unit("first@image", "image", -1, 6.0, 3.0))  # 2 per MAC: ranked after 8 and 4
    units.sort(key=lambda u: u.noise / u.macs, reverse=True)
    assert int8_channels.choose(units, 3.0) == ({"t": [0, 1, 2]}, set())  # 13 removed, vs 6 for the layer
    assert int8_channels.choose(units, 4.0) == ({"t": [0]}, {"first@image"})  # 14, vs 13.5 in ranking order
    assert int8_channels.choose(units, 0.5) == ({}, set())
