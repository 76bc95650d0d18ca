"""reconfusion.warping: observed views warped into a target view with its rendered depth."""

from __future__ import annotations

import numpy as np
import torch

from reconfusion.cameras import pixel_rays
from reconfusion.warping import warp_views

SIZE, FOCAL, WALL = 32, 32.0, 4.0


def wall_depth(c2w: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Distance along each ray of a camera looking down -z to the wall at z = -WALL."""
    _, directions = pixel_rays(c2w, intrinsics, SIZE, SIZE)
    return WALL / -directions[..., 2]


def sliding_cameras(offsets: list[float]) -> torch.Tensor:
    c2w = torch.eye(4).repeat(len(offsets), 1, 1)
    c2w[:, 0, 3] = torch.tensor(offsets)
    return c2w


def test_views_warped_with_the_true_depth_land_where_the_target_sees_them():
    c2w, k = sliding_cameras([0.0, 0.5, 1.0]), torch.tensor([FOCAL, FOCAL, SIZE / 2, SIZE / 2])
    gradient = (torch.arange(SIZE, dtype=torch.float32) / SIZE).expand(3, SIZE, SIZE)  # brighter to the right
    colours, valid = warp_views(c2w[:1], k[None], wall_depth(c2w[0], k)[None], gradient.expand(1, 2, 3, SIZE, SIZE),
                                c2w[None, 1:], k.expand(1, 2, 4))  # fmt: skip
    assert colours.shape == (1, 2, 3, SIZE, SIZE) and valid.shape == (1, 2, 1, SIZE, SIZE)
    for index, offset in enumerate((0.5, 1.0)):  # a wall point at target column u is at u - f b / D in the view
        shift = FOCAL * offset / WALL
        inside = torch.arange(SIZE) >= shift + 1
        torch.testing.assert_close(colours[0, index, :, :, inside], gradient[:, :, inside] - shift / SIZE, atol=1e-4, rtol=0)
        assert valid[0, index, 0][:, inside].all() and not valid[0, index, 0][:, torch.arange(SIZE) + 0.5 < shift].any()
        assert not colours[0, index][:, ~valid[0, index, 0].bool()].any()  # zero where invalid


def test_points_behind_a_view_or_without_a_finite_depth_are_invalid_and_views_may_differ_in_size():
    c2w, k = sliding_cameras([0.0]), torch.tensor([FOCAL, FOCAL, SIZE / 2, SIZE / 2])
    behind = torch.eye(4)
    behind[2, 2], behind[0, 0], behind[2, 3] = -1.0, -1.0, -8.0  # beyond the wall, looking back at it (+z)
    depth = wall_depth(c2w[0], k).clone()
    depth[:4] = float("inf")  # sky: nothing was rendered there
    big = torch.rand(1, 3, 2 * SIZE, 2 * SIZE)
    colours, valid = warp_views(c2w, k[None], depth[None], [torch.rand(1, 3, SIZE, SIZE), big],
                                torch.stack([c2w[0], behind])[None], torch.stack([k, 2 * k])[None])  # fmt: skip
    assert not valid[0, 0, 0, :4].any() and valid[0, 0, 0, 4:].all()  # itself, where the depth is finite
    assert valid[0, 1, 0, 4:].all()  # the view behind the wall sees its back, twice the size: no occlusion test
    np.testing.assert_allclose(colours[0, 1, :, 4:].mean(), big[0].mean(), atol=0.05)
