"""``reconfusion fit PHOTOS_OR_SCENE --views N``: from a folder of photos to a fitted, scored and rendered scene.

Five steps, each a command a user could run by hand (and the log says which): pose the photos with
COLMAP when they have no poses (``reconfusion data colmap``), write the sparse-view split when it is
missing (``reconfusion data splits --protocol auto``), fit with ``ns-train reconfusion`` (the GPU preset
where CUDA is available, else ``reconfusion-cpu``), score the held-out views with ``ns-eval``, and render
a video along an orbit fitted to the input cameras (``ns-render camera-path``).
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reconfusion.files import InputError, read_json, write_json
from reconfusion_benchmark.runner import resolve_preset, scene_copy, script
from reconfusion_benchmark.runs import PRIOR_FLAG

logger = logging.getLogger("reconfusion")

STEPS = ("pose", "split", "fit", "evaluate", "render")


@dataclass(frozen=True)
class FitOutputs:
    """Where everything of one ``reconfusion fit`` is."""

    scene: Path
    config: Path
    metrics: dict
    evaluation: Path
    video: Path


MAX_SIDE = {"gpu": 1600, "cpu": 256}
"""Default longest image side fitted per preset (1600: nerfstudio's automatic downscale; 256 keeps CPU
evaluation of full test views to seconds)."""


def fit_photos(source: Path, out: Path, views: int, preset: str = "auto", iterations: int | None = None,
               prior: str = "bundled", video_frames: int = 60, max_side: int | None = None) -> FitOutputs:
    """Run the five steps; raises InputError (one line, with the fix) on bad input.

    Scenes with images larger than ``max_side`` (default :data:`MAX_SIDE` of the preset; 0 keeps full
    size) are fitted from a downscaled copy in OUT/scenes."""
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise InputError(f"{source}: no such folder; give a folder of photos or a scene folder (transforms.json)")
    chosen = resolve_preset(preset)  # type: ignore[arg-type]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    scene = _posed_scene(source, out)
    _ensure_split(scene, views)
    scene = scene_copy(scene, out / "scenes", MAX_SIDE[chosen] if max_side is None else max_side)
    method = "reconfusion" if chosen == "gpu" else "reconfusion-cpu"
    _step(3, f"fitting with ns-train {method} on {views} views")
    command = [script("ns-train"), method, "--data", str(scene), "--output-dir", str(out / "runs"),
               "--experiment-name", scene.name, "--timestamp", "fit", "--vis", "tensorboard"]  # fmt: skip
    command += ["--max-num-iterations", str(iterations)] if iterations else []
    command += [PRIOR_FLAG, prior] if prior != "bundled" else []
    _run(command + ["reconfusion-data", "--num-views", str(views)], env, "ns-train")
    config = out / "runs" / scene.name / method / "fit" / "config.yml"
    _step(4, "scoring the held-out views with ns-eval")
    evaluation = out / "eval.json"
    _run([script("ns-eval"), "--load-config", str(config), "--output-path", str(evaluation),
          "--render-output-path", str(out / "test_renders")], env, "ns-eval")  # fmt: skip
    _step(5, "rendering an orbit video with ns-render")
    path = write_orbit_path(scene, views, config.parent / "dataparser_transforms.json", out / "orbit_path.json",
                            frames=video_frames, max_side=None if chosen == "gpu" else 128)  # fmt: skip
    video = out / "orbit.mp4"
    _run([script("ns-render"), "camera-path", "--load-config", str(config), "--camera-path-filename", str(path),
          "--output-path", str(video), "--output-format", "video"], env, "ns-render")  # fmt: skip
    metrics = read_json(evaluation)["results"]
    outputs = FitOutputs(scene, config, metrics, evaluation, video)
    _summarise(outputs, out)
    return outputs


def _step(number: int, what: str) -> None:
    logger.info("[%d/%d] %s", number, len(STEPS), what)


def _run(command: list[str], env: dict, name: str) -> None:
    """Run a step in the foreground (its own progress shows); a failure names the command to rerun."""
    logger.info("$ %s", shlex.join(command))
    if subprocess.run(command, env=env).returncode != 0:
        raise InputError(f"{name} failed (its output is above); rerun it as shown after the $ to see why")


def _posed_scene(source: Path, out: Path) -> Path:
    """The scene folder: ``source`` itself when it holds transforms.json, else its photos posed into OUT/scene."""
    if (source / "transforms.json").is_file():
        _step(1, f"{source} is a scene folder (transforms.json): no posing needed")
        return source
    from data_tools.colmap import IMAGE_NAMES_FILE, pose_images

    scene = out / "scene"
    if (scene / "transforms.json").is_file():
        posed_from = (read_json(scene / IMAGE_NAMES_FILE).get("source") if (scene / IMAGE_NAMES_FILE).is_file()
                      else None)  # fmt: skip
        if posed_from != str(source.resolve()):
            raise InputError(f"{scene}: holds the photos of {posed_from or 'another capture'}, not of {source}; "
                             "pass another --out, or delete that folder to pose these photos there")
        _step(1, f"photos already posed in {scene} (delete it to pose again)")
        return scene
    _step(1, f"posing the photos of {source} with COLMAP")

    pose_images(source, scene)
    return scene


def _ensure_split(scene: Path, views: int) -> None:
    split = scene / f"train_test_split_{views}.json"
    if split.is_file():
        _step(2, f"using {split}")
        return
    _step(2, f"writing {split} (every 8th image held out for testing, {views} training views spread over the rest)")
    from data_tools.splits import write_splits

    write_splits(scene, "auto", (views,))


def write_orbit_path(scene: Path, views: int, dataparser_transforms: Path, out: Path, frames: int = 60,
                     max_side: int | None = 128, fps: float = 15.0) -> Path:
    """A nerfstudio camera path (model frame) around the training cameras: an ellipse fitted to them for a
    360-degree capture, a circle in front for a forward-facing one, looking at their focus."""
    from reconfusion.cameras import normalize_cameras
    from reconfusion.novel_views import camera_spread, detect_layout, fit_orbit, forward_axes, look_at
    from reconfusion.scene import load_scene

    loaded = load_scene(scene)
    ids = list(loaded.split(views).train_ids)
    transform = read_json(dataparser_transforms)
    rotation, shift, scale = np.array(transform["transform"])[:, :3], np.array(transform["transform"])[:, 3], transform["scale"]
    c2w = loaded.c2w[ids].copy()
    c2w[:, :3, :3] = rotation @ c2w[:, :3, :3]
    c2w[:, :3, 3] = scale * (c2w[:, :3, 3] @ rotation.T + shift)
    normalised, norm_scale, focus = normalize_cameras(c2w)
    angles = np.linspace(0.0, 2.0 * np.pi, frames, endpoint=False)
    if detect_layout(normalised) == "object-360":
        orbit = fit_orbit(normalised)
        height = 0.5 * (orbit["height_min"] + orbit["height_max"])
        centres = [height * orbit["up"] + orbit["radius_a"] * np.cos(a) * orbit["axis_a"]
                   + orbit["radius_b"] * np.sin(a) * orbit["axis_b"] for a in angles]  # fmt: skip
        up = orbit["up"]
    else:
        forward = forward_axes(normalised).mean(0)
        up = normalised[:, :3, 1].mean(0)
        right = np.cross(forward, up)
        right /= np.linalg.norm(right)
        up = np.cross(right, forward)
        radius, middle = camera_spread(normalised), normalised[:, :3, 3].mean(0)
        centres = [middle + radius * (np.cos(a) * right + np.sin(a) * up) for a in angles]
    poses = np.stack([look_at(centre, np.zeros(3), up) for centre in centres])
    poses[:, :3, 3] = poses[:, :3, 3] / norm_scale + focus
    width, height_px = (int(v) for v in loaded.sizes[ids[0]])
    shrink = 1.0 if max_side is None else min(1.0, max_side / max(width, height_px))
    width, height_px = max(8, round(width * shrink)), max(8, round(height_px * shrink))
    fov = float(np.degrees(2 * np.arctan(loaded.sizes[ids[0]][1] / 2 / loaded.intrinsics[ids[0]][1])))
    path = {
        "camera_type": "perspective", "render_width": width, "render_height": height_px, "seconds": frames / fps,
        "camera_path": [{"camera_to_world": pose.reshape(-1).tolist(), "fov": fov, "aspect": width / height_px}
                        for pose in poses],
    }  # fmt: skip
    write_json(out, path)
    return out


def _summarise(outputs: FitOutputs, out: Path) -> None:
    """Plain lines on stdout (never wrapped, so the paths can be copied)."""
    m = outputs.metrics
    lines = [f"done: PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}, LPIPS {m.get('lpips', float('nan')):.3f} on the held-out views"]
    for label, where in (("scene", outputs.scene), ("metrics", outputs.evaluation), ("test renders", out / "test_renders"),
                         ("orbit video", outputs.video), ("nerfstudio run", outputs.config.parent)):  # fmt: skip
        lines.append(f"  {label + ':':<16}{where}")
    lines.append(f"  {'viewer:':<16}ns-viewer --load-config {outputs.config}")
    print("\n".join(lines), flush=True)
