"""DTU in the pixelNeRF / IDR layout (``image/``, ``mask/``, ``cameras.npz``) -> a scene folder: cameras from
the projection matrices (``world_mat_i`` times ``scale_mat_i``), object masks as the images' alpha."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from data_tools.import_common import decoded_sizes, list_images, rigid, source_info
from reconfusion.cameras import opencv_to_opengl
from reconfusion.files import InputError, image_size, read_image
from reconfusion.scene import BACKGROUND_KEY, write_scene

logger = logging.getLogger("reconfusion")


def _rq(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """matrix (3, 3) = upper-triangular (positive diagonal) @ orthonormal, via numpy's QR."""
    flip = np.eye(3)[::-1]
    q, r = np.linalg.qr((flip @ matrix).T)
    upper, ortho = flip @ r.T @ flip, flip @ q.T
    signs = np.diag(np.sign(np.diag(upper)))
    return upper @ signs, signs @ ortho


def decompose_projection(projection: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 3x4 (or 4x4) projection ``P ~ K [R | t]`` -> (K (3, 3) with K[2, 2] = 1, OpenCV c2w (4, 4)).

    ``P`` may carry any non-zero scale, negative included. Raises ValueError when it is singular.
    """
    p = np.asarray(projection, dtype=np.float64)[:3, :4]
    det = np.linalg.det(p[:, :3]) if np.all(np.isfinite(p)) else np.nan
    if not np.isfinite(det) or abs(det) <= 1e-12 * np.abs(p[:, :3]).max() ** 3:
        raise ValueError("projection matrix is singular or non-finite")
    if det < 0:
        p = -p
    k, rotation = _rq(p[:, :3])
    c2w = np.eye(4)
    c2w[:3, :3] = rotation.T
    c2w[:3, 3] = -np.linalg.solve(p[:, :3], p[:, 3])
    return k / k[2, 2], c2w


def _dtu_cameras(cameras: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) intrinsics and (N, 4, 4) OpenGL c2w in the normalised (scale_mat) world.

    K is taken as is, with pixel centres at +0.5 like every camera here (as RegNeRF's DTU loader does).
    """
    try:
        data = dict(np.load(cameras, allow_pickle=False))
    except (ValueError, OSError) as err:
        raise InputError(f"{cameras}: not a readable .npz file ({err}); regenerate it") from err
    mats = sorted(int(m.group(1)) for m in map(re.compile(r"world_mat_(\d+)$").match, data) if m)
    if mats != list(range(count)):
        raise InputError(
            f"{cameras}: holds {len(mats)} world_mat_i but the image folder has {count} images; "
            "world_mat_i must exist for i = 0..N-1, one per image in sorted order"
        )
    intrinsics, c2w = [], []
    for i in range(count):
        projection = _homogeneous(data[f"world_mat_{i}"], cameras, f"world_mat_{i}")
        if f"scale_mat_{i}" in data:
            projection = projection @ _homogeneous(data[f"scale_mat_{i}"], cameras, f"scale_mat_{i}")
        try:
            k, pose = decompose_projection(projection)
        except ValueError as err:
            raise InputError(f"{cameras}: world_mat_{i}: {err}; re-export the calibration") from err
        if abs(k[0, 1]) > 1e-3 * abs(k[0, 0]):
            logger.warning("%s: camera %d has skew %.3g, which the pinhole model drops", cameras, i, k[0, 1])
        intrinsics.append([k[0, 0], k[1, 1], k[0, 2], k[1, 2]])
        c2w.append(opencv_to_opengl(pose))
    return np.array(intrinsics), rigid(np.array(c2w), cameras)


def _homogeneous(matrix: np.ndarray, source: Path, key: str) -> np.ndarray:
    try:
        matrix = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"{source}: {key} must hold numbers ({err}); re-export the calibration") from err
    if matrix.shape not in ((3, 4), (4, 4)):
        raise InputError(f"{source}: {key} must be 3x4 or 4x4, got {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise InputError(f"{source}: {key} is not finite; re-export the calibration")
    return np.vstack([matrix[:3], [0.0, 0.0, 0.0, 1.0]])


def import_dtu(src: Path, out: Path, overwrite: bool) -> None:
    image_dir = next((src / name for name in ("image", "images") if (src / name).is_dir()), None)
    if image_dir is None:
        raise InputError(f"{src}: no image/ (or images/) folder; a DTU scene in pixelNeRF/IDR layout has one")
    cameras = next((src / name for name in ("cameras.npz", "cameras_sphere.npz") if (src / name).is_file()), None)
    if cameras is None:
        raise InputError(f"{src / 'cameras.npz'}: missing; a DTU scene in pixelNeRF/IDR layout needs it")
    images = list_images(image_dir)
    intrinsics, c2w = _dtu_cameras(cameras, len(images))
    sizes = decoded_sizes(images)
    extra = source_info("dtu", src, world="normalised by scale_mat_i where present (IDR), not rescaled further")
    masks = _dtu_masks(src, images, sizes)
    frames: Sequence = images
    if masks is not None:
        frames = _WithAlpha(images, masks)
        extra[BACKGROUND_KEY] = [1.0, 1.0, 1.0]
    write_scene(out, frames, c2w, intrinsics, sizes=sizes, extra=extra, overwrite=overwrite, progress="importing images")
    logger.info(
        "dtu: imported %d frames (%dx%d) with cameras from %s%s into %s", len(images), *sizes[0], cameras.name,
        " and object masks as alpha" if masks is not None else "", out,
    )


def _dtu_masks(src: Path, images: Sequence[Path], sizes: np.ndarray) -> list[Path] | None:
    """The object masks of a DTU scene (``mask/`` or ``masks/``, one per image in sorted order), or None."""
    folder = next((src / name for name in ("mask", "masks") if (src / name).is_dir()), None)
    if folder is None:
        return None
    masks = list_images(folder)
    if len(masks) != len(images):
        raise InputError(
            f"{folder}: {len(masks)} masks for {len(images)} images; they pair in sorted order, "
            "so provide one mask per image or remove the folder"
        )
    for mask, (width, height) in zip(masks, sizes):
        if image_size(mask) != (width, height):
            raise InputError(f"{mask}: mask is {image_size(mask)} but its image is {(width, height)}; resize it")
    return masks


class _WithAlpha(Sequence):
    """RGB images with their masks as alpha (H, W, 4), decoded one at a time as write_scene asks."""

    def __init__(self, images: Sequence[Path], masks: Sequence[Path]):
        self.images, self.masks = list(images), list(masks)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index):
        alpha = read_image(self.masks[index]).max(axis=-1, keepdims=True) > 0.5
        return np.concatenate([read_image(self.images[index]), alpha.astype(np.float32)], axis=-1)
