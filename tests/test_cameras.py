"""The camera convention module against known points: LLFF <-> OpenCV/COLMAP <-> OpenGL, projection,
pixel rays, similarity alignment and camera normalisation."""

import numpy as np
import pytest
import torch

from reconfusion.cameras import (
    check_poses,
    colmap_to_opengl,
    focal_from_fov,
    focus_point,
    llff_to_opengl,
    normalize_cameras,
    opencv_to_opengl,
    opengl_to_llff,
    opengl_to_opencv,
    pixel_rays,
    project,
    scale_intrinsics,
    similarity_alignment,
)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _random_poses(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c2w = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        c2w[i, :3, :3] = _random_rotation(rng)
        c2w[i, :3, 3] = rng.normal(size=3) * 3
    return c2w


def _look_at(centre, target, up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """OpenGL c2w at ``centre`` looking at ``target`` (camera -z towards the target)."""
    back = np.asarray(centre, float) - np.asarray(target, float)
    back /= np.linalg.norm(back)
    right = np.cross(up, back)
    right /= np.linalg.norm(right)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([right, np.cross(back, right), back], axis=1)
    c2w[:3, 3] = centre
    return c2w


# An OpenGL camera at (0, 0, 5) looking down -z (towards the origin), y up.
GL_CAMERA = np.array([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 5], [0, 0, 0, 1]])
INTRINSICS = np.array([100.0, 120.0, 32.0, 24.0])


def test_llff_columns_down_right_back_map_to_opengl():
    # The same camera in LLFF: columns (down, right, back) = (-y, +x, +z) in world axes.
    llff = np.array([[0.0, 1, 0, 0], [-1, 0, 0, 0], [0, 0, 1, 5]])
    np.testing.assert_array_equal(llff_to_opengl(llff), GL_CAMERA)
    np.testing.assert_array_equal(opengl_to_llff(GL_CAMERA), llff)


def test_opencv_flips_y_and_z():
    cv = opengl_to_opencv(GL_CAMERA)
    np.testing.assert_array_equal(cv[:3, :3], np.diag([1.0, -1.0, -1.0]))  # y down, z forward (-z world)
    np.testing.assert_array_equal(cv[:3, 3], [0, 0, 5])
    np.testing.assert_array_equal(opencv_to_opengl(cv), GL_CAMERA)


def test_round_trips_on_random_poses():
    c2w = _random_poses(16)
    np.testing.assert_allclose(llff_to_opengl(opengl_to_llff(c2w)), c2w, atol=1e-15)
    np.testing.assert_allclose(opencv_to_opengl(opengl_to_opencv(c2w)), c2w, atol=1e-15)
    for pose in c2w:
        w2c = np.linalg.inv(opengl_to_opencv(pose))
        np.testing.assert_allclose(colmap_to_opengl(w2c[:3, :3], w2c[:3, 3]), pose, atol=1e-12)


def test_project_known_point_to_known_pixel():
    points = torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 10.0]], dtype=torch.float64)
    uv, depth = project(points, torch.from_numpy(GL_CAMERA), torch.from_numpy(INTRINSICS))
    # x = 1 at depth 5: u = 100 * 1/5 + 32; y = 0.5 is up, so above the centre: v = 24 - 120 * 0.5/5.
    np.testing.assert_allclose(uv[0].numpy(), [52.0, 12.0])
    np.testing.assert_allclose(uv[1].numpy(), [32.0, 24.0])
    np.testing.assert_allclose(depth.numpy(), [5.0, 5.0, -5.0])  # the last point is behind the camera


def _opencv_pixel(point, c2w_opencv, intrinsics):
    """The textbook OpenCV pinhole: x_cam = R^T (X - C), (u, v) = (fx x/z + cx, fy y/z + cy)."""
    cam = c2w_opencv[:3, :3].T @ (np.asarray(point) - c2w_opencv[:3, 3])
    fx, fy, cx, cy = intrinsics
    return np.array([fx * cam[0] / cam[2] + cx, fy * cam[1] / cam[2] + cy])


def test_project_agrees_with_opencv_and_colmap_and_llff_sources():
    rng = np.random.default_rng(1)
    point = np.array([0.3, -0.2, 0.1])
    for _ in range(5):
        gl = _look_at(rng.normal(size=3) * 4, point + rng.normal(size=3) * 0.1)
        cv = opengl_to_opencv(gl)
        expected = _opencv_pixel(point, cv, INTRINSICS)
        w2c = np.linalg.inv(cv)
        for c2w in (gl, llff_to_opengl(opengl_to_llff(gl)), colmap_to_opengl(w2c[:3, :3], w2c[:3, 3])):
            uv, _ = project(torch.from_numpy(point)[None], torch.from_numpy(c2w), torch.from_numpy(INTRINSICS))
            np.testing.assert_allclose(uv[0].numpy(), expected, atol=1e-9)


def test_pixel_rays_pass_through_pixel_centres():
    height, width = 6, 8
    c2w = torch.from_numpy(_look_at([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]))
    intrinsics = torch.tensor([10.0, 11.0, 4.0, 3.0], dtype=torch.float64)
    origins, dirs = pixel_rays(c2w, intrinsics, height, width)
    assert origins.shape == dirs.shape == (height, width, 3)
    np.testing.assert_allclose(dirs.norm(dim=-1).numpy(), 1.0, atol=1e-12)
    uv, depth = project((origins + 2.5 * dirs).reshape(-1, 3), c2w, intrinsics)
    rows, cols = np.mgrid[0:height, 0:width]
    np.testing.assert_allclose(uv[:, 0].numpy(), cols.ravel() + 0.5, atol=1e-9)
    np.testing.assert_allclose(uv[:, 1].numpy(), rows.ravel() + 0.5, atol=1e-9)
    assert bool((depth > 0).all())
    # The top-left pixel's ray leans left (-x) and up (+y) in the camera frame.
    cam_dir = c2w[:3, :3].T @ dirs[0, 0]
    assert cam_dir[0] < 0 and cam_dir[1] > 0 and cam_dir[2] < 0


def test_scale_intrinsics_keeps_the_pixel_centre_convention():
    points = torch.tensor([[0.4, -0.3, 0.0]], dtype=torch.float64)
    c2w, intrinsics = torch.from_numpy(GL_CAMERA), torch.from_numpy(INTRINSICS)
    uv, _ = project(points, c2w, intrinsics)
    uv_half, _ = project(points, c2w, scale_intrinsics(intrinsics, 0.5, 0.25))
    np.testing.assert_allclose(uv_half[0].numpy(), uv[0].numpy() * [0.5, 0.25], atol=1e-12)


def test_focal_from_fov():
    assert focal_from_fov(np.pi / 2, 200.0) == pytest.approx(100.0)


def test_similarity_alignment_recovers_a_known_similarity():
    rng = np.random.default_rng(2)
    source = rng.normal(size=(20, 3))
    scale, rotation, translation = 2.5, _random_rotation(rng), np.array([1.0, -2.0, 0.5])
    target = scale * source @ rotation.T + translation
    s, r, t = similarity_alignment(source, target)
    assert s == pytest.approx(scale, rel=1e-12)
    np.testing.assert_allclose(r, rotation, atol=1e-12)
    np.testing.assert_allclose(t, translation, atol=1e-12)


def test_normalize_cameras_centres_the_focus_and_fits_the_unit_cube():
    focus = np.array([1.0, 2.0, 3.0])
    rng = np.random.default_rng(3)
    directions = rng.normal(size=(12, 3))
    directions[:, 1] = np.abs(directions[:, 1])  # an upper hemisphere of cameras
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    c2w = np.stack([_look_at(focus + 4.0 * d, focus, up=(0.3, 1.0, 0.1)) for d in directions])
    np.testing.assert_allclose(focus_point(c2w), focus, atol=1e-9)
    normalised, scale, found = normalize_cameras(c2w)
    np.testing.assert_allclose(found, focus, atol=1e-9)
    centres = normalised[:, :3, 3]
    assert np.abs(centres).max() == pytest.approx(1.0)
    np.testing.assert_allclose(centres, scale * (c2w[:, :3, 3] - focus), atol=1e-12)
    np.testing.assert_array_equal(normalised[:, :3, :3], c2w[:, :3, :3])


def test_check_poses_rejects_non_finite_and_mirrored():
    c2w = _random_poses(3)
    bad = c2w.copy()
    bad[1, 0, 3] = np.nan
    with pytest.raises(ValueError, match=r"poses.json: non-finite camera poses at frames \[1\]"):
        check_poses(bad, "poses.json")
    mirrored = c2w.copy()
    mirrored[2, :3, 0] *= -1
    with pytest.raises(ValueError, match=r"degenerate camera poses at frames \[2\]"):
        check_poses(mirrored, "poses.json")
