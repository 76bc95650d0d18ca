"""reconfusion.scene_fit: the scene kind and the settings of a fair fit, chosen from cameras, alpha and bounds."""

import numpy as np
import pytest

from reconfusion.novel_views import look_at
from reconfusion.scene_fit import box_near_far, hull_box, project_points, scene_fit

SIZE = 48
FOCAL = 60.0
INTRINSICS = np.array([FOCAL, FOCAL, SIZE / 2, SIZE / 2])


def orbit(count: int, radius: float = 1.0, elevation: float = 0.3) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, count, endpoint=False)
    up = np.array([0.0, 1.0, 0.0])
    positions = [radius * np.array([np.cos(a), elevation, np.sin(a)]) for a in angles]
    return np.stack([look_at(p, np.zeros(3), up) for p in positions])


def forward_rig(count: int) -> np.ndarray:
    offsets = np.linspace(-0.5, 0.5, count)
    return np.stack([look_at(np.array([x, 0.1 * x, 1.0]), np.array([x, 0.0, -5.0]), np.array([0.0, 1.0, 0.0]))
                     for x in offsets])  # fmt: skip


def sphere_alpha(c2w: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """(H, W) alpha of a sphere seen by an OpenGL camera (pixel centres at +0.5)."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    directions = np.stack([(cols - SIZE / 2) / FOCAL, -(rows - SIZE / 2) / FOCAL, -np.ones_like(rows)], -1)
    world = directions @ c2w[:3, :3].T
    world /= np.linalg.norm(world, axis=-1, keepdims=True)
    to_centre = centre - c2w[:3, 3]
    along = world @ to_centre
    closest = np.linalg.norm(to_centre) ** 2 - along**2
    return ((closest <= radius**2) & (along > 0)).astype(np.float32)


def test_projection_matches_the_pinhole_model():
    c2w = look_at(np.array([0.0, 0.0, 2.0]), np.zeros(3), np.array([0.0, 1.0, 0.0]))
    pixels, depth = project_points(np.array([[0.0, 0.0, 0.0], [0.2, 0.1, 0.0], [0.0, 0.0, 3.0]]), c2w, INTRINSICS)
    np.testing.assert_allclose(pixels[0], [SIZE / 2, SIZE / 2])
    np.testing.assert_allclose(pixels[1], [SIZE / 2 + FOCAL * 0.1, SIZE / 2 - FOCAL * 0.05])  # y up -> rows up
    np.testing.assert_allclose(depth[:2], [2.0, 2.0])
    assert depth[2] < 0  # behind the camera


@pytest.mark.parametrize("views", [3, 9])
def test_object_box_holds_the_object_and_little_else(views):
    centre, radius = np.array([0.1, -0.05, 0.0]), 0.25
    c2w = orbit(views, radius=1.5)
    alphas = [sphere_alpha(pose, centre, radius) for pose in c2w]
    lo, hi = hull_box(c2w, np.tile(INTRINSICS, (views, 1)), alphas)
    assert np.all(lo <= centre - radius) and np.all(hi >= centre + radius)  # the whole object inside
    size = (hi - lo).max()
    assert size < (5.0 if views == 3 else 2.0) * 2 * radius  # three views carve a looser hull than nine
    fit = scene_fit(c2w, np.tile(INTRINSICS, (views, 1)), alphas)
    assert fit.kind == "object" and not fit.contraction and fit.initial_sampler == "uniform"
    assert fit.background == "random" and fit.display_background == (1.0, 1.0, 1.0)
    distances = np.linalg.norm(c2w[:, :3, 3] - centre, axis=-1)
    assert fit.near < distances.min() - radius and fit.far > distances.max() + radius  # the object is in range
    assert fit.near > 0.5 * (distances.min() - radius)  # and the range is not nerfacto's 0.05 .. 1000


def test_empty_masks_fall_back_to_the_whole_box_and_full_masks_to_the_frustums():
    c2w, intrinsics = orbit(4), np.tile(INTRINSICS, (4, 1))
    fit = scene_fit(c2w, intrinsics, [np.zeros((SIZE, SIZE), np.float32)] * 4, box_half_side=1.0)
    assert fit.kind == "object" and "carve no bounded hull" in fit.reason
    assert fit.aabb == ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))
    lo, hi = hull_box(c2w, intrinsics, [np.ones((SIZE, SIZE), np.float32)] * 4)  # what all four cameras see
    assert np.all(lo < 0) and np.all(hi > 0) and np.all(hi - lo < 2.0)


def test_forward_facing_capture_uses_its_depth_bounds_and_contraction():
    c2w = forward_rig(6)
    bounds = np.tile([[2.0, 9.0]], (6, 1))
    fit = scene_fit(c2w, np.tile(INTRINSICS, (6, 1)), None, bounds)
    assert fit.kind == "forward-facing" and fit.contraction and fit.initial_sampler == "piecewise"
    assert fit.near == pytest.approx(1.8) and fit.far == pytest.approx(13.5)
    assert fit.background == "last_sample"
    no_bounds = scene_fit(c2w, np.tile(INTRINSICS, (6, 1)), None)
    assert (no_bounds.near, no_bounds.far) == (0.05, 1000.0)  # nerfacto's defaults when nothing is known


def test_orbit_without_alpha_is_unbounded_and_declared_backgrounds_are_used():
    c2w = orbit(8)
    fit = scene_fit(c2w, np.tile(INTRINSICS, (8, 1)), None, declared_background=(1.0, 1.0, 1.0))
    assert fit.kind == "unbounded-360" and fit.contraction and fit.background == "white"


@pytest.mark.parametrize("views, embedding", [(3, False), (9, False), (12, True)])
def test_appearance_embeddings_only_with_many_views(views, embedding):
    fit = scene_fit(forward_rig(views), np.tile(INTRINSICS, (views, 1)), None)
    assert fit.appearance_embedding is embedding


def test_near_far_bracket_the_box_from_every_camera():
    c2w = orbit(5, radius=2.0)
    near, far = box_near_far(c2w, (np.full(3, -0.5), np.full(3, 0.5)))
    half_diagonal = np.sqrt(3) * 0.5
    assert near <= 2.0 - half_diagonal and far >= 2.0 + half_diagonal
