"""The one camera-convention module.

Convention everywhere in reconfusion: camera-to-world 4x4 matrices in the OpenGL / nerfstudio
convention (camera x right, y up, z back: the camera looks along -z) and pinhole intrinsics
``(fx, fy, cx, cy)`` in pixels, with the centre of pixel ``(row i, column j)`` at ``(j + 0.5, i + 0.5)``.

Conversions from the other conventions the data comes in (numpy, used by data_tools):

- OpenCV / COLMAP: camera x right, y down, z forward. COLMAP stores world-to-camera ``(R, t)``.
- LLFF ``poses_bounds.npy``: 3x5 ``[R | t | hwf]`` with rotation columns (down, right, back).
- Blender / NeRF-synthetic: already OpenGL.

Projection and ray generation (torch, used by the prior) live here too, so that every consumer
agrees on the same pixel-centre convention.
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

_FLIP_YZ = np.diag([1.0, -1.0, -1.0, 1.0])


def _as_homogeneous(c2w: np.ndarray) -> np.ndarray:
    """(..., 3, 4) or (..., 4, 4) -> (..., 4, 4)."""
    c2w = np.asarray(c2w, dtype=np.float64)
    if c2w.shape[-2:] == (4, 4):
        return c2w.copy()
    if c2w.shape[-2:] != (3, 4):
        raise ValueError(f"expected camera matrices of shape (..., 3, 4) or (..., 4, 4), got {c2w.shape}")
    bottom = np.broadcast_to(np.array([0.0, 0.0, 0.0, 1.0]), c2w.shape[:-2] + (1, 4))
    return np.concatenate([c2w, bottom], axis=-2)


def opencv_to_opengl(c2w_opencv: np.ndarray) -> np.ndarray:
    """Camera-to-world OpenCV (x right, y down, z forward) -> OpenGL (x right, y up, z back)."""
    return _as_homogeneous(c2w_opencv) @ _FLIP_YZ


def opengl_to_opencv(c2w_opengl: np.ndarray) -> np.ndarray:
    """Camera-to-world OpenGL -> OpenCV. The flip is its own inverse."""
    return _as_homogeneous(c2w_opengl) @ _FLIP_YZ


def llff_to_opengl(poses_llff: np.ndarray) -> np.ndarray:
    """LLFF (..., 3, 4) poses with rotation columns (down, right, back) -> OpenGL (..., 4, 4)."""
    p = _as_homogeneous(poses_llff)
    down, right, back = p[..., :3, 0].copy(), p[..., :3, 1].copy(), p[..., :3, 2].copy()
    p[..., :3, 0], p[..., :3, 1], p[..., :3, 2] = right, -down, back
    return p


def opengl_to_llff(c2w_opengl: np.ndarray) -> np.ndarray:
    """OpenGL (..., 4, 4) -> LLFF (..., 3, 4) with rotation columns (down, right, back)."""
    p = _as_homogeneous(c2w_opengl)
    right, up, back = p[..., :3, 0].copy(), p[..., :3, 1].copy(), p[..., :3, 2].copy()
    p[..., :3, 0], p[..., :3, 1], p[..., :3, 2] = -up, right, back
    return p[..., :3, :]


def colmap_to_opengl(rotation_w2c: np.ndarray, translation_w2c: np.ndarray) -> np.ndarray:
    """COLMAP world-to-camera (R (3, 3), t (3,)) in OpenCV axes -> OpenGL camera-to-world (4, 4)."""
    w2c = np.eye(4)
    w2c[:3, :3] = rotation_w2c
    w2c[:3, 3] = translation_w2c
    return opencv_to_opengl(np.linalg.inv(w2c))


def focal_from_fov(fov_radians: float, size_pixels: float) -> float:
    """Pinhole focal length in pixels from a full field of view along an image side."""
    return 0.5 * size_pixels / np.tan(0.5 * fov_radians)


def check_poses(c2w: np.ndarray, source: str) -> np.ndarray:
    """Validate camera-to-world matrices: finite, rotation part orthonormal with det +1.

    ``source`` names the file the poses came from, for the error message.
    """
    c2w = _as_homogeneous(c2w)
    if not np.all(np.isfinite(c2w)):
        bad = sorted({int(i) for i in np.argwhere(~np.isfinite(c2w).all(axis=(-1, -2))).ravel()})
        raise ValueError(f"{source}: non-finite camera poses at frames {bad[:10]}; re-export or drop those frames")
    rot = c2w[..., :3, :3]
    gram_err = np.abs(rot @ np.swapaxes(rot, -1, -2) - np.eye(3)).max(axis=(-1, -2))
    det = np.linalg.det(rot)
    bad = np.flatnonzero((gram_err > 1e-2) | (np.abs(det - 1.0) > 1e-2))
    if bad.size:
        raise ValueError(
            f"{source}: degenerate camera poses at frames {bad[:10].tolist()} (rotation not orthonormal "
            "or mirrored); poses must be rigid camera-to-world transforms"
        )
    return c2w


def similarity_alignment(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity (scale s, rotation R, translation t) with target ~ s R source + t.

    Umeyama's closed form on (N, 3) point sets, N >= 3, not all collinear.
    """
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    mu_s, mu_t = source.mean(0), target.mean(0)
    xs, xt = source - mu_s, target - mu_t
    cov = xt.T @ xs / len(source)
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2, 2] = -1.0
    rotation = u @ sign @ vt
    scale = float(np.trace(np.diag(d) @ sign) / xs.var(0).sum())
    translation = mu_t - scale * rotation @ mu_s
    return scale, rotation, translation


# --------------------------------------------------------------------------- torch, for the models


def scale_intrinsics(intrinsics: Float[Tensor, "*batch 4"], sx: float, sy: float) -> Float[Tensor, "*batch 4"]:
    """Intrinsics after resizing an image by (sx, sy); pixel-centre convention preserved."""
    return intrinsics * intrinsics.new_tensor([sx, sy, sx, sy])


def crop_intrinsics(intrinsics: Float[Tensor, "*batch 4"], left: float, top: float) -> Float[Tensor, "*batch 4"]:
    """Intrinsics after cropping an image at (left, top) pixels."""
    return intrinsics - intrinsics.new_tensor([0.0, 0.0, left, top])


def pixel_rays(
    c2w: Float[Tensor, "*batch 4 4"], intrinsics: Float[Tensor, "*batch 4"], height: int, width: int
) -> tuple[Float[Tensor, "*batch H W 3"], Float[Tensor, "*batch H W 3"]]:
    """World-space origins and unit directions of the rays through every pixel centre."""
    dtype, device = c2w.dtype, c2w.device
    rows = torch.arange(height, dtype=dtype, device=device) + 0.5
    cols = torch.arange(width, dtype=dtype, device=device) + 0.5
    v, u = torch.meshgrid(rows, cols, indexing="ij")
    fx, fy, cx, cy = (intrinsics[..., k, None, None] for k in range(4))
    # Camera-frame direction in OpenGL axes: +x right, +y up, looking down -z.
    dirs_cam = torch.stack([(u - cx) / fx, -(v - cy) / fy, -torch.ones_like(u - cx)], dim=-1)
    rot = c2w[..., None, None, :3, :3]
    dirs = (rot @ dirs_cam[..., None])[..., 0]
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origins = c2w[..., None, None, :3, 3].expand_as(dirs)
    return origins, dirs


def world_to_camera(points: Float[Tensor, "*batch N 3"], c2w: Float[Tensor, "*batch 4 4"]) -> Float[Tensor, "*batch N 3"]:
    """Points expressed in the camera frame (OpenGL axes) of c2w."""
    rot, trans = c2w[..., :3, :3], c2w[..., :3, 3]
    return ((points - trans[..., None, :]) @ rot)


def project(
    points: Float[Tensor, "*batch N 3"], c2w: Float[Tensor, "*batch 4 4"], intrinsics: Float[Tensor, "*batch 4"]
) -> tuple[Float[Tensor, "*batch N 2"], Float[Tensor, "*batch N"]]:
    """Pixel coordinates (u right, v down; pixel centres at +0.5) and depth in front of the camera.

    Points behind the camera get depth <= 0; their pixel coordinates are meaningless.
    """
    cam = world_to_camera(points, c2w)
    depth = -cam[..., 2]
    safe = torch.where(depth.abs() < 1e-8, torch.full_like(depth, 1e-8), depth)
    fx, fy, cx, cy = (intrinsics[..., k, None] for k in range(4))
    u = fx * cam[..., 0] / safe + cx
    v = -fy * cam[..., 1] / safe + cy
    return torch.stack([u, v], dim=-1), depth


def focus_point(c2w: np.ndarray) -> np.ndarray:
    """The point closest (least squares) to all optical axes of OpenGL cameras (N, 4, 4).

    For near-parallel axes (forward-facing captures) the problem is ill-conditioned; then the point
    one camera-spread in front of the mean camera centre is used.
    """
    c2w = _as_homogeneous(c2w)
    centres, forward = c2w[:, :3, 3], -c2w[:, :3, 2]
    forward = forward / np.linalg.norm(forward, axis=-1, keepdims=True)
    projectors = np.eye(3) - forward[:, :, None] * forward[:, None, :]
    a = projectors.sum(0)
    b = (projectors @ centres[:, :, None]).sum(0)[:, 0]
    spread = max(float(np.linalg.norm(centres - centres.mean(0), axis=-1).max()), 1e-6)
    if len(c2w) >= 2 and np.linalg.cond(a) < 1e4:
        point = np.linalg.solve(a, b)
        in_front = ((point - centres) * forward).sum(-1).mean() > 0
        if in_front and np.linalg.norm(point - centres.mean(0)) < 20 * spread:
            return point
    mean_forward = forward.mean(0) / max(np.linalg.norm(forward.mean(0)), 1e-9)
    return centres.mean(0) + spread * mean_forward


def normalize_cameras(c2w: np.ndarray, focus: np.ndarray | None = None) -> tuple[np.ndarray, float, np.ndarray]:
    """The paper's camera normalisation: focus point at the origin, camera centres in [-1, 1]^3.

    Returns (normalised c2w, scale, focus) with ``normalised centre = scale * (centre - focus)``.
    """
    c2w = _as_homogeneous(c2w)
    focus = focus_point(c2w) if focus is None else np.asarray(focus, np.float64)
    extent = float(np.abs(c2w[:, :3, 3] - focus).max())
    scale = 1.0 / max(extent, 1e-9)
    out = c2w.copy()
    out[:, :3, 3] = scale * (c2w[:, :3, 3] - focus)
    return out, scale, focus


def normalize_for_prior(
    observed_c2w: np.ndarray, target_c2w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """The prior's camera frame, computed from the observed cameras only.

    Training and scene fitting both call this, so the prior always sees cameras normalised the
    same way: the observed cameras' focus point at the origin, their centres in [-1, 1]^3 (the
    paper's normalisation), the target cameras moved by the same similarity. Returns
    (observed, target, near, far) with near/far bracketing the focus point.
    """
    observed, scale, focus = normalize_cameras(observed_c2w)
    target = _as_homogeneous(target_c2w).copy()
    target[..., :3, 3] = scale * (target[..., :3, 3] - focus)
    distance = float(np.linalg.norm(observed[:, :3, 3], axis=-1).mean())
    return observed, target, 0.05 * distance, 3.0 * distance
