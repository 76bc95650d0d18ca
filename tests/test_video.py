"""Videos without a system ffmpeg: the plugin puts imageio-ffmpeg's binary on PATH as ``ffmpeg``
(nerfstudio_plugin.compat.provide_ffmpeg), so ``ns-render --output-format video`` writes a real MP4."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nerfstudio")
pytest.importorskip("imageio_ffmpeg")

import nerfstudio_plugin.methods  # noqa: E402,F401  (as nerfstudio's entry-point discovery does)
from nerfstudio_plugin.compat import provide_ffmpeg  # noqa: E402

BIN = Path(sys.executable).parent


def test_ffmpeg_on_path_after_importing_the_plugin():
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg is not None
    assert subprocess.run([ffmpeg, "-version"], capture_output=True, timeout=60).returncode == 0


def test_provide_ffmpeg_links_the_wheel_binary_once(tmp_path, monkeypatch):
    import imageio_ffmpeg

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no ffmpeg anywhere
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    found = provide_ffmpeg()
    assert found is not None and Path(found).parent.parent == tmp_path / "cache" / "reconfusion"
    assert os.path.samefile(found, imageio_ffmpeg.get_ffmpeg_exe())
    assert provide_ffmpeg() == found  # now on PATH: nothing new is made
    assert os.environ["PATH"].count(os.pathsep) == 1


def _without_wheel_ffmpeg(path: str) -> str:
    """PATH less the folders whose ``ffmpeg`` is imageio-ffmpeg's binary (this process's provide_ffmpeg)."""
    import imageio_ffmpeg

    wheel = os.path.realpath(imageio_ffmpeg.get_ffmpeg_exe())
    return os.pathsep.join(p for p in path.split(os.pathsep) if os.path.realpath(os.path.join(p, "ffmpeg")) != wheel)


@pytest.mark.slow
def test_ns_render_writes_an_mp4_with_every_frame(tmp_path):
    from data_tools.synthetic import generate_scenes

    scene = generate_scenes(tmp_path / "scenes", num_scenes=1, num_views=12, resolution=32, layout="object-360", seed=5)[0]
    out = tmp_path / "runs"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env["PATH"] = _without_wheel_ffmpeg(env["PATH"])  # so the ns-* commands must provide it themselves
    train = subprocess.run(
        [str(BIN / "ns-train"), "reconfusion-baseline-cpu", "--data", str(scene), "--output-dir", str(out),
         "--max-num-iterations", "20", "--timestamp", "t", "--vis", "tensorboard",
         "--logging.local-writer.enable", "False"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    config = out / scene.name / "reconfusion-baseline-cpu" / "t" / "config.yml"
    steps = 2
    common = ["interpolate", "--load-config", str(config), "--pose-source", "train",
              "--interpolation-steps", str(steps), "--frame-rate", "4"]  # fmt: skip
    video, stills = tmp_path / "video.mp4", tmp_path / "stills"
    for output, how in ((video, ["video"]), (stills, ["images", "--image-format", "png"])):
        render = subprocess.run(
            [str(BIN / "ns-render"), *common, "--output-path", str(output), "--output-format", *how],
            capture_output=True, text=True, env=env, timeout=600,
        )
        assert render.returncode == 0, render.stdout[-3000:] + render.stderr[-3000:]
    import av
    from PIL import Image

    with av.open(str(video)) as container:
        frames = [frame.to_ndarray(format="rgb24").astype(np.float32) for frame in container.decode(video=0)]
    # interpolate renders `steps` poses for each pair of consecutive cameras (the 3 training views here)
    train_views = len(json.loads((scene / "train_test_split_3.json").read_text())["train_ids"])
    assert len(frames) == (train_views - 1) * steps == 4
    # The frames are the pictures ns-render made (as PNGs), up to the codec's loss. A 20-step fit renders
    # little more than its background colour, so this compares colours rather than looking for detail.
    for frame, still in zip(frames, sorted(stills.glob("*.png")), strict=True):
        picture = np.asarray(Image.open(still).convert("RGB"), dtype=np.float32)
        assert frame.shape == picture.shape == (32, 32, 3)
        assert np.abs(frame - picture).mean() < 4.0 and picture.mean() > 16.0
