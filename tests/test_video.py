"""Video in, video out (runtime/video.py, `upscale CLIP.mp4 OUT.mp4`) on a real H.264 + AAC clip made from a
photo: frames, size, rate and audio preserved, each frame within codec noise of the image path's output for
the same decoded frame, and every bad input one line with nothing left under the output's name."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from srdeploy.runtime import images
from srdeploy.runtime.errors import SrDeployError
from tests.conftest import need_shared, run_cli

av = pytest.importorskip("av", reason="PyAV is not installed: pip install av (the dev extra has it)")

FRAMES, RATE, WIDTH, HEIGHT, SAMPLE_RATE = 12, 24, 96, 64, 44100


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """12 frames of a slow pan over scikit-image's astronaut photo, H.264 at 24 frames/s, with an AAC tone."""
    from skimage import data

    photo = data.astronaut()
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=RATE)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        audio = out.add_stream("aac", rate=SAMPLE_RATE)
        for i in range(FRAMES):
            crop = np.ascontiguousarray(photo[100 + 4 * i:100 + 4 * i + HEIGHT, 150 + 6 * i:150 + 6 * i + WIDTH])
            frame = av.VideoFrame.from_ndarray(crop, format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        t = np.arange(SAMPLE_RATE * FRAMES // RATE) / SAMPLE_RATE
        tone = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], format="fltp",
                                          layout="mono")
        tone.sample_rate, tone.pts = SAMPLE_RATE, 0
        out.mux(audio.encode(tone))
        out.mux(audio.encode(None))
    return path


def decoded_rgb(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def y_psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = np.mean((images.luma_uint8(a).astype(np.float64) - images.luma_uint8(b)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / error))


def test_a_clip_keeps_its_frames_rate_and_audio_and_matches_the_image_path(clip, tmp_path, cli):
    need_shared("weights", "fsrcnn_x2.pth")
    from srdeploy import models
    from srdeploy.runtime.pipeline import upscale_rgb
    from srdeploy.models.torch_runner import TorchRunner

    out = tmp_path / "big.mp4"
    result = cli("upscale", str(clip), str(out), "--model", "fsrcnn", "--scale", "2", "--tile", "40")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out) and f"{FRAMES} frames at" in result.stderr and "audio aac" in result.stderr
    with av.open(str(clip)) as source, av.open(str(out)) as upscaled:
        v_out = upscaled.streams.video[0]
        assert (v_out.codec_context.width, v_out.codec_context.height) == (2 * WIDTH, 2 * HEIGHT)
        assert v_out.codec_context.name == "h264" and v_out.average_rate == Fraction(RATE)
        a_in, a_out = source.streams.audio[0], upscaled.streams.audio[0]
        assert (a_out.codec_context.name, a_out.rate) == ("aac", SAMPLE_RATE)
        assert float(a_out.duration * a_out.time_base) == pytest.approx(float(a_in.duration * a_in.time_base))
        packets_in = [bytes(p) for p in source.demux(a_in) if p.size]
        packets_out = [bytes(p) for p in upscaled.demux(a_out) if p.size]
        assert packets_out == packets_in  # copied, not re-encoded
    frames_in, frames_out = decoded_rgb(clip), decoded_rgb(out)
    assert len(frames_in) == len(frames_out) == FRAMES
    infer = TorchRunner(models.load("fsrcnn", 2).network).infer
    psnrs = [y_psnr(upscale_rgb(a, infer, "y"), b) for a, b in zip(frames_in, frames_out)]
    assert min(psnrs) >= 33.0, psnrs  # H.264 at CRF 18 against the image path's output of the same frame


def fake_network(x: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(x, 2, axis=2), 2, axis=3)


@pytest.mark.parametrize("suffix, codec", [(".mkv", "libx265"), (".mkv", "libvpx-vp9"), (".mov", "mpeg4")])
def test_containers_and_codecs(clip, tmp_path, suffix, codec):
    from srdeploy.runtime.video import LocalFrames, VideoOptions, upscale_video

    out = tmp_path / f"big{suffix}"
    report = upscale_video(clip, out, LocalFrames(fake_network, 2, "rgb"), VideoOptions(codec=codec, crf=20, preset="fast"))
    assert report.frames == FRAMES and report.copied_streams == ["audio aac"]
    frames = decoded_rgb(out)
    assert len(frames) == FRAMES and frames[0].shape == (2 * HEIGHT, 2 * WIDTH, 3)
    reference = [fake_network(f.transpose(2, 0, 1)[None])[0].transpose(1, 2, 0) for f in decoded_rgb(clip)]
    assert min(y_psnr(a, b) for a, b in zip(reference, frames)) >= 30.0


def test_a_failure_mid_clip_leaves_nothing(clip, tmp_path):
    from srdeploy.runtime.video import LocalFrames, upscale_video

    calls = []

    def failing(x: np.ndarray) -> np.ndarray:
        calls.append(1)
        if len(calls) == 5:
            raise SrDeployError("the network failed on frame 5")
        return fake_network(x)

    with pytest.raises(SrDeployError, match="frame 5"):
        upscale_video(clip, tmp_path / "big.mp4", LocalFrames(failing, 2, "rgb"))
    assert list(tmp_path.iterdir()) == []  # no output, no temporary file
    assert len(calls) == 5


def _bad_inputs(clip: Path, folder: Path) -> dict[str, Path]:
    corrupt = folder / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    truncated = folder / "truncated.mp4"
    truncated.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    sound = folder / "sound.mp4"
    with av.open(str(sound), "w") as out:
        stream = out.add_stream("aac", rate=SAMPLE_RATE)
        tone = av.AudioFrame.from_ndarray(np.zeros((1, 4096), np.float32), format="fltp", layout="mono")
        tone.sample_rate, tone.pts = SAMPLE_RATE, 0
        out.mux(stream.encode(tone))
        out.mux(stream.encode(None))
    silent = folder / "silent.mp4"  # the clip's video stream alone, remuxed
    with av.open(str(clip)) as source, av.open(str(silent), "w") as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return {"corrupt": corrupt, "truncated": truncated, "sound": sound, "codec": silent}


@pytest.mark.parametrize("case, message", [
    ("corrupt", "is not a readable video"),
    ("truncated", "is not a readable video"),
    ("sound", "has no video stream: pass a video file"),
    ("codec", "--codec mpeg4 cannot be written into .webm ('webm' format does not support 'mpeg4' codec)"),
    ("audio", "its audio stream (aac) cannot be copied into .webm"),
])
def test_bad_video_input_is_one_line_and_leaves_nothing(clip, tmp_path, case, message, cli):
    need_shared("weights", "fsrcnn_x2.pth")
    inputs = tmp_path / "in"
    inputs.mkdir()
    bad = _bad_inputs(clip, inputs)
    source = bad.get(case, clip)
    out = tmp_path / "out" / ("big.webm" if case in ("codec", "audio") else "big.mp4")
    extra = ["--codec", "mpeg4"] if case == "codec" else []  # WebM takes VP8/VP9/AV1 only
    result = cli("upscale", str(source), str(out), "--model", "fsrcnn", "--scale", "2", *extra)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr and result.stderr.count("\n") == 1
    assert not out.exists() and (not out.parent.exists() or list(out.parent.iterdir()) == [])


def test_a_clip_on_ray_workers_equals_the_local_run(clip, tmp_path):
    """`--engine ray` sends the frames round two workers and takes them back in order: the same frames, bit for
    bit, and the same audio packets as the local run."""
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'ray[default]' (the dev extra has it)")
    from srdeploy import models
    from srdeploy.export.onnx.onnx_export import export_onnx
    from tests.conftest import weights

    artifact = export_onnx(models.load("fsrcnn", 2, weights("fsrcnn_x2.pth")), tmp_path / "fsrcnn_x2.onnx")
    local = run_cli("upscale", str(clip), str(tmp_path / "local.mp4"), "--artifact", str(artifact), "--tile", "40")
    ray = run_cli("upscale", str(clip), str(tmp_path / "ray.mp4"), "--artifact", str(artifact), "--tile", "40",
                  "--engine", "ray", "--workers", "2")
    assert local.returncode == ray.returncode == 0, ray.stderr
    assert f"{FRAMES} frames at" in ray.stderr and ray.stdout.strip() == str(tmp_path / "ray.mp4")
    frames_local, frames_ray = decoded_rgb(tmp_path / "local.mp4"), decoded_rgb(tmp_path / "ray.mp4")
    assert len(frames_ray) == FRAMES and all(np.array_equal(a, b) for a, b in zip(frames_local, frames_ray))
    with av.open(str(tmp_path / "local.mp4")) as a, av.open(str(tmp_path / "ray.mp4")) as b:
        assert [bytes(p) for p in a.demux(audio=0) if p.size] == [bytes(p) for p in b.demux(audio=0) if p.size]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_throughput_mode_keeps_every_frame_in_order(clip, tmp_path, backend):
    """`--throughput`: frames run several at once (OpenVINO's THROUGHPUT streams, ONNX Runtime a thread each) and
    come back in stream order: ONNX Runtime gives the same frames bit for bit as the one-at-a-time run; OpenVINO's
    streams pick their own kernels, so its frames are held to within one 8-bit level of its latency run."""
    from srdeploy import models
    from srdeploy.export.onnx.onnx_export import export_onnx
    from tests.conftest import weights

    artifact = export_onnx(models.load("fsrcnn", 2, weights("fsrcnn_x2.pth")), tmp_path / "fsrcnn_x2.onnx")
    common = ("--artifact", str(artifact), "--tile", "40", "--backend", backend)
    latency = run_cli("upscale", str(clip), str(tmp_path / "latency.mp4"), *common)
    throughput = run_cli("upscale", str(clip), str(tmp_path / "throughput.mp4"), *common, "--throughput")
    assert latency.returncode == throughput.returncode == 0, throughput.stderr
    one, many = decoded_rgb(tmp_path / "latency.mp4"), decoded_rgb(tmp_path / "throughput.mp4")
    assert len(many) == FRAMES
    if backend == "onnxruntime":
        assert all(np.array_equal(a, b) for a, b in zip(one, many))
    else:  # decoded after H.264: a level's difference in a frame can move the codec's choices a little
        assert all(np.array_equal(a, b) or y_psnr(a, b) >= 45.0 for a, b in zip(one, many))
