"""PixelNeRF: projection into the observed views, visibility, rendering, save/load, overfitting.

Expected pixels are computed here with plain pinhole math on look-at camera bases (OpenCV-style
x right / y down / z forward), independently of reconfusion.cameras.project.
"""

from __future__ import annotations

import math

import pytest
import torch

import reconfusion.pixelnerf as pixelnerf_module
from reconfusion.pixelnerf import PixelNeRF, PixelNeRFOutput
from reconfusion.rendering import gather_features, masked_mean, volume_render

TINY = dict(feature_channels=4, encoder_channels=(8, 8), num_samples=8, hidden=16, num_frequencies=2,
            num_direction_frequencies=1)  # fmt: skip


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0)):
    """(OpenGL c2w (4, 4), right, down, forward) of a camera at ``eye`` looking at ``target``."""
    eye, target, up = (torch.tensor(x, dtype=torch.float64) for x in (eye, target, up))
    forward = (target - eye) / (target - eye).norm()
    right = torch.linalg.cross(forward, up)
    right = right / right.norm()
    true_up = torch.linalg.cross(right, forward)
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, true_up, -forward, eye
    return c2w, right, -true_up, forward


def pinhole_pixel(point, eye, right, down, forward, intrinsics):
    """(u, v, depth) of a world point with x right, y down, z forward."""
    rel = torch.as_tensor(point, dtype=torch.float64) - torch.as_tensor(eye, dtype=torch.float64)
    x, y, z = rel @ right, rel @ down, rel @ forward
    fx, fy, cx, cy = intrinsics
    return fx * x / z + cx, fy * y / z + cy, z


def basis(c2w: torch.Tensor):
    """(eye, right, down, forward) of an OpenGL c2w, in float64."""
    c2w = c2w.double()
    return c2w[:3, 3], c2w[:3, 0], -c2w[:3, 1], -c2w[:3, 2]


def back_project(u, v, depth, eye, right, down, forward, intrinsics):
    """World point at ``depth`` along the optical axis through pixel (u, v)."""
    fx, fy, cx, cy = intrinsics
    offset = forward + (u - cx) / fx * right + (v - cy) / fy * down
    return torch.as_tensor(eye, dtype=torch.float64) + depth * offset


EYES = [(0.3, 0.2, 1.6), (-1.2, 0.4, 1.0), (1.0, -0.5, -1.3)]
IMAGE_HW = (32, 40)
INTRINSICS = (36.0, 34.0, 19.0, 16.5)  # off-centre principal point, non-square pixels


def views(eyes=EYES):
    """Stacked OpenGL c2w (1, V, 4, 4), intrinsics (1, V, 4), plus the bases for the pinhole math."""
    cams = [look_at(e) for e in eyes]
    c2w = torch.stack([c[0] for c in cams])[None].float()
    intrinsics = torch.tensor([INTRINSICS] * len(eyes))[None]
    return c2w, intrinsics, cams


def pixel_coordinate_maps(views_count: int, h: int, w: int, extra_channels: int = 0) -> torch.Tensor:
    """Feature maps (1, V, 2 + extra, h, w) whose value at each pixel is the image-pixel coordinate
    (u, v) of its centre; bilinear sampling of this linear function returns (u, v) exactly."""
    height, width = IMAGE_HW
    u = ((torch.arange(w) + 0.5) * width / w)[None].expand(h, w)
    v = ((torch.arange(h) + 0.5) * height / h)[:, None].expand(h, w)
    maps = torch.cat([torch.stack([u, v]), torch.zeros(extra_channels, h, w)])
    return maps[None, None].expand(1, views_count, -1, -1, -1).contiguous()


@pytest.mark.parametrize("map_hw", [(32, 40), (8, 10)])
def test_gathered_features_come_from_the_projected_pixel_in_every_view(map_hw):
    c2w, intrinsics, cams = views()
    maps = pixel_coordinate_maps(len(EYES), *map_hw)
    points = torch.rand(200, 3, dtype=torch.float64) * 0.8 - 0.4
    features, visible = gather_features(maps, points[None].float(), c2w, intrinsics, IMAGE_HW)
    cell_u, cell_v = IMAGE_HW[1] / map_hw[1], IMAGE_HW[0] / map_hw[0]
    checked = 0
    for view, (_, right, down, forward) in enumerate(cams):
        u, v, z = pinhole_pixel(points, EYES[view], right, down, forward, INTRINSICS)
        assert torch.equal(visible[0, view], (z > 0) & (u >= 0) & (u <= 40) & (v >= 0) & (v <= 32))
        # Inside the hull of the feature-pixel centres bilinear interpolation of (u, v) is exact.
        inner = (u > cell_u / 2) & (u < 40 - cell_u / 2) & (v > cell_v / 2) & (v < 32 - cell_v / 2) & (z > 0)
        expected = torch.stack([u, v], -1)[inner].float()
        torch.testing.assert_close(features[0, view][inner], expected, atol=2e-3, rtol=0)
        checked += int(inner.sum())
    assert checked > 300


def test_point_at_a_pixel_centre_gathers_exactly_that_pixel():
    c2w, intrinsics, cams = views()
    h, w = 16, 20
    maps = torch.rand(1, len(EYES), 5, h, w)
    for view, (_, right, down, forward) in enumerate(cams):
        for row, col in [(0, 0), (3, 17), (15, 19), (9, 4)]:
            u, v = (col + 0.5) * IMAGE_HW[1] / w, (row + 0.5) * IMAGE_HW[0] / h
            point = back_project(u, v, 1.3, EYES[view], right, down, forward, INTRINSICS)
            features, visible = gather_features(maps, point[None, None].float(), c2w, intrinsics, IMAGE_HW)
            assert visible[0, view, 0]
            torch.testing.assert_close(features[0, view, 0], maps[0, view, :, row, col], atol=1e-4, rtol=0)


def test_points_behind_or_outside_a_view_are_masked():
    c2w, intrinsics, cams = views()
    _, right, down, forward = cams[0]
    eye = torch.tensor(EYES[0], dtype=torch.float64)
    points = torch.stack([
        eye + 0.8 * forward,                  # in front, on the optical axis: visible
        eye - 0.8 * forward,                  # behind the camera
        eye + 0.8 * forward + 5.0 * right,    # far outside the image, to the right
        eye + 0.8 * forward - 5.0 * down,     # far above the image
    ])  # fmt: skip
    maps = torch.rand(1, len(EYES), 3, 8, 10)
    features, visible = gather_features(maps, points[None].float(), c2w, intrinsics, IMAGE_HW)
    assert visible[0, 0].tolist() == [True, False, False, False]
    assert torch.isfinite(features).all()
    pooled = masked_mean(torch.ones(1, len(EYES), 4, 2), torch.zeros(1, len(EYES), 4, dtype=torch.bool))
    assert torch.equal(pooled, torch.zeros(1, 4, 2))  # no view sees the point: zeros, not NaN
    some = torch.tensor([[[True], [False], [True]]])
    values = torch.tensor([1.0, 100.0, 3.0]).reshape(1, 3, 1, 1)
    assert masked_mean(values, some).item() == pytest.approx(2.0)


def test_volume_render_of_an_opaque_sample_returns_its_value_and_depth():
    depths = torch.tensor([[[0.5, 1.0, 1.5, 2.0]]])
    density = torch.tensor([[[0.0, 1e4, 0.0, 0.0]]])
    values = torch.arange(8.0).reshape(1, 1, 4, 2)
    out = volume_render(density, values, depths, torch.tensor([0.5]), torch.tensor([2.25]))
    torch.testing.assert_close(out.values, values[:, :, 1])
    assert out.depth.item() == pytest.approx(1.0) and out.opacity.item() == pytest.approx(1.0)
    empty = volume_render(torch.zeros(1, 1, 4), values, depths, torch.tensor([0.5]), torch.tensor([2.25]))
    assert empty.opacity.item() == 0.0 and empty.depth.item() == pytest.approx(2.25)


def scene_batch(batch: int = 2, size: int = 32):
    """Observed images (B, 2, 3, size, size) with cameras; targets at the third eye, 16x16 output."""
    c2w, _, _ = views()
    c2w = c2w.expand(batch, -1, -1, -1).clone()
    c2w[1:, :, :3, 3] *= 1.1  # batch elements differ
    scale = size / 40
    intr = torch.tensor([36.0 * scale, 36.0 * scale, size / 2, size / 2]).expand(batch, 3, 4).clone()
    images = torch.rand(batch, 2, 3, size, size)
    target_intr = intr[:, 2] * 16 / size
    return images, c2w[:, :2], intr[:, :2], c2w[:, 2], target_intr


def test_forward_samples_the_target_rays_and_gathers_from_the_right_pixels(monkeypatch):
    model = PixelNeRF(**TINY).eval()
    images, c2w, intr, target_c2w, target_intr = scene_batch(batch=2, size=32)
    maps = pixel_coordinate_maps(2, 16, 16, extra_channels=model.encoder.out_channels - 2)
    maps[:, :, 0] *= 32 / 40  # pixel_coordinate_maps assumes a 40-pixel-wide image
    calls = []

    def spy(feature_maps, points, *args):
        result = gather_features(feature_maps, points, *args)
        calls.append((points, *result))
        return result

    monkeypatch.setattr(model, "encode", lambda imgs: maps.expand(imgs.shape[0], -1, -1, -1, -1))
    monkeypatch.setattr(pixelnerf_module, "gather_features", spy)
    with torch.no_grad():
        model(images, c2w, intr, target_c2w, target_intr, height=16, width=16, near=0.5, far=2.5)
    points, features, visible = calls[0]
    samples, checked = model.config.num_samples, 0
    for b in range(2):
        eye, right, down, forward = basis(target_c2w[b])
        for row, col, k in [(7, 8, 3), (2, 13, 0), (12, 4, 7)]:
            ray = back_project(col + 0.5, row + 0.5, 1.0, eye, right, down, forward, target_intr[b].double()) - eye
            expected_point = eye + (0.5 + (k + 0.5) * 2.0 / samples) * ray / ray.norm()
            index = (row * 16 + col) * samples + k
            torch.testing.assert_close(points[b, index].double(), expected_point, atol=1e-5, rtol=0)
            for view in range(2):
                u, v, z = pinhole_pixel(expected_point, *basis(c2w[b, view]), intr[b, view].double())
                assert visible[b, view, index] == bool((z > 0) and 0 <= u <= 32 and 0 <= v <= 32)
                if visible[b, view, index] and 1 < u < 31 and 1 < v < 31:
                    gathered = features[b, view, index, :2].double()
                    torch.testing.assert_close(gathered, torch.stack([u, v]), atol=2e-3, rtol=0)
                    checked += 1
    assert checked >= 8


def test_output_shapes_ranges_and_chunking_invariance():
    model = PixelNeRF(**TINY).eval()
    images, c2w, intr, target_c2w, target_intr = scene_batch(batch=2, size=32)
    args = (images, c2w, intr, target_c2w, target_intr)
    with torch.no_grad():
        out = model(*args, height=16, width=12, near=0.5, far=torch.tensor([2.5, 3.0]))
        small = model(*args, height=16, width=12, near=0.5, far=torch.tensor([2.5, 3.0]), chunk=7)
        maps = model.encode(torch.rand(2, 2, 3, 33, 20))
    assert maps.shape == (2, 2, model.encoder.out_channels, 17, 10)
    assert isinstance(out, PixelNeRFOutput)
    assert out.features.shape == (2, TINY["feature_channels"], 16, 12) and out.rgb.shape == (2, 3, 16, 12)
    assert out.depth.shape == (2, 16, 12) and out.opacity.shape == (2, 16, 12)
    for name in ("features", "rgb", "depth", "opacity"):
        assert torch.isfinite(getattr(out, name)).all()
        torch.testing.assert_close(getattr(small, name), getattr(out, name), atol=1e-6, rtol=1e-5)
    assert 0.0 <= out.rgb.min() and out.rgb.max() <= 1.0 and out.opacity.max() <= 1.0
    assert (out.depth >= 0.5).all() and (out.depth[1] <= 3.0 + 1e-5).all()


def test_stratified_sampling_is_seeded_and_differs_from_midpoints():
    model = PixelNeRF(**TINY).train()
    args = scene_batch(batch=1, size=32)
    with torch.no_grad():
        a = model(*args, height=8, width=8, generator=torch.Generator().manual_seed(3))
        b = model(*args, height=8, width=8, generator=torch.Generator().manual_seed(3), chunk=5)
        mid = model(*args, height=8, width=8, stratified=False)
    torch.testing.assert_close(a.rgb, b.rgb, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(a.rgb, mid.rgb)


def test_gradient_checkpointing_gives_the_same_gradients():
    args = scene_batch(batch=1, size=32)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = PixelNeRF(**TINY).eval()
        if checkpointing:
            model.enable_gradient_checkpointing()
        out = model(*args, height=6, width=6, chunk=10)
        (out.rgb.square().mean() + out.features.mean()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0])


def test_bad_inputs_say_what_differs():
    model = PixelNeRF(**TINY)
    images, c2w, intr, target_c2w, target_intr = scene_batch(batch=2, size=32)
    with pytest.raises(ValueError, match="disagree"):
        model(images, c2w[:, :1], intr[:, :1], target_c2w, target_intr, 4, 4)
    with pytest.raises(ValueError, match=r"\(B, V, 3, H, W\)"):
        model(images[:, :, :1], c2w, intr, target_c2w, target_intr, 4, 4)
    bad = c2w.clone()
    bad[0, 1, 0, 3] = float("nan")
    with pytest.raises(ValueError, match="observed_c2w contains non-finite"):
        model(images, bad, intr, target_c2w, target_intr, 4, 4)
    with pytest.raises(ValueError, match="target_intrinsics must have shape"):
        model(images, c2w, intr, target_c2w, target_intr[:1], 4, 4)
    with pytest.raises(ValueError, match="far must exceed near"):
        model(images, c2w, intr, target_c2w, target_intr, 4, 4, near=2.0, far=1.0)
    with pytest.raises(ValueError, match="near must be a float"):
        model(images, c2w, intr, target_c2w, target_intr, 4, 4, near=torch.ones(3))


def test_save_and_load_round_trip_bit_for_bit(tmp_path):
    model = PixelNeRF(**TINY).eval()
    model.save_pretrained(tmp_path / "pixelnerf")
    loaded = PixelNeRF.from_pretrained(tmp_path / "pixelnerf").eval()
    assert tuple(loaded.config.encoder_channels) == TINY["encoder_channels"]
    reference = model.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, reference[key]), key
    args = scene_batch(batch=1, size=32)
    with torch.no_grad():
        assert torch.equal(model(*args, 8, 8).features, loaded(*args, 8, 8).features)


def plane_image(c2w: torch.Tensor, intrinsics: torch.Tensor, size: int) -> torch.Tensor:
    """(3, size, size) view of the textured plane z = 0 (colour bands in x and y) over grey."""
    eye, right, down, forward = c2w[:3, 3], c2w[:3, 0], -c2w[:3, 1], -c2w[:3, 2]
    fx, fy, cx, cy = intrinsics.tolist()
    v, u = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    dirs = forward + ((u - cx) / fx)[..., None] * right + ((v - cy) / fy)[..., None] * down
    t = -eye[2] / dirs[..., 2]
    hit = eye + t[..., None] * dirs
    x, y = hit[..., 0], hit[..., 1]
    colour = 0.5 + 0.4 * torch.stack([torch.sin(4 * x), torch.cos(3 * y), torch.sin(2 * (x + y))])
    inside = (t > 0) & (x.abs() < 0.8) & (y.abs() < 0.8)
    return torch.where(inside, colour, torch.full_like(colour, 0.3))


def test_overfitting_one_batch_drives_the_rgb_loss_down():
    eyes = [(0.5, 0.3, 1.5), (-0.6, -0.2, 1.4), (0.1, 0.5, 1.6)]
    c2w = torch.stack([look_at(e)[0] for e in eyes]).float()
    intr = torch.tensor([30.0, 30.0, 16.0, 16.0])
    images = torch.stack([plane_image(c, intr, 32) for c in c2w[:2]])[None]
    target_intr = intr * 0.5
    target = plane_image(c2w[2], target_intr, 16)[None]
    model = PixelNeRF(**{**TINY, "hidden": 32}).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(100):
        out = model(images, c2w[None, :2], intr.expand(1, 2, 4), c2w[None, 2], target_intr[None], 16, 16,
                    near=0.5, far=2.5, generator=generator)  # fmt: skip
        loss = (out.rgb - target).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    best_constant = target.var(dim=(0, 2, 3), unbiased=False).mean().item()  # MSE of the mean colour
    final = min(losses[-5:])
    assert math.isfinite(final)
    assert final < 0.1 * losses[0] and final < 0.2 * best_constant, (losses[0], final, best_constant)
