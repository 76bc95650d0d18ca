"""Readers that turn multiview datasets into lists of ``MultiviewScene``.

Every reader converts to reconfusion's camera convention (OpenGL camera-to-world, pixel
intrinsics) and skips scenes with too few views, counting them instead of crashing.

Layouts read:

- scene folders (everything ``reconfusion data`` writes): any folder holding ``transforms.json``;
- CO3D v2: ``ROOT/<category>/frame_annotations.jgz`` (gzipped JSON list of frame annotations with
  PyTorch3D ``viewpoint`` R, T, focal_length, principal_point in NDC-isotropic units), image paths
  relative to ROOT;
- RealEstate10K: ``ROOT/<split>/<sequence>.txt`` camera files (a URL line, then per frame
  ``timestamp fx fy cx cy 0 0`` with intrinsics normalised by width/height, then a row-major 3x4
  OpenCV world-to-camera matrix) and frames in ``ROOT/frames/<sequence>/<timestamp>.(png|jpg)``;
- MVImgNet: ``ROOT/<category>/<object>/images/*`` with a COLMAP model in ``sparse/0`` (binary or text).
"""

from __future__ import annotations

import gzip
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reconfusion.cameras import colmap_to_opengl, opencv_to_opengl
from reconfusion.files import IMAGE_SUFFIXES, InputError, image_size
from reconfusion.scene import load_scene

logger = logging.getLogger("reconfusion")

# PyTorch3D cameras: x left, y up, z forward; OpenCV: x right, y down, z forward.
_PYTORCH3D_TO_OPENCV = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class MultiviewScene:
    """Posed views of one scene, in reconfusion's camera convention."""

    name: str
    """Where the scene came from, for messages."""
    image_paths: tuple[Path, ...]
    """One image per view."""
    c2w: np.ndarray
    """(N, 4, 4) OpenGL camera-to-world."""
    intrinsics: np.ndarray
    """(N, 4) fx, fy, cx, cy in pixels of the image file."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Colour images with alpha are composed on (a scene folder's declared background)."""

    def __len__(self) -> int:
        return len(self.image_paths)


def _keep_scenes(scenes: list[MultiviewScene], skipped: Counter, min_views: int, source: str) -> list[MultiviewScene]:
    kept = []
    for scene in scenes:
        if len(scene) < min_views:
            skipped[f"fewer than {min_views} views"] += 1
        elif not np.all(np.isfinite(scene.c2w)) or not np.all(np.isfinite(scene.intrinsics)):
            skipped["non-finite cameras"] += 1
        else:
            kept.append(scene)
    if skipped:
        logger.warning("%s: skipped %s", source, ", ".join(f"{n} ({why})" for why, n in skipped.items()))
    if not kept:
        raise InputError(f"{source}: no usable scenes (skipped: {dict(skipped) or 'none found'}); check the path and layout")
    logger.info("%s: %d scenes", source, len(kept))
    return kept


def _require_dir(root: Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: dataset folder not found; check the path given to --data")
    return root


def read_scene_folders(root: Path, min_views: int = 4) -> list[MultiviewScene]:
    """All scene folders (``transforms.json``) at or below ``root``; broken scenes are skipped and counted."""
    root = _require_dir(root)
    scenes, skipped = [], Counter()
    for transforms in sorted(root.rglob("transforms.json")):
        try:
            scene = load_scene(transforms.parent)
        except InputError as err:
            logger.warning("skipping %s", err)
            skipped["broken scene"] += 1
            continue
        name = str(transforms.parent.relative_to(root)) if transforms.parent != root else root.name
        scenes.append(MultiviewScene(name, scene.image_paths, scene.c2w, scene.intrinsics, scene.display_background))
    return _keep_scenes(scenes, skipped, min_views, str(root))


def _co3d_frame(frame: dict, root: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    viewpoint = frame["viewpoint"]
    height, width = frame["image"]["size"]
    rotation, translation = np.asarray(viewpoint["R"], float), np.asarray(viewpoint["T"], float)
    # PyTorch3D: x_cam = x_world @ R + T (row vectors).
    w2c = np.eye(4)
    w2c[:3, :3] = _PYTORCH3D_TO_OPENCV @ rotation.T
    w2c[:3, 3] = _PYTORCH3D_TO_OPENCV @ translation
    c2w = opencv_to_opengl(np.linalg.inv(w2c))
    half = min(height, width) / 2.0
    if viewpoint.get("intrinsics_format", "ndc_isotropic") == "ndc_norm_image_bounds":
        sx, sy = width / 2.0, height / 2.0
    else:
        sx = sy = half
    (fx, fy), (px, py) = viewpoint["focal_length"], viewpoint["principal_point"]
    intrinsics = np.array([fx * sx, fy * sy, width / 2.0 - px * sx, height / 2.0 - py * sy])
    return root / frame["image"]["path"], c2w, intrinsics


def read_co3d(root: Path, min_views: int = 4) -> list[MultiviewScene]:
    """CO3D v2: one scene per sequence, from every ``*/frame_annotations.jgz`` under ``root``."""
    root = _require_dir(root)
    annotation_files = sorted(root.glob("*/frame_annotations.jgz"))
    if not annotation_files:
        raise InputError(f"{root}: no <category>/frame_annotations.jgz found; is this a CO3D v2 folder?")
    sequences: dict[str, list] = {}
    for path in annotation_files:
        try:
            frames = json.loads(gzip.decompress(path.read_bytes()))
        except (OSError, ValueError) as err:
            raise InputError(f"{path}: unreadable CO3D annotations ({err}); re-download this category") from err
        for frame in sorted(frames, key=lambda f: f["frame_number"]):
            sequences.setdefault(f"{path.parent.name}/{frame['sequence_name']}", []).append(_co3d_frame(frame, root))
    scenes = [_scene_from_frames(name, frames) for name, frames in sequences.items()]
    return _keep_scenes(scenes, Counter(), min_views, str(root))


def _scene_from_frames(name: str, frames: list[tuple[Path, np.ndarray, np.ndarray]]) -> MultiviewScene:
    present = [f for f in frames if f[0].is_file()]
    return MultiviewScene(
        name,
        tuple(f[0] for f in present),
        np.array([f[1] for f in present]).reshape(-1, 4, 4),
        np.array([f[2] for f in present]).reshape(-1, 4),
    )


def _find_frame(folder: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def _realestate_sequence(path: Path, frames_root: Path) -> list[tuple[Path, np.ndarray, np.ndarray]]:
    lines = path.read_text().splitlines()[1:]
    frames, size = [], None
    for line in lines:
        values = line.split()
        if len(values) != 19:
            raise InputError(f"{path}: expected 19 numbers per camera line, got {len(values)}; is this a RealEstate10K file?")
        image = _find_frame(frames_root / path.stem, values[0])
        if image is None:
            continue
        size = size or image_size(image)
        fx, fy, cx, cy = (float(v) for v in values[1:5])
        w2c = np.array([float(v) for v in values[7:19]]).reshape(3, 4)
        c2w = colmap_to_opengl(w2c[:, :3], w2c[:, 3])
        frames.append((image, c2w, np.array([fx * size[0], fy * size[1], cx * size[0], cy * size[1]])))
    return frames


def read_realestate10k(root: Path, min_views: int = 4) -> list[MultiviewScene]:
    """RealEstate10K camera files under ``root/<split>/`` with frames under ``root/frames/``."""
    root = _require_dir(root)
    camera_files = sorted(p for p in root.glob("*/*.txt") if p.parent.name != "frames")
    if not camera_files:
        raise InputError(f"{root}: no <split>/<sequence>.txt camera files; is this a RealEstate10K folder?")
    scenes = [_scene_from_frames(p.stem, _realestate_sequence(p, root / "frames")) for p in camera_files]
    return _keep_scenes(scenes, Counter(), min_views, str(root))


def _mvimgnet_object(model_dir: Path, images_dir: Path) -> MultiviewScene:
    import pycolmap

    reconstruction = pycolmap.Reconstruction(str(model_dir))
    frames = []
    for image in sorted(reconstruction.images.values(), key=lambda im: im.name):
        camera = reconstruction.cameras[image.camera_id]
        pose = image.cam_from_world() if callable(image.cam_from_world) else image.cam_from_world
        matrix = np.asarray(pose.matrix())
        fx, fy = (camera.focal_length_x, camera.focal_length_y)
        intrinsics = np.array([fx, fy, camera.principal_point_x, camera.principal_point_y])
        frames.append((images_dir / image.name, colmap_to_opengl(matrix[:, :3], matrix[:, 3]), intrinsics))
    return _scene_from_frames(str(model_dir.parents[1]), frames)


def read_mvimgnet(root: Path, min_views: int = 4) -> list[MultiviewScene]:
    """MVImgNet objects: ``<category>/<object>/sparse/0`` COLMAP models with ``images/`` beside them."""
    root = _require_dir(root)
    model_dirs = sorted(p for p in root.glob("*/*/sparse/0") if p.is_dir())
    if not model_dirs:
        raise InputError(f"{root}: no <category>/<object>/sparse/0 COLMAP models; is this an MVImgNet folder?")
    scenes, skipped = [], Counter()
    for model_dir in model_dirs:
        try:
            scenes.append(_mvimgnet_object(model_dir, model_dir.parents[1] / "images"))
        except (ValueError, RuntimeError) as err:
            logger.warning("skipping %s: %s", model_dir, err)
            skipped["unreadable COLMAP model"] += 1
    return _keep_scenes(scenes, skipped, min_views, str(root))


READERS = {
    "scenes": read_scene_folders,
    "co3d": read_co3d,
    "realestate10k": read_realestate10k,
    "mvimgnet": read_mvimgnet,
}
