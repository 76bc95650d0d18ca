"""Novel cameras near the observed ones, and the observed views that condition the prior for them.

RECONFUSION.md section 2, step 1 and 3: the sample loss renders the scene from cameras near the
inputs - small perturbations / interpolations of the input poses for forward-facing captures, poses
on an ellipse fitted to the inputs for 360-degree captures - and conditions the prior on the nearest
observed views. The layout is detected from the cameras.

Pure numpy functions on OpenGL camera-to-world matrices (reconfusion.cameras conventions). They
expect cameras normalised as the prior's training data (``reconfusion.cameras.normalize_cameras``:
focus point at the origin, centres in [-1, 1]^3), so ``focus`` defaults to the origin.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Layout = Literal["forward-facing", "object-360"]

ORBIT_ANGLE_DEGREES = 45.0
"""Captures whose horizontal viewing directions spread further than this from their mean are 360-degree."""


def forward_axes(c2w: np.ndarray) -> np.ndarray:
    """(N, 3) unit viewing directions (OpenGL cameras look along -z)."""
    forward = -np.asarray(c2w)[:, :3, 2]
    return forward / np.linalg.norm(forward, axis=-1, keepdims=True)


def max_angle_from_mean(directions: np.ndarray) -> float:
    """Largest angle (degrees) between unit vectors and their mean direction (180 if they cancel out)."""
    mean = directions.mean(0)
    if np.linalg.norm(mean) < 1e-6:
        return 180.0
    cosines = directions @ (mean / np.linalg.norm(mean))
    return float(np.degrees(np.arccos(np.clip(cosines.min(), -1.0, 1.0))))


def detect_layout(c2w: np.ndarray) -> Layout:
    """``"object-360"`` when the cameras look at the scene from around it, else ``"forward-facing"``.

    The test is on the horizontal part of the viewing directions (perpendicular to the cameras' mean
    up vector), so that an orbit seen from high above - whose viewing directions all point mostly down -
    still counts as 360-degree: its horizontal directions spread more than ``ORBIT_ANGLE_DEGREES``
    around their mean, while a forward-facing capture's all point the same way.
    """
    c2w = np.asarray(c2w, np.float64)
    forward = forward_axes(c2w)
    up = c2w[:, :3, 1].mean(0)
    if np.linalg.norm(up) > 1e-6:
        up = up / np.linalg.norm(up)
        horizontal = forward - (forward @ up)[:, None] * up
        lengths = np.linalg.norm(horizontal, axis=-1)
        if (lengths > 0.1).sum() >= 2:  # cameras looking straight down say nothing about azimuth
            forward = horizontal[lengths > 0.1] / lengths[lengths > 0.1, None]
    return "object-360" if max_angle_from_mean(forward) > ORBIT_ANGLE_DEGREES else "forward-facing"


def forward_facing_arc(c2w: np.ndarray, half_width_degrees: float) -> np.ndarray:
    """Sorted indices of the views whose viewing direction lies within ``half_width_degrees`` of one view's,
    around the view with the most such neighbours: a forward-facing piece of a 360-degree capture."""
    forward = forward_axes(c2w)
    close = forward @ forward.T >= np.cos(np.radians(half_width_degrees))
    return np.flatnonzero(close[int(np.argmax(close.sum(1)))])


def look_at(position: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """OpenGL camera-to-world (4, 4) at ``position`` looking at ``target`` with ``up`` roughly up."""
    back = position - target
    back = back / np.linalg.norm(back)
    right = np.cross(up, back)
    if np.linalg.norm(right) < 1e-6:  # up parallel to the viewing direction: pick any perpendicular
        right = np.cross(np.array([1.0, 0.0, 0.0]) if abs(back[0]) < 0.9 else np.array([0.0, 1.0, 0.0]), back)
    right = right / np.linalg.norm(right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, np.cross(back, right), back, position
    return c2w


def random_rotation(rng: np.random.Generator, max_degrees: float) -> np.ndarray:
    """A rotation about a uniformly random axis by an angle uniform in [-max_degrees, max_degrees]."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.radians(rng.uniform(-max_degrees, max_degrees))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def camera_spread(c2w: np.ndarray) -> float:
    """RMS distance of the camera centres to their mean (the scale of perturbations)."""
    centres = np.asarray(c2w)[:, :3, 3]
    return float(np.sqrt(((centres - centres.mean(0)) ** 2).sum(-1).mean()))


def sample_forward_facing(
    c2w: np.ndarray,
    num: int,
    rng: np.random.Generator,
    position_jitter: float = 0.2,
    rotation_jitter_degrees: float = 3.0,
    focus: np.ndarray | None = None,
) -> np.ndarray:
    """(num, 4, 4) perturbed input poses (the paper's novel views for forward-facing captures).

    Each camera is one input pose, chosen uniformly, moved by a Gaussian offset of ``position_jitter``
    times the camera spread (truncated at two standard deviations per axis) and turned by at most
    ``rotation_jitter_degrees``. Single poses rather than blends of all of them, so that the views reach
    the edges of the rig and a little beyond - where test views sit - instead of clustering in its
    middle. Every centre lies within ``2 * sqrt(3) * position_jitter * spread`` of an input.
    """
    c2w = np.asarray(c2w, np.float64)
    focus = np.zeros(3) if focus is None else np.asarray(focus, np.float64)
    spread = camera_spread(c2w)
    if spread < 1e-9:  # a single view: perturb relative to its distance from the focus
        spread = 0.1 * float(np.linalg.norm(c2w[0, :3, 3] - focus))
    out = np.tile(np.eye(4), (num, 1, 1))
    for i in range(num):
        source = c2w[rng.integers(len(c2w))]
        offset = np.clip(rng.normal(size=3), -2.0, 2.0) * position_jitter * spread
        out[i, :3, :3] = random_rotation(rng, rotation_jitter_degrees) @ source[:3, :3]
        out[i, :3, 3] = source[:3, 3] + offset
    return out


def fit_orbit(c2w: np.ndarray, focus: np.ndarray | None = None) -> dict[str, np.ndarray | float]:
    """An ellipse around the focus fitted to the camera centres.

    Returns ``up`` (plane normal, oriented like the cameras' up vectors), in-plane axes ``axis_a`` and
    ``axis_b`` with radii ``radius_a`` / ``radius_b`` (clamped to the range of the inputs' in-plane
    radii, so the ellipse never strays from them), and the inputs' ``height_min`` / ``height_max``
    along ``up``.
    """
    c2w = np.asarray(c2w, np.float64)
    focus = np.zeros(3) if focus is None else np.asarray(focus, np.float64)
    offsets = c2w[:, :3, 3] - focus
    camera_up = c2w[:, :3, 1].mean(0)
    up = camera_up / max(np.linalg.norm(camera_up), 1e-9)
    if len(c2w) >= 3:
        centred = offsets - offsets.mean(0)
        _, singular, vt = np.linalg.svd(centred)
        if singular[1] > 1e-6 * max(singular[0], 1e-12):  # not collinear: the plane normal is defined
            up = vt[2] * np.sign(vt[2] @ up if abs(vt[2] @ up) > 1e-9 else 1.0)
    heights = offsets @ up
    planar = offsets - heights[:, None] * up
    axis_a, axis_b = _planar_axes(planar, up)
    coords = np.stack([planar @ axis_a, planar @ axis_b], -1)
    radii = np.linalg.norm(coords, axis=-1)
    radius_a, radius_b = _ellipse_radii(coords, float(radii.mean()))
    low, high = float(radii.min()), float(radii.max())
    return {
        "up": up,
        "axis_a": axis_a,
        "axis_b": axis_b,
        "radius_a": float(np.clip(radius_a, low, high)),
        "radius_b": float(np.clip(radius_b, low, high)),
        "height_min": float(heights.min()),
        "height_max": float(heights.max()),
    }


def _planar_axes(planar: np.ndarray, up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Principal in-plane directions of the centres (any orthonormal pair if degenerate)."""
    _, _, vt = np.linalg.svd(planar) if len(planar) >= 2 else (None, None, np.eye(3))
    axis_a = vt[0] - (vt[0] @ up) * up
    if np.linalg.norm(axis_a) < 1e-6:
        axis_a = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    axis_a = axis_a / np.linalg.norm(axis_a)
    return axis_a, np.cross(up, axis_a)


def _ellipse_radii(coords: np.ndarray, fallback: float) -> tuple[float, float]:
    """Least-squares axis-aligned ellipse x^2/a^2 + y^2/b^2 = 1 through the points (circle if ill-posed)."""
    design = coords**2
    if len(coords) >= 2 and np.linalg.matrix_rank(design, tol=1e-9) == 2:
        inv_sq, *_ = np.linalg.lstsq(design, np.ones(len(coords)), rcond=None)
        if (inv_sq > 0).all():
            radii = 1.0 / np.sqrt(inv_sq)
            if radii.max() / radii.min() < 3.0:
                return float(radii[0]), float(radii[1])
    return fallback, fallback


def orbit_arc(c2w: np.ndarray, orbit: dict, focus: np.ndarray) -> tuple[float, float]:
    """(start, length) in radians of the part of the fitted ellipse to sample: the whole turn when the inputs
    surround the focus, else the arc they span (their largest angular gap exceeds half a turn, as for DTU or a
    partial walk around) widened by a quarter of its length, at least 10 degrees, on each side."""
    offsets = np.asarray(c2w)[:, :3, 3] - focus
    angles = np.sort(np.arctan2(offsets @ orbit["axis_b"], offsets @ orbit["axis_a"]))
    gaps = np.diff(np.concatenate([angles, angles[:1] + 2.0 * np.pi]))
    widest = int(np.argmax(gaps))
    if gaps[widest] <= np.pi:
        return 0.0, 2.0 * np.pi
    start, span = angles[(widest + 1) % len(angles)], 2.0 * np.pi - gaps[widest]
    margin = max(0.25 * span, np.radians(10.0))
    return start - margin, min(span + 2.0 * margin, 2.0 * np.pi)


def sample_orbit(
    c2w: np.ndarray, num: int, rng: np.random.Generator, focus: np.ndarray | None = None
) -> np.ndarray:
    """(num, 4, 4) cameras on the ellipse fitted to the inputs (on the arc they span, see :func:`orbit_arc`),
    at heights within the inputs' range, looking at the focus."""
    focus = np.zeros(3) if focus is None else np.asarray(focus, np.float64)
    orbit = fit_orbit(c2w, focus)
    start, length = orbit_arc(c2w, orbit, focus)
    out = np.empty((num, 4, 4))
    for i in range(num):
        angle = start + rng.uniform(0.0, length)
        height = rng.uniform(orbit["height_min"], orbit["height_max"])
        position = (
            focus
            + height * orbit["up"]
            + orbit["radius_a"] * np.cos(angle) * orbit["axis_a"]
            + orbit["radius_b"] * np.sin(angle) * orbit["axis_b"]
        )
        out[i] = look_at(position, focus, orbit["up"])
    return out


def sample_novel_cameras(
    c2w: np.ndarray,
    num: int,
    rng: np.random.Generator,
    layout: Layout | Literal["auto"] = "auto",
    position_jitter: float = 0.2,
    rotation_jitter_degrees: float = 3.0,
) -> np.ndarray:
    """(num, 4, 4) novel cameras near normalised input cameras (layout detected when ``"auto"``)."""
    layout = detect_layout(c2w) if layout == "auto" else layout
    if layout == "object-360":
        return sample_orbit(c2w, num, rng)
    return sample_forward_facing(c2w, num, rng, position_jitter, rotation_jitter_degrees)


def nearest_views(novel_c2w: np.ndarray, observed_c2w: np.ndarray, count: int) -> np.ndarray:
    """(K, min(count, N)) indices of the observed views closest to each novel camera, nearest first.

    Distance: centre distance plus (1 - cosine) of the angle between viewing directions, so that a
    view from the same place looking elsewhere ranks behind one looking the same way.
    """
    novel_c2w, observed_c2w = np.asarray(novel_c2w), np.asarray(observed_c2w)
    centre_dist = np.linalg.norm(novel_c2w[:, None, :3, 3] - observed_c2w[None, :, :3, 3], axis=-1)
    angle_term = 1.0 - forward_axes(novel_c2w) @ forward_axes(observed_c2w).T
    order = np.argsort(centre_dist + angle_term, axis=1, kind="stable")
    return order[:, : min(count, len(observed_c2w))]
