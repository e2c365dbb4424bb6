"""`upscale FOLDER OUT --engine ray`: the same files, bit-identical, as the local run, on a local Ray cluster
that the command starts and stops itself; a bad image in the folder fails alone, as locally."""
from __future__ import annotations

import pytest
from PIL import Image

from srdeploy import models
from srdeploy.export.onnx.onnx_export import export_onnx
from tests.conftest import need_shared, run_cli, weights

pytest.importorskip("ray", reason="Ray is not installed: pip install 'ray[default]' (the dev extra has it)")


def test_ray_writes_the_local_files_bit_for_bit(tmp_path):
    from skimage import data

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(data.astronaut()[100:164, 100:196]).save(folder / "astronaut.png")
    Image.fromarray(data.chelsea()[50:110, 80:160]).save(folder / "chelsea.jpg")
    Image.fromarray(data.coffee()[100:148, 200:264]).save(folder / "coffee.webp", lossless=True)
    (folder / "broken.png").write_bytes(b"not a png")
    artifact = export_onnx(models.load("fsrcnn", 2, weights("fsrcnn_x2.pth")), tmp_path / "fsrcnn_x2.onnx")
    local = run_cli("upscale", str(folder), str(tmp_path / "local"), "--artifact", str(artifact), "--tile", "40")
    ray = run_cli("upscale", str(folder), str(tmp_path / "ray"), "--artifact", str(artifact), "--tile", "40",
                  "--engine", "ray", "--workers", "2")
    assert local.returncode == ray.returncode == 1, ray.stderr  # one image failed, the others written
    assert f"skipped {folder / 'broken.png'}: " in ray.stderr and "error: 1 of 4 images failed" in ray.stderr
    names = ["astronaut_x2.png", "chelsea_x2.png", "coffee_x2.png"]
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == names
    for name in names:
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    assert ray.stdout.split() == local.stdout.replace(str(tmp_path / "local"), str(tmp_path / "ray")).split()


def test_ray_with_the_pytorch_model_writes_the_local_files_bit_for_bit(tmp_path):
    """``--model``: PyTorch's CPU kernels sum in another order at another thread count (FSRCNN ×2 on Set5 differed
    by one level in 2–8 pixels per image between a 4-thread local run and Ray's one-CPU workers): each tile is
    computed by one thread wherever it runs."""
    folder = need_shared("datasets", "Set5", "LR_bicubic", "X2")
    local = run_cli("upscale", str(folder), str(tmp_path / "local"), "--model", "fsrcnn", "--tile", "64",
                    env={"OMP_NUM_THREADS": "4"})  # a 4-core machine's default
    ray = run_cli("upscale", str(folder), str(tmp_path / "ray"), "--model", "fsrcnn", "--tile", "64",
                  "--engine", "ray", "--workers", "2")
    assert local.returncode == ray.returncode == 0, (local.stderr, ray.stderr)
    names = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert len(names) == 5 and sorted(p.name for p in (tmp_path / "ray").iterdir()) == names
    for name in names:
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name


def test_ray_refuses_what_its_workers_cannot_open(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (16, 16)).save(folder / "a.png")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine")
    result = run_cli("upscale", str(folder), str(tmp_path / "out"), "--artifact", str(engine), "--engine", "ray")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: --engine ray runs .onnx (ONNX Runtime), .xml (OpenVINO) or --model, not "
                                    "m.engine") and not (tmp_path / "out").exists()


def test_a_network_the_workers_cannot_build_is_named_in_one_line(tmp_path):
    """The workers build ``--model`` themselves: their own one-line reason reaches the user (Ray's actor-death
    message, a traceback in terminal colours, buried it)."""
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (16, 16)).save(folder / "a.png")
    missing = tmp_path / "nope.pth"
    result = run_cli("upscale", str(folder), str(tmp_path / "out"), "--model", "fsrcnn", "--weights", str(missing),
                     "--engine", "ray", "--workers", "1")
    assert result.returncode == 2 and not (tmp_path / "out").exists()
    assert result.stderr.splitlines()[-1] == (f"error: a Ray worker could not build the network: checkpoint {missing} "
                                              "does not exist: check the --weights path")


def test_an_address_nothing_answers_at_is_one_line(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (16, 16)).save(folder / "a.png")
    result = run_cli("upscale", str(folder), str(tmp_path / "out"), "--model", "fsrcnn", "--engine", "ray",
                     "--ray-address", "127.0.0.1:1")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: cannot reach the Ray cluster at 127.0.0.1:1 (")
    assert not (tmp_path / "out").exists()
