"""Benchmark importers: LLFF, Blender (NeRF-synthetic), nerfstudio / instant-ngp, released
ReconFusion split folders, DTU (pixelNeRF / IDR ``cameras.npz``, in :mod:`data_tools.dtu`), captures with
a COLMAP model (in :mod:`data_tools.colmap`) and Strecha's multiview scenes (``images/`` + ``cameras/NAME.camera``)
-> reconfusion scene folders (shared checks in :mod:`data_tools.import_common`).

Every importer validates its input first (missing files, image/pose count mismatches, images that do
not decode, non-finite or degenerate poses all raise :class:`InputError` naming the file and the fix)
and then writes the scene atomically with :func:`reconfusion.scene.write_scene`.

Poses are converted to OpenGL camera-to-world and otherwise left in the dataset's own world frame and
units: nothing is rescaled or recentred here (the models normalise cameras themselves). What the
importer knows beyond cameras is kept as top-level keys of ``transforms.json``:

- ``reconfusion_import``: the source format and folder;
- ``reconfusion_bounds`` (llff): per-frame ``[near, far]`` from ``poses_bounds.npy``, in LLFF units;
- ``reconfusion_background`` (blender, dtu with masks, RGBA nerfstudio scenes): the colour the RGBA
  images are shown on. Alpha is never thrown away: Blender's RGBA PNGs are copied unchanged and DTU's
  object masks become the alpha channel of the imported images;
- ``reconfusion_subsets`` (blender; nerfstudio when its transforms name train/val/test files): the
  dataset subset (``"train"``, ``"val"``, ``"test"``, or ``"none"``) of each frame, in the order of
  ``frames``.
  ``reconfusion data splits --protocol blender`` keeps the ``"test"`` frames as test views.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Literal

import numpy as np

from data_tools.colmap import import_colmap_model
from data_tools.dtu import import_dtu
from data_tools.import_common import check_out, decoded_sizes, list_images, load_source, rigid, source_info
from reconfusion.cameras import focal_from_fov, llff_to_opengl, opencv_to_opengl
from reconfusion.files import InputError, atomic_directory, has_alpha, is_image_file, read_image, read_json, read_rgba
from reconfusion.scene import (
    BACKGROUND_KEY,
    BOUNDS_KEY,
    TRANSFORMS,
    Scene,
    resolve_image_path,
    write_scene,
)

logger = logging.getLogger("reconfusion")

Format = Literal["llff", "blender", "nerfstudio", "reconfusion", "dtu", "colmap", "strecha"]
SUBSETS_KEY = "reconfusion_subsets"
BLENDER_SUBSETS = ("train", "val", "test")
BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}
_UNSUPPORTED_MODELS = ("OPENCV_FISHEYE", "EQUIRECTANGULAR", "FISHEYE", "OMNIDIRECTIONAL")


def import_scene(
    format: Format,
    src: Path,
    out: Path,
    *,
    downscale: int | None = None,
    background: Literal["white", "black"] = "white",
    overwrite: bool = False,
) -> Path:
    """Import the benchmark scene ``src`` (layout ``format``) into the scene folder ``out``.

    ``downscale`` picks the ``images_{downscale}/`` folder of LLFF (default 8) and COLMAP captures (default 1:
    ``images/``); ``background`` is the colour declared for
    Blender's RGBA images (kept with their alpha; ``Scene.image`` composes on it). Returns ``out``.
    """
    src, out = Path(src), Path(out)
    if format in ("nerfstudio", "reconfusion") and src.name == TRANSFORMS and src.is_file():
        src = src.parent
    if not src.is_dir():
        raise InputError(f"{src}: source folder not found; check the path to the {format} scene")
    check_out(src, out)
    if format == "llff":
        _import_llff(src, out, 8 if downscale is None else downscale, overwrite)
    elif format == "colmap":
        import_colmap_model(src, out, downscale=1 if downscale is None else downscale, overwrite=overwrite)
    elif format == "blender":
        if background not in BACKGROUNDS:
            raise InputError(f"background {background!r} is not one of {sorted(BACKGROUNDS)}")
        _import_blender(src, out, BACKGROUNDS[background], overwrite)
    elif format == "nerfstudio":
        _import_nerfstudio(src, out, overwrite)
    elif format == "reconfusion":
        _import_reconfusion(src, out, overwrite)
    elif format == "dtu":
        import_dtu(src, out, overwrite)
    elif format == "strecha":
        _import_strecha(src, out, overwrite)
    else:
        raise InputError(f"unknown import format {format!r}; choose llff, blender, nerfstudio, reconfusion, dtu, colmap or strecha")
    return out


# --------------------------------------------------------------------------------------------- llff


def _llff_image_dir(src: Path, downscale: int) -> Path:
    if downscale < 1:
        raise InputError(f"--downscale {downscale}: must be a positive integer (8 gives LLFF's 504x378 images)")
    candidates = [src / f"images_{downscale}"] + ([src / "images"] if downscale == 1 else [])
    for folder in candidates:
        if folder.is_dir():
            return folder
    flags = {"images": 1} | {p.name: int(p.name[7:]) for p in src.glob("images_*") if p.name[7:].isdigit()}
    have = [f"{name}/ (--downscale {flag})" for name, flag in sorted(flags.items())
            if (src / name).is_dir() and any(is_image_file(p) for p in (src / name).iterdir())]  # fmt: skip
    raise InputError(
        f"{candidates[0]}: image folder not found; "
        + (f"folders present: {', '.join(have)}: pass the matching --downscale" if have else
           "add LLFF's images/ or images_N/ folder beside poses_bounds.npy")
    )


def _read_poses_bounds(src: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3, 5) LLFF pose-hwf matrices and (N, 2) near/far bounds, validated."""
    path = src / "poses_bounds.npy"
    if not path.is_file():
        raise InputError(f"{path}: missing; an LLFF scene needs poses_bounds.npy (LLFF's imgs2poses.py writes it)")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise InputError(f"{path}: not a readable .npy array ({err}); regenerate it") from err
    if array.dtype.kind not in "iuf":
        raise InputError(f"{path}: holds {array.dtype} values, not numbers; regenerate it (LLFF's imgs2poses.py)")
    if array.ndim != 2 or array.shape[1] != 17:
        raise InputError(f"{path}: expected an (N, 17) array (3x5 pose-hwf + near, far), got {array.shape}")
    bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad.size:
        raise InputError(f"{path}: non-finite poses or bounds in rows {bad[:10].tolist()}; re-run pose estimation")
    poses = array[:, :15].reshape(-1, 3, 5).astype(np.float64)
    if np.any(poses[:, :, 4] <= 0):
        raise InputError(f"{path}: height, width and focal (column 5) must be positive; regenerate the file")
    return poses, array[:, 15:].astype(np.float64)


def _import_llff(src: Path, out: Path, downscale: int, overwrite: bool) -> None:
    poses, bounds = _read_poses_bounds(src)
    poses_file = src / "poses_bounds.npy"
    image_dir = _llff_image_dir(src, downscale)
    images = list_images(image_dir)
    if len(images) != len(poses):
        raise InputError(
            f"{image_dir}: {len(images)} images but {poses_file} has {len(poses)} pose rows; "
            "they pair in sorted order, so remove the extra images or regenerate poses_bounds.npy"
        )
    c2w = rigid(llff_to_opengl(poses[:, :, :4]), poses_file)
    sizes = decoded_sizes(images)
    masks = _llff_masks(src, image_dir, images, sizes)
    full_h, full_w, focal = poses[:, 0, 4], poses[:, 1, 4], poses[:, 2, 4]
    scale_x, scale_y = sizes[:, 0] / full_w, sizes[:, 1] / full_h
    if np.any(np.abs(scale_x - scale_y) * full_h > 1.0):
        logger.warning("%s: aspect ratio differs from poses_bounds.npy's h, w; focal follows the width", image_dir)
    fx = focal * scale_x
    intrinsics = np.stack([fx, fx, sizes[:, 0] / 2.0, sizes[:, 1] / 2.0], axis=-1)
    extra = source_info("llff", src, downscale=downscale, world="LLFF units, not rescaled or recentred")
    extra[BOUNDS_KEY] = bounds.tolist()
    if masks is not None:  # RGBA frames, shown on white
        images = [np.dstack([read_image(image), mask_of(mask)]) for image, mask in zip(images, masks)]
        extra[BACKGROUND_KEY] = list(BACKGROUNDS["white"])
    write_scene(out, images, c2w, intrinsics, sizes=sizes, extra=extra, overwrite=overwrite, progress="importing images")
    logger.info(
        "llff: imported %d frames (%dx%d, from %s%s) into %s; near/far kept as %s",
        len(images), sizes[0, 0], sizes[0, 1], image_dir.name,
        f", masks from {masks[0].parent.name} as alpha" if masks else "", out, BOUNDS_KEY,
    )


def mask_of(path: Path) -> np.ndarray:
    """(H, W) in [0, 1] from a mask image: its alpha where it has one, else its brightest channel."""
    return read_rgba(path)[..., 3] if has_alpha(path) else read_image(path).max(axis=-1)


def _llff_masks(src: Path, image_dir: Path, images: list[Path], sizes: np.ndarray) -> list[Path] | None:
    """The object masks beside the images (``masks_N/`` for ``images_N/``, ``masks/`` for ``images/``), paired
    with the images in sorted order; None where there is no such folder."""
    folder = src / image_dir.name.replace("images", "masks", 1)
    if not folder.is_dir():
        return None
    masks = list_images(folder)
    if len(masks) != len(images):
        raise InputError(f"{folder}: {len(masks)} masks for {len(images)} images in {image_dir}; they pair in sorted "
                         "order, so give every image one mask (or move the folder away to import without masks)")  # fmt: skip
    wrong = np.flatnonzero((decoded_sizes(masks) != sizes).any(axis=1))
    if wrong.size:
        raise InputError(f"{masks[wrong[0]]}: mask size differs from its image's ({sizes[wrong[0]].tolist()}); "
                         f"resize the masks in {folder.name}/ to the images' size")  # fmt: skip
    return masks


# ------------------------------------------------------------------------------------------ blender


def _blender_frames(src: Path) -> tuple[list[Path], list[list], list[list[float]], list[str]]:
    """Image paths, transform matrices, (fov_x, fov_y or None) and subset names, train/val/test order."""
    paths, matrices, fovs, subsets = [], [], [], []
    files = [src / f"transforms_{name}.json" for name in BLENDER_SUBSETS]
    if not any(f.is_file() for f in files):
        raise InputError(f"{src}: no transforms_train/val/test.json; a Blender (NeRF-synthetic) scene needs them")
    for name, source in zip(BLENDER_SUBSETS, files):
        if not source.is_file():
            logger.info("blender: %s absent, no %s frames", source.name, name)
            continue
        meta = read_json(source)
        if not isinstance(meta, dict) or "camera_angle_x" not in meta or not meta.get("frames"):
            raise InputError(f"{source}: needs 'camera_angle_x' and a non-empty 'frames' list")
        if not isinstance(meta["frames"], list) or not all(isinstance(f, dict) for f in meta["frames"]):
            raise InputError(f"{source}: 'frames' must be a list of objects with file_path and transform_matrix")
        fov = [_fov(meta, "camera_angle_x", source), _fov(meta, "camera_angle_y", source)]
        for frame in meta["frames"]:
            path = resolve_image_path(src, str(frame.get("file_path", "")))
            if path is None:
                raise InputError(f"{source}: image {frame.get('file_path')!r} not found; add it or remove its frame")
            if "transform_matrix" not in frame:
                raise InputError(f"{source}: frame {frame.get('file_path')!r} has no transform_matrix")
            paths.append(path)
            matrices.append(frame["transform_matrix"])
            fovs.append(fov)
            subsets.append(name)
    return paths, matrices, fovs, subsets


def _fov(meta: dict, key: str, source: Path) -> float | None:
    """A field of view in radians from a Blender transforms file (None when the key is absent)."""
    value = meta.get(key)
    if value is None:
        return None
    try:
        fov = float(value)
    except (TypeError, ValueError):
        fov = float("nan")
    if not 0.0 < fov < np.pi:
        raise InputError(f"{source}: {key} {value!r} is not a field of view in radians (between 0 and pi); fix it")
    return fov


def _import_blender(src: Path, out: Path, background: tuple[float, float, float], overwrite: bool) -> None:
    paths, matrices, fovs, subsets = _blender_frames(src)
    try:
        c2w = np.array(matrices, dtype=np.float64)
    except ValueError as err:
        raise InputError(f"{src}: transform_matrix entries must all be 4x4 numbers ({err})") from err
    if c2w.shape[1:] != (4, 4):
        raise InputError(f"{src}: transform_matrix must be 4x4 for every frame, got {c2w.shape[1:]}")
    c2w = rigid(c2w, src / "transforms_*.json")
    sizes = decoded_sizes(paths)
    intrinsics = []
    for (fov_x, fov_y), (width, height) in zip(fovs, sizes):
        fx = focal_from_fov(fov_x, float(width))
        fy = fx if fov_y is None else focal_from_fov(fov_y, float(height))
        intrinsics.append([fx, fy, width / 2.0, height / 2.0])
    extra = source_info("blender", src)
    extra[SUBSETS_KEY] = subsets
    extra[BACKGROUND_KEY] = list(background)
    write_scene(out, paths, c2w, np.array(intrinsics), sizes=sizes, extra=extra, overwrite=overwrite, progress="importing images")
    counts = {name: subsets.count(name) for name in BLENDER_SUBSETS}
    logger.info("blender: imported %d RGBA frames %s (background %s) into %s", len(paths), counts, list(background), out)


# ------------------------------------------------------------------------------ nerfstudio, reconfusion


def _frame_subsets(src: Path, meta: dict, scene: Scene) -> list[str] | None:
    """nerfstudio's optional train/val/test_filenames as one subset name per (sorted) frame.

    Frames no list names are "train" when the file has no train_filenames, else "none".
    """
    lookup = {}
    for name in BLENDER_SUBSETS:
        for file_path in meta.get(f"{name}_filenames", []):
            resolved = resolve_image_path(src, str(file_path))
            if resolved is not None:
                lookup[resolved] = name
    if not lookup:
        return None
    unlisted = "none" if "train_filenames" in meta else "train"
    return [lookup.get(path, unlisted) for path in scene.image_paths]


def _check_pinhole(meta: dict, source: Path) -> None:
    model = str(meta.get("camera_model", "OPENCV")).upper()
    if model in _UNSUPPORTED_MODELS or meta.get("is_fisheye"):
        raise InputError(
            f"{source}: camera model {model} is not supported (pinhole + OpenCV k1 k2 p1 p2 only); "
            "undistort the images first"
        )
    frames = meta.get("frames", [])
    if any(abs(float(f.get(k, meta.get(k, 0.0)))) > 0 for f in frames for k in ("k3", "k4")):
        logger.warning("%s: k3/k4 distortion is dropped (the scene format keeps k1, k2, p1, p2)", source)


def _depths(scene: Scene) -> list[np.ndarray] | None:
    if not scene.depth_paths:
        return None
    if all(p is not None and p.suffix == ".npy" and p.is_file() for p in scene.depth_paths):
        return [np.load(p) for p in scene.depth_paths]
    logger.warning("%s: depth maps dropped (only a .npy depth for every frame is imported)", scene.root)
    return None


def _rewrite(src: Path, out: Path, format: str, overwrite: bool) -> Scene:
    """Read a transforms.json scene and write it canonically, keeping its split files."""
    scene = load_source(src)
    meta = read_json(src / TRANSFORMS)
    _check_pinhole(meta, src / TRANSFORMS)
    if any(isinstance(f, dict) and "mask_path" in f for f in meta.get("frames", [])):
        logger.warning("%s: mask_path dropped (scenes keep no per-pixel loss masks; every pixel is fitted and scored)",
                       src / TRANSFORMS)
    decoded_sizes(scene.image_paths)
    extra = source_info(format, src)
    if scene.has_alpha or scene.background is not None:
        extra[BACKGROUND_KEY] = list(scene.display_background)
    if scene.bounds is not None:
        extra[BOUNDS_KEY] = scene.bounds.tolist()
    if "applied_transform" in meta:
        extra["applied_transform"] = meta["applied_transform"]
    subsets = _frame_subsets(src, meta, scene)
    if subsets is not None:
        extra[SUBSETS_KEY] = subsets
    write_scene(
        out, list(scene.image_paths), scene.c2w, scene.intrinsics, sizes=scene.sizes, distortion=scene.distortion,
        splits=scene.splits, depths=_depths(scene), points=scene.points, extra=extra, overwrite=overwrite,
        progress="importing images",
    )
    return scene


def _import_nerfstudio(src: Path, out: Path, overwrite: bool) -> None:
    scene = _rewrite(src, out, "nerfstudio", overwrite)
    kept = sorted(scene.splits) or "none"
    logger.info("nerfstudio: imported %d frames into %s (splits kept: %s)", len(scene), out, kept)


def _import_reconfusion(src: Path, out: Path, overwrite: bool) -> None:
    scene = load_source(src)
    if not scene.splits:
        raise InputError(
            f"{src}: no train_test_split_N.json; a released ReconFusion split folder has them "
            "(import a scene without splits with format nerfstudio)"
        )
    root, kept = src.resolve(), sorted(scene.splits)
    if all(root in p.parents for p in scene.image_paths):
        decoded_sizes(scene.image_paths)
        with atomic_directory(out, overwrite=overwrite) as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
        logger.info("reconfusion: validated and copied %s (%d frames, splits %s) to %s", src, len(scene), kept, out)
        return
    _rewrite(src, out, "reconfusion", overwrite)
    logger.info("reconfusion: images outside %s were copied in; frames renamed, split ids unchanged", src)




# ------------------------------------------------------------------------------------------ strecha


def _read_strecha_camera(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """OpenCV camera-to-world (4, 4), (fx, fy, cx, cy) and (width, height) of a Strecha ``.camera`` file: K (3 rows),
    distortion (zeros), R camera-to-world (3 rows, OpenCV axes), camera centre, width height."""
    if not path.is_file():
        raise InputError(f"{path}: camera file missing; every images/NAME needs cameras/NAME.camera")
    try:
        rows = [[float(v) for v in line.split()] for line in path.read_text().splitlines() if line.strip()]
        k, rotation, centre, size = np.array(rows[0:3]), np.array(rows[4:7]), np.array(rows[7]), rows[8]
        if k.shape != (3, 3) or rotation.shape != (3, 3) or centre.shape != (3,) or len(size) != 2:
            raise ValueError("expected 9 lines: K (3x3), distortion, R (3x3), centre (3), width height")
    except (ValueError, IndexError) as err:
        raise InputError(f"{path}: not a Strecha camera file ({err}); see the format of openMVG's Strecha reader") from err
    if any(rows[3]):
        raise InputError(f"{path}: non-zero distortion {rows[3]}; undistort the images first (Strecha's are undistorted)")
    if abs(k[0, 1]) > 1e-6 * k[0, 0]:
        raise InputError(f"{path}: skewed pixels (K[0, 1] = {k[0, 1]}) cannot be stored; resample the image without skew")
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = rotation, centre
    return c2w, np.array([k[0, 0], k[1, 1], k[0, 2], k[1, 2]]), (int(size[0]), int(size[1]))


def _import_strecha(src: Path, out: Path, overwrite: bool) -> None:
    images = list_images(src / "images") if (src / "images").is_dir() else []
    if not images:
        raise InputError(f"{src / 'images'}: no images; a Strecha scene holds images/ and cameras/NAME.camera files")
    cameras = [_read_strecha_camera(src / "cameras" / f"{image.name}.camera") for image in images]
    sizes = decoded_sizes(images)
    intrinsics = []
    for image, (_, k, (width, height)), size in zip(images, cameras, sizes):  # scale to the images on disk
        intrinsics.append(k * np.array([size[0] / width, size[1] / height] * 2))
    c2w = rigid(opencv_to_opengl(np.stack([camera[0] for camera in cameras])), src / "cameras")
    extra = source_info("strecha", src, world="metres, not rescaled or recentred")
    write_scene(out, images, c2w, np.array(intrinsics), sizes=sizes, extra=extra, overwrite=overwrite,
                progress="importing images")  # fmt: skip
    logger.info("strecha: imported %d frames (%dx%d) into %s", len(images), sizes[0, 0], sizes[0, 1], out)
