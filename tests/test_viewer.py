"""nerfstudio's viewer on a fitted reconfusion scene, opened in headless Chromium (skipped without Chromium).

The fitted scene is a coloured object, so the viewer's canvas showing the NeRF is recognisable: part of
it is saturated colour, which the viewer's own grey and white scene furniture never is. Dragging across
the canvas turns the camera, and the picture changes.
"""

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

BIN = Path(sys.executable).parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(url: str, process: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"ns-viewer exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"{url} did not answer within {seconds} s")


def _scene_box(page) -> dict:
    """The page region of the largest canvas: the 3D view (the others are widgets)."""
    boxes = [box for box in (c.bounding_box() for c in page.locator("canvas").all()) if box]
    return max(boxes, key=lambda box: box["width"] * box["height"])


def _canvas(page, box: dict) -> np.ndarray:
    from PIL import Image

    png = page.screenshot(clip=box)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.float32) / 255.0


def _poll(page, box: dict, accept, seconds: float) -> np.ndarray:
    deadline, image = time.monotonic() + seconds, None
    while time.monotonic() < deadline:
        image = _canvas(page, box)
        if accept(image):
            return image
        page.wait_for_timeout(1000)
    raise AssertionError("the viewer's canvas never showed what was expected")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (Debian: apt-get install chromium)")
def test_viewer_shows_the_fitted_scene_and_follows_the_camera(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    from data_tools.synthetic import generate_scenes

    scene = generate_scenes(tmp_path / "data", num_scenes=1, num_views=12, resolution=32, layout="object-360", seed=5)[0]
    out, env = tmp_path / "runs", {**os.environ, "PYTHONWARNINGS": "ignore"}
    train = subprocess.run(
        [str(BIN / "ns-train"), "reconfusion-baseline-cpu", "--data", str(scene), "--output-dir", str(out),
         "--max-num-iterations", "60", "--timestamp", "t", "--vis", "tensorboard", "--logging.local-writer.enable", "False"],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    config = out / scene.name / "reconfusion-baseline-cpu" / "t" / "config.yml"
    port = _free_port()
    log = open(tmp_path / "viewer.log", "w")
    viewer = subprocess.Popen(
        [str(BIN / "ns-viewer"), "--load-config", str(config), "--viewer.websocket-port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    try:
        _wait_for(f"http://127.0.0.1:{port}", viewer, 300)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 640, "height": 480})
            page.goto(f"http://127.0.0.1:{port}")
            page.wait_for_selector("canvas", timeout=120_000)

            def shows_the_scene(image: np.ndarray) -> bool:  # the NeRF's colours: saturated pixels
                return float((image.max(axis=-1) - image.min(axis=-1) > 0.3).mean()) > 0.05

            box = _scene_box(page)
            first = _poll(page, box, shows_the_scene, 300)
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(x, y)
            page.mouse.down()
            page.mouse.move(x + 150, y + 40, steps=10)
            page.mouse.up()
            _poll(page, box, lambda image: float(np.abs(image - first).mean()) > 0.01, 300)  # the view turned
            browser.close()
    finally:
        viewer.terminate()
        viewer.wait(timeout=60)
        log.close()
    assert float(first.std()) > 0.02  # not a blank canvas
