"""What a fair sparse-view NeRF needs to know about a scene: its kind, its bounds and its background.

Three kinds of scene are told apart from the data alone:

- ``object``: the images carry alpha (Blender renders, DTU and photogrammetry object masks). Fitted
  inside a bounded box around the object (the bounding box of the masks' visual hull), without scene
  contraction, from a uniform initial sampler, and trained on random backgrounds so that empty space
  has to be empty (nerfstudio's practice for Blender scenes); evaluated on the declared background.
- ``forward-facing``: every camera looks the same way (LLFF). Scene contraction, near/far from the
  capture's depth bounds where it has them.
- ``unbounded-360``: cameras look at the scene from around it, and nothing says where it ends (a
  phone capture walking around an object on a table). Scene contraction, near/far from the bounds.

Pure numpy on cameras already normalised as the dataparser normalises them (focus point at the origin,
camera centres in [-1, 1]^3, OpenGL convention).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np

from reconfusion.novel_views import detect_layout, forward_axes, max_angle_from_mean

SceneKind = Literal["object", "forward-facing", "unbounded-360"]
Background = Literal["random", "last_sample", "black", "white"]

MAX_VIEWS_FOR_NO_APPEARANCE = 9
"""With this many training views or fewer, per-image appearance embeddings only let each view explain itself."""
HULL_GRID = 64
"""Voxels per side of the grid the object masks are carved on."""
HULL_MARGIN = 0.15
"""The object box is the hull's bounding box grown by this fraction of its size on every side."""


@dataclass(frozen=True)
class SceneFit:
    """Settings of the scene model chosen from the data (every one can be overridden on the command line)."""

    kind: SceneKind
    """object / forward-facing / unbounded-360."""
    reason: str
    """Why this kind, in a few words."""
    near: float
    """Near plane in the normalised frame."""
    far: float
    """Far plane in the normalised frame."""
    aabb: tuple[tuple[float, float, float], tuple[float, float, float]]
    """Scene box (min corner, max corner) in the normalised frame."""
    contraction: bool
    """Contract space beyond the box (unbounded scenes) or not (objects)."""
    initial_sampler: Literal["uniform", "piecewise"]
    """The proposal networks' initial sampler."""
    background: Background
    """Background used while training."""
    display_background: tuple[float, float, float]
    """Colour renderings and ground truth are composed on for evaluation and rendering."""
    appearance_embedding: bool
    """Per-image appearance embeddings."""


def scene_fit(
    c2w: np.ndarray,
    intrinsics: np.ndarray,
    alphas: Optional[Sequence[np.ndarray]],
    bounds: Optional[np.ndarray] = None,
    declared_background: Optional[tuple[float, float, float]] = None,
    box_half_side: float = 1.0,
) -> SceneFit:
    """Settings for fitting the training views ``c2w`` (N, 4, 4) / ``intrinsics`` (N, 4).

    ``alphas``: (H, W) alpha of each training view where the images carry alpha, else None.
    ``bounds``: (N, 2) near/far per training view in the normalised frame (LLFF), or None.
    ``box_half_side``: the scene box of unbounded scenes (and of objects whose masks carve nothing).
    """
    c2w = np.asarray(c2w, np.float64)
    display = tuple(float(v) for v in (declared_background if declared_background is not None else (1.0, 1.0, 1.0)))
    common = dict(display_background=display, appearance_embedding=len(c2w) > MAX_VIEWS_FOR_NO_APPEARANCE)
    if alphas is not None:
        box = hull_box(c2w, intrinsics, alphas)
        reason = "images carry alpha"
        if box is None:
            box = (-box_half_side * np.ones(3), box_half_side * np.ones(3))
            reason += "; the masks carve no bounded hull, so the whole box is used"
        near, far = box_near_far(c2w, box)
        return SceneFit("object", reason, near, far, _as_box(box), False, "uniform", "random", **common)
    layout = detect_layout(c2w)
    kind: SceneKind = "forward-facing" if layout == "forward-facing" else "unbounded-360"
    spread = max_angle_from_mean(forward_axes(c2w))
    reason = f"no alpha, viewing directions spread {spread:.0f} degrees"
    near, far = (0.05, 1000.0) if bounds is None else (0.9 * float(bounds[:, 0].min()), 1.5 * float(bounds[:, 1].max()))
    if bounds is not None:
        reason += ", near/far from the capture's depth bounds"
    box = (-box_half_side * np.ones(3), box_half_side * np.ones(3))
    background = _named_background(declared_background)
    return SceneFit(kind, reason, near, far, _as_box(box), True, "piecewise", background, **common)


def _as_box(box) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    lo, hi = box
    return tuple(float(v) for v in lo), tuple(float(v) for v in hi)  # type: ignore[return-value]


def _named_background(colour: Optional[tuple[float, float, float]]) -> Background:
    """nerfacto's name for a declared background without alpha; a learned one (last sample) otherwise."""
    if colour is not None and all(v == 1.0 for v in colour):
        return "white"
    if colour is not None and all(v == 0.0 for v in colour):
        return "black"
    return "last_sample"


def project_points(points: np.ndarray, c2w: np.ndarray, intrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (P, 2) (x right, y down, pixel centres at +0.5) and depth (P,) in front of an
    OpenGL camera; depth <= 0 for points behind it."""
    local = (points - c2w[:3, 3]) @ c2w[:3, :3]
    depth = -local[:, 2]
    safe = np.where(depth > 1e-9, depth, 1e-9)
    fx, fy, cx, cy = intrinsics
    return np.stack([cx + fx * local[:, 0] / safe, cy - fy * local[:, 1] / safe], axis=-1), depth


def hull_box(c2w: np.ndarray, intrinsics: np.ndarray, alphas: Sequence[np.ndarray], grid: int = HULL_GRID):
    """Bounding box (min, max) of the visual hull the alpha masks carve, grown by ``HULL_MARGIN``; None
    when nothing survives or the hull fills the whole search cube (masks that mask nothing).

    A grid point survives when every view sees it, and on an opaque pixel (a visual hull of objects that
    are whole in every training view; the margin absorbs masks that clip the object a little).
    """
    radius = float(np.linalg.norm(c2w[:, :3, 3], axis=-1).min())
    axis = (np.arange(grid) + 0.5) / grid * 2.0 * radius - radius
    points = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    seen = np.zeros(len(points), np.int64)
    carved = np.zeros(len(points), bool)
    for pose, k, alpha in zip(c2w, intrinsics, alphas):
        pixels, depth = project_points(points, pose, k)
        col, row = np.floor(pixels[:, 0]).astype(np.int64), np.floor(pixels[:, 1]).astype(np.int64)
        inside = (depth > 0) & (col >= 0) & (row >= 0) & (col < alpha.shape[1]) & (row < alpha.shape[0])
        seen += inside
        carved[inside] |= alpha[row[inside], col[inside]] < 0.5
    keep = ~carved & (seen == len(c2w))
    if not keep.any() or keep.all():
        return None
    lo, hi = points[keep].min(0), points[keep].max(0)
    step = 2.0 * radius / grid
    grow = HULL_MARGIN * (hi - lo) + step
    return lo - grow, hi + grow


def box_near_far(c2w: np.ndarray, box) -> tuple[float, float]:
    """Near/far that bracket the box's bounding sphere from every camera (with room for cameras a
    little nearer or farther than the training ones)."""
    lo, hi = np.asarray(box[0]), np.asarray(box[1])
    centre, radius = (lo + hi) / 2.0, float(np.linalg.norm(hi - lo)) / 2.0
    distances = np.linalg.norm(c2w[:, :3, 3] - centre, axis=-1)
    near = max(0.8 * (float(distances.min()) - radius), 0.01 * float(distances.min()))
    return near, 1.25 * float(distances.max()) + radius
