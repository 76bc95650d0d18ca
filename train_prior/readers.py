"""Readers that turn multiview datasets into lists of :class:`reconfusion.scene.Scene` - the scenes the
importers write and the dataparser reads, so every view is read and composed the same way.

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
- MVImgNet: ``ROOT/<category>/<object>/images/*`` with a COLMAP model in ``sparse/0`` (binary or text);
- LLFF captures: every folder at or below ROOT holding ``poses_bounds.npy`` (N x 17: 3x5 ``[R | t | hwf]``
  with hwf the full-resolution height, width, focal, + near, far) and image folders ``images_K/`` or
  ``images/``; the most downsampled one (largest K, ``images`` counting as 1) is read, its images sorted by
  name pairing with the rows. A ``masks_K/`` folder beside ``images_K/`` (``<image stem>[_mask].<ext>``)
  holds object masks: the views are composed on the background with the mask as alpha;
- Strecha: every folder at or below ROOT with ``images/<name>`` and ``cameras/<name>.camera`` (9 lines:
  K, distortion, R camera-to-world with OpenCV axes, camera centre, width height; see ``_strecha_camera``).
"""

from __future__ import annotations

import gzip
import json
import logging
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from reconfusion.cameras import check_poses, colmap_to_opengl, llff_to_opengl, opencv_to_opengl
from reconfusion.files import IMAGE_SUFFIXES, InputError, image_size
from reconfusion.scene import Scene, load_scene

logger = logging.getLogger("reconfusion")

# PyTorch3D cameras: x left, y up, z forward; OpenCV: x right, y down, z forward.
_PYTORCH3D_TO_OPENCV = np.diag([-1.0, -1.0, 1.0])


def _scene(name: str, root: Path, images: list[Path] | tuple[Path, ...], c2w: np.ndarray, intrinsics: np.ndarray,
           masks: tuple[Path, ...] | None = None) -> Scene:
    """A :class:`Scene` of a training dataset (image sizes read from the files, no distortion)."""
    sizes = np.array([image_size(p) for p in images], np.float64).reshape(-1, 2)
    return Scene(root=root, image_paths=tuple(images), c2w=np.asarray(c2w).reshape(-1, 4, 4),
                 intrinsics=np.asarray(intrinsics).reshape(-1, 4), sizes=sizes, distortion=np.zeros((len(images), 4)),
                 has_alpha=masks is not None, mask_paths=masks, name=name)  # fmt: skip


def _keep_scenes(scenes: list[Scene], skipped: Counter, min_views: int, source: str) -> list[Scene]:
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


def read_scene_folders(root: Path, min_views: int = 4) -> list[Scene]:
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
        scenes.append(replace(scene, name=str(transforms.parent.relative_to(root)) if transforms.parent != root else root.name))
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


def read_co3d(root: Path, min_views: int = 4) -> list[Scene]:
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


def _scene_from_frames(name: str, frames: list[tuple[Path, np.ndarray, np.ndarray]]) -> Scene:
    present = [f for f in frames if f[0].is_file()]
    root = present[0][0].parent if present else Path(name)
    return _scene(name, root, [f[0] for f in present], np.array([f[1] for f in present]), np.array([f[2] for f in present]))


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


def read_realestate10k(root: Path, min_views: int = 4) -> list[Scene]:
    """RealEstate10K camera files under ``root/<split>/`` with frames under ``root/frames/``."""
    root = _require_dir(root)
    camera_files = sorted(p for p in root.glob("*/*.txt") if p.parent.name != "frames")
    if not camera_files:
        raise InputError(f"{root}: no <split>/<sequence>.txt camera files; is this a RealEstate10K folder?")
    scenes = [_scene_from_frames(p.stem, _realestate_sequence(p, root / "frames")) for p in camera_files]
    return _keep_scenes(scenes, Counter(), min_views, str(root))


def _mvimgnet_object(model_dir: Path, images_dir: Path) -> Scene:
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


def read_mvimgnet(root: Path, min_views: int = 4) -> list[Scene]:
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


class _SkipScene(InputError):
    """A scene a reader skips; ``reason`` is what the skipped Counter counts."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _read_each(folders: list[Path], read_one, skipped: Counter) -> list[Scene]:
    """``read_one(folder)`` for each folder; one raising InputError is skipped with a warning and counted."""
    scenes = []
    for folder in folders:
        try:
            scenes.append(read_one(folder))
        except InputError as err:
            logger.warning("skipping %s", err)
            skipped[getattr(err, "reason", "broken scene")] += 1
    return scenes


def _name(folder: Path, root: Path) -> str:
    return str(folder.relative_to(root)) if folder != root else root.name


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in IMAGE_SUFFIXES and not p.name.startswith("."))


def _rigid(c2w: np.ndarray, source: Path) -> np.ndarray:
    try:
        return check_poses(c2w, str(source))
    except ValueError as err:
        raise _SkipScene("degenerate cameras", str(err)) from err


def _llff_factor(name: str) -> int | None:
    """Downsampling factor of an LLFF image folder name (``images`` -> 1, ``images_8`` -> 8), else None."""
    if name == "images":
        return 1
    factor = name.removeprefix("images_")
    return int(factor) if name.startswith("images_") and factor.isdigit() else None


def _llff_poses(path: Path) -> np.ndarray:
    """(N, 3, 5) pose-hwf matrices of poses_bounds.npy (the checks of data_tools' LLFF importer)."""
    if not path.is_file():
        raise _SkipScene("missing poses_bounds.npy", f"{path}: missing; an LLFF capture needs it beside its images")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise _SkipScene("unreadable poses_bounds.npy", f"{path}: not a readable .npy array ({err})") from err
    if array.dtype.kind not in "iuf" or array.ndim != 2 or array.shape[1] != 17:
        raise _SkipScene("unreadable poses_bounds.npy", f"{path}: expected an (N, 17) numeric array, got {array.dtype} {array.shape}")
    poses = array[:, :15].reshape(-1, 3, 5).astype(np.float64)
    if not np.all(np.isfinite(poses)) or np.any(poses[:, :, 4] <= 0):
        raise _SkipScene("unreadable poses_bounds.npy", f"{path}: non-finite poses or non-positive height, width, focal")
    return poses


def _llff_masks(images: list[Path], folder: Path) -> tuple[Path, ...]:
    """Each image's mask in ``folder`` (``<stem>_mask.<ext>`` or ``<stem>.<ext>``), of the image's size."""
    masks = [_find_frame(folder, f"{image.stem}_mask") or _find_frame(folder, image.stem) for image in images]
    count = len(_list_images(folder))
    if count != len(images) or None in masks:
        missing = [image.name for image, mask in zip(images, masks) if mask is None]
        raise _SkipScene("masks do not match images", f"{folder}: {count} masks for {len(images)} images (none for {missing[:5]})")
    if any(image_size(mask) != image_size(image) for mask, image in zip(masks, images)):
        raise _SkipScene("masks do not match images", f"{folder}: mask sizes differ from the images' sizes")
    return tuple(masks)


def _llff_capture(capture: Path, root: Path) -> Scene:
    poses = _llff_poses(capture / "poses_bounds.npy")
    folders = {_llff_factor(p.name): p for p in sorted(capture.glob("images*")) if p.is_dir()}
    folders.pop(None, None)
    if not folders:
        raise _SkipScene("no image folder", f"{capture}: no images_K/ or images/ folder beside poses_bounds.npy")
    folder = folders[max(folders)]
    images = _list_images(folder)
    if len(images) != len(poses):
        raise _SkipScene("image and pose counts differ", f"{folder}: {len(images)} images but {len(poses)} rows in poses_bounds.npy")
    masks_dir = capture / folder.name.replace("images", "masks", 1)
    masks = _llff_masks(images, masks_dir) if masks_dir.is_dir() else None
    sizes = np.array([image_size(p) for p in images], np.float64)  # (N, 2) width, height
    fx = poses[:, 2, 4] * sizes[:, 0] / poses[:, 1, 4]  # hwf focal scaled to the image width, as the importer
    intrinsics = np.stack([fx, fx, sizes[:, 0] / 2.0, sizes[:, 1] / 2.0], axis=-1)
    c2w = _rigid(llff_to_opengl(poses[:, :, :4]), capture / "poses_bounds.npy")
    return _scene(_name(capture, root), capture, images, c2w, intrinsics, masks)


def read_llff(root: Path, min_views: int = 4) -> list[Scene]:
    """LLFF captures at or below ``root``: folders with ``poses_bounds.npy`` or an ``images[_K]/`` folder."""
    root = _require_dir(root)
    found = [p.parent for p in root.rglob("poses_bounds.npy")]
    found += [p.parent for p in root.rglob("images*") if p.is_dir() and _llff_factor(p.name) is not None]
    if not found:
        raise InputError(f"{root}: no poses_bounds.npy or images_K/ folder; is this an LLFF capture folder?")
    skipped = Counter()
    scenes = _read_each(sorted(set(found)), lambda capture: _llff_capture(capture, root), skipped)
    return _keep_scenes(scenes, skipped, min_views, str(root))


def _strecha_camera(path: Path, image: Path) -> tuple[np.ndarray, np.ndarray, bool]:
    """OpenGL c2w, intrinsics in ``image``'s pixels, and whether its distortion or skew (ignored) is non-zero.

    A ``.camera`` file has 9 lines: K (3 rows), 3 distortion coefficients, R (3 rows), the camera centre C
    in world coordinates, ``width height``. R is camera-to-world with OpenCV axes (its columns are the
    camera's x right, y down, z forward), so a world point X projects as ``K R^T (X - C)``. Checked on the
    shared Strecha scenes: SIFT matches lie ~0.1 px from the epipolar lines this gives, 10-150 px from
    those of R world-to-camera or of line 8 as a translation. K is rescaled if the image has another size.
    """
    try:
        rows = [[float(v) for v in line.split()] for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as err:
        raise _SkipScene("unreadable .camera file", f"{path}: unreadable ({err})") from err
    if [len(row) for row in rows[:9]] != [3] * 8 + [2] or min(rows[8]) <= 0:
        raise _SkipScene("unreadable .camera file", f"{path}: expected 9 lines (K, distortion, R, centre, size) of 3 numbers (size: 2)")
    k = np.array(rows[0:3])
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = rows[4:7], rows[7]
    width, height = image_size(image)
    sx, sy = width / rows[8][0], height / rows[8][1]
    intrinsics = np.array([k[0, 0] * sx, k[1, 1] * sy, k[0, 2] * sx, k[1, 2] * sy])
    return opencv_to_opengl(c2w), intrinsics, bool(np.any(rows[3]) or k[0, 1])


def _strecha_scene(folder: Path, root: Path) -> Scene:
    cameras = sorted((folder / "cameras").glob("*.camera"))
    images = [folder / "images" / camera.name.removesuffix(".camera") for camera in cameras]
    missing = [image.name for image in images if not image.is_file()]
    if missing:
        raise _SkipScene("cameras without images", f"{folder / 'images'}: no image for cameras {missing[:5]}")
    c2w, intrinsics, distorted = zip(*(_strecha_camera(camera, image) for camera, image in zip(cameras, images)))
    if any(distorted):
        logger.warning("%s: ignoring the non-zero distortion or skew of %d cameras (read as pinholes)", folder, sum(distorted))
    c2w = _rigid(np.array(c2w), folder / "cameras")
    return _scene(_name(folder, root), folder, images, c2w, np.array(intrinsics))


def read_strecha(root: Path, min_views: int = 4) -> list[Scene]:
    """Strecha scenes at or below ``root``: folders with ``cameras/<image name>.camera`` and ``images/``."""
    root = _require_dir(root)
    folders = sorted({p.parent.parent for p in root.rglob("*.camera") if p.parent.name == "cameras"})
    if not folders:
        raise InputError(f"{root}: no <scene>/cameras/*.camera files; is this a Strecha folder?")
    skipped = Counter()
    scenes = _read_each(folders, lambda folder: _strecha_scene(folder, root), skipped)
    return _keep_scenes(scenes, skipped, min_views, str(root))


READERS = {
    "scenes": read_scene_folders,
    "co3d": read_co3d,
    "realestate10k": read_realestate10k,
    "mvimgnet": read_mvimgnet,
    "llff": read_llff,
    "strecha": read_strecha,
}
