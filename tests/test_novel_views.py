"""reconfusion.novel_views: layout detection, camera sampling within bounds, conditioning choice."""

import numpy as np
import pytest

from reconfusion import novel_views as nv
from reconfusion.cameras import check_poses, normalize_cameras


def orbit_cameras(count: int = 3, radius: float = 1.0, spread_degrees: float = 360.0, seed: int = 0) -> np.ndarray:
    """Cameras on a tilted ring (z up) looking at the origin, normalised."""
    rng = np.random.default_rng(seed)
    angles = np.radians(np.linspace(0, spread_degrees, count, endpoint=spread_degrees < 360))
    heights = rng.uniform(0.2, 0.5, count)
    return np.stack(
        [nv.look_at(np.array([radius * np.cos(a), radius * np.sin(a), h]), np.zeros(3), np.array([0.0, 0.0, 1.0]))
         for a, h in zip(angles, heights)]
    )  # fmt: skip


def forward_cameras(count: int = 3, seed: int = 0) -> np.ndarray:
    """LLFF-like: centres on a small plane, all looking roughly along -z at a point 4 units ahead."""
    rng = np.random.default_rng(seed)
    centres = np.c_[rng.uniform(-0.3, 0.3, (count, 2)), np.zeros(count)]
    c2w = np.stack([nv.look_at(c, np.array([0.0, 0.0, -4.0]), np.array([0.0, 1.0, 0.0])) for c in centres])
    return normalize_cameras(c2w)[0]


def test_detect_layout():
    assert nv.detect_layout(orbit_cameras(3)) == "object-360"
    assert nv.detect_layout(orbit_cameras(8)) == "object-360"
    assert nv.detect_layout(forward_cameras(3)) == "forward-facing"
    assert nv.detect_layout(orbit_cameras(3, spread_degrees=30.0)) == "forward-facing"
    # seen from high above, the viewing directions all point down, but the capture still surrounds the object
    high = [nv.look_at(np.array([0.4 * np.cos(a), 0.4 * np.sin(a), 1.0]), np.zeros(3), np.array([0.0, 0.0, 1.0]))
            for a in np.radians([0.0, 110.0, 230.0])]  # fmt: skip
    assert nv.detect_layout(np.stack(high)) == "object-360"


def test_look_at_points_the_camera_at_the_target():
    position, target = np.array([1.0, 2.0, 3.0]), np.array([0.5, -1.0, 0.0])
    c2w = nv.look_at(position, target, np.array([0.0, 0.0, 1.0]))
    check_poses(c2w[None], "look_at")
    direction = (target - position) / np.linalg.norm(target - position)
    assert np.allclose(nv.forward_axes(c2w[None])[0], direction)
    assert c2w[2, 1] > 0  # camera up has a positive world-z component


def test_forward_facing_samples_stay_near_the_inputs():
    inputs = forward_cameras(4, seed=1)
    jitter, max_turn = 0.2, 3.0
    novel = nv.sample_forward_facing(inputs, 200, np.random.default_rng(0), jitter, max_turn)
    check_poses(novel, "samples")
    centres, low, high = novel[:, :3, 3], inputs[:, :3, 3].min(0), inputs[:, :3, 3].max(0)
    outside = np.linalg.norm(np.maximum(low - centres, 0) + np.maximum(centres - high, 0), axis=-1)
    assert outside.max() <= 2 * np.sqrt(3) * jitter * nv.camera_spread(inputs) + 1e-9
    # viewing directions stay within the inputs' cone plus the rotation jitter
    mean = nv.forward_axes(inputs).mean(0)
    mean /= np.linalg.norm(mean)
    input_angle = np.degrees(np.arccos(np.clip(nv.forward_axes(inputs) @ mean, -1, 1))).max()
    novel_angle = np.degrees(np.arccos(np.clip(nv.forward_axes(novel) @ mean, -1, 1))).max()
    assert novel_angle <= input_angle + max_turn + 1e-6
    assert novel.std(0)[:3, 3].min() > 0  # they do move
    rig_centre = inputs[:, :3, 3].mean(0)
    reach = np.linalg.norm(centres - rig_centre, axis=-1)
    assert np.percentile(reach, 75) >= 0.8 * np.linalg.norm(inputs[:, :3, 3] - rig_centre, axis=-1).mean()  # to the edges


def test_orbit_samples_stay_on_the_fitted_ellipse():
    inputs = orbit_cameras(3, radius=0.9)
    novel = nv.sample_orbit(inputs, 200, np.random.default_rng(0))
    check_poses(novel, "samples")
    orbit = nv.fit_orbit(inputs)
    assert orbit["up"][2] > np.cos(np.radians(15))  # the ring's plane, tilted by the cameras' heights
    heights = novel[:, :3, 3] @ orbit["up"]
    assert heights.min() >= orbit["height_min"] - 1e-9 and heights.max() <= orbit["height_max"] + 1e-9
    input_heights = inputs[:, :3, 3] @ orbit["up"]
    input_radii = np.linalg.norm(inputs[:, :3, 3] - input_heights[:, None] * orbit["up"], axis=-1)
    novel_radii = np.linalg.norm(novel[:, :3, 3] - heights[:, None] * orbit["up"], axis=-1)
    assert novel_radii.min() >= input_radii.min() - 1e-6 and novel_radii.max() <= input_radii.max() + 1e-6
    # every sample looks at the focus (the origin)
    to_focus = -novel[:, :3, 3] / np.linalg.norm(novel[:, :3, 3], axis=-1, keepdims=True)
    assert np.allclose((nv.forward_axes(novel) * to_focus).sum(-1), 1.0, atol=1e-6)
    # and they go all around
    azimuths = np.arctan2(novel[:, 1, 3], novel[:, 0, 3])
    assert np.ptp(azimuths) > np.radians(300)


def test_orbit_samples_keep_to_the_arc_a_partial_walk_around_spans():
    angles = np.radians([80.0, 95.0, 110.0])  # a 30-degree arc, like DTU's cameras
    up = np.array([0.0, 0.0, 1.0])
    inputs = np.stack([nv.look_at(np.array([np.cos(a), np.sin(a), 0.3]) * 2.0, np.zeros(3), up) for a in angles])
    novel = nv.sample_orbit(inputs, 300, np.random.default_rng(0))
    azimuths = np.degrees(np.arctan2(novel[:, 1, 3], novel[:, 0, 3]))
    assert azimuths.min() >= 80.0 - 10.0 - 1.0 and azimuths.max() <= 110.0 + 10.0 + 1.0  # a 10-degree margin
    assert azimuths.min() < 75.0 and azimuths.max() > 115.0  # and a little beyond the inputs


def test_sampling_is_deterministic_per_seed():
    inputs = forward_cameras(3)
    first = nv.sample_novel_cameras(inputs, 5, np.random.default_rng(7))
    again = nv.sample_novel_cameras(inputs, 5, np.random.default_rng(7))
    other = nv.sample_novel_cameras(inputs, 5, np.random.default_rng(8))
    assert np.array_equal(first, again)
    assert not np.allclose(first, other)


@pytest.mark.parametrize("make", [orbit_cameras, forward_cameras])
def test_nearest_views_puts_the_coinciding_input_first(make):
    inputs = make(5) if make is forward_cameras else make(5, spread_degrees=300.0)
    order = nv.nearest_views(inputs, inputs, 3)
    assert order.shape == (5, 3)
    assert np.array_equal(order[:, 0], np.arange(5))
    assert all(len(set(row)) == 3 for row in order)
    assert nv.nearest_views(inputs[:1], inputs[:2], 3).shape == (1, 2)  # clipped to the views there are


def test_nearest_views_prefers_the_same_viewing_direction():
    here = nv.look_at(np.array([0.0, 0.0, 1.0]), np.zeros(3), np.array([0.0, 1.0, 0.0]))
    turned = nv.look_at(np.array([0.0, 0.0, 1.0]), np.array([0.0, 0.0, 2.0]), np.array([0.0, 1.0, 0.0]))
    nearby_same = here.copy()
    nearby_same[0, 3] = 0.3
    order = nv.nearest_views(here[None], np.stack([turned, nearby_same]), 2)
    assert order[0, 0] == 1


def test_detect_layout_on_the_benchmark_captures(shared_data):
    import json

    from reconfusion.cameras import llff_to_opengl

    fern = shared_data / "nerf_llff_data" / "fern" / "poses_bounds.npy"
    lego = shared_data / "nerf_synthetic" / "lego" / "transforms_train.json"
    if not fern.is_file() or not lego.is_file():
        pytest.skip("fern or lego missing from the shared data")
    llff = llff_to_opengl(np.load(fern)[:, :15].reshape(-1, 3, 5)[:, :, :4])
    blender = np.array([f["transform_matrix"] for f in json.loads(lego.read_text())["frames"]])
    assert nv.detect_layout(llff) == nv.detect_layout(llff[[0, 9, 18]]) == "forward-facing"
    assert nv.detect_layout(blender) == nv.detect_layout(blender[[0, 30, 60]]) == "object-360"
