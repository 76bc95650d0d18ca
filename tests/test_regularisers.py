"""The sparse-view regularisers: their schedules and losses, and that each acts on a nerfacto field."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from reconfusion import regularisers as reg

pytest.importorskip("nerfstudio")

from nerfstudio.cameras.rays import RayBundle  # noqa: E402
from nerfstudio.data.scene_box import SceneBox  # noqa: E402

from nerfstudio_plugin import methods  # noqa: E402


def test_level_mask_releases_finer_levels_in_turn():
    assert reg.level_mask(8, 2, 0.0).tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    assert reg.level_mask(8, 2, 1.0).tolist() == [1.0] * 8
    halfway = reg.level_mask(8, 2, 0.5)  # 2 + 6 * 0.5 = 5 levels visible
    assert halfway.tolist() == [1, 1, 1, 1, 1, 0, 0, 0]
    assert reg.level_mask(8, 2, 0.55)[5].item() == pytest.approx(0.3)


def test_progress_and_annealed_near_far():
    assert reg.progress(0, 1000, 0.5) == 0 and reg.progress(250, 1000, 0.5) == 0.5 and reg.progress(900, 1000, 0.5) == 1
    for linear in (True, False):
        near, far = reg.annealed_near_far(0.5, 4.0, 1.5, 0.0, 0.5, linear)
        assert 0.5 < near < 1.5 < far < 4.0  # starts around the middle, inside the range
        assert reg.annealed_near_far(0.5, 4.0, 1.5, 1.0, 0.5, linear) == pytest.approx((0.5, 4.0))
    assert reg.annealed_near_far(0.5, 4.0, 1.5, 0.0, 0.5, True) == pytest.approx((1.0, 2.75))


def test_depth_smoothness_weight_decays_as_regnerf_s():
    assert reg.decayed(None, 0.1, 0.0) == 0.1
    assert reg.decayed(400.0, 0.1, 0.0) == pytest.approx(400.0) and reg.decayed(400.0, 0.1, 1.0) == pytest.approx(0.1)
    assert reg.decayed(400.0, 0.1, 0.5) == pytest.approx(np.sqrt(400.0 * 0.1))


def test_occlusion_zone_and_depth_smoothness():
    assert reg.occlusion_zone_end(1.0, 3.0, 0.25, linear=True) == pytest.approx(1.5)
    assert reg.occlusion_zone_end(1.0, 1e6, 0.5, linear=False) == pytest.approx(2.0, rel=1e-4)  # half the disparity
    weights = torch.tensor([[0.2, 0.3, 0.5]]).unsqueeze(-1)
    starts = torch.tensor([[1.0, 1.4, 2.0]]).unsqueeze(-1)
    assert reg.occlusion_penalty(weights, starts, 1.5).item() == pytest.approx(0.5)
    flat = torch.full((2, 1, 8, 8), 2.0)
    assert reg.depth_smoothness(flat, near=1.0).item() == 0.0
    ramp = 1.0 + torch.arange(8.0).expand(2, 1, 8, 8)
    assert reg.depth_smoothness(ramp, near=1.0).item() > 0.0


def test_unobserved_patches_are_windows_of_observed_frames():
    angles = np.radians([0.0, 90.0, 200.0])
    c2w = np.stack([_look_at_origin(np.array([2 * np.cos(a), 0.3, 2 * np.sin(a)])) for a in angles])
    intrinsics = torch.tensor([[50.0, 50.0, 40.0, 30.0]]).repeat(3, 1)
    patches = reg.UnobservedPatches(torch.as_tensor(c2w), intrinsics, torch.tensor([[60, 80]] * 3))
    novel, windows, nearest = patches.sample(16, 8)
    assert novel.shape == (16, 4, 4) and windows.shape == (16, 4) and nearest.shape == (16,)
    assert (windows[:, 2] <= 40.0).all() and (windows[:, 2] >= 40.0 - 72).all()  # window inside the 80 px width
    assert (windows[:, 3] <= 30.0).all() and (windows[:, 3] >= 30.0 - 52).all()
    centres = novel[:, :3, 3].numpy()
    assert not np.isclose(centres[:, None], c2w[None, :, :3, 3]).all(-1).any()  # none is an observed pose
    assert patches.middle_distance == pytest.approx(np.linalg.norm([2.0, 0.3, 0.0]), rel=0.05)


def _look_at_origin(position: np.ndarray) -> np.ndarray:
    from reconfusion.novel_views import look_at

    return look_at(position, np.zeros(3), np.array([0.0, 1.0, 0.0]))


def _model(**regularisers):
    config = methods.cpu_config("test", None).pipeline.model
    config = replace(config, regularisers=reg.RegularisersConfig(**regularisers), near_plane=0.1, far_plane=4.0)
    model = config.setup(scene_box=SceneBox(torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=3, metadata={})
    c2w = torch.as_tensor(np.stack([_look_at_origin(np.array([2 * np.cos(a), 0.0, 2 * np.sin(a)])) for a in (0.0, 0.6, 1.2)]))
    model.setup_regularisers(c2w.float(), torch.tensor([[40.0, 40.0, 16.0, 16.0]]).repeat(3, 1), torch.tensor([[32, 32]] * 3))
    return model, c2w.float()


def _rays_from(c2w: torch.Tensor, count: int = 256) -> RayBundle:
    directions = -c2w[:3, 2] + 0.1 * torch.randn(count, 3)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    return RayBundle(
        origins=c2w[:3, 3].expand(count, 3).clone(), directions=directions, pixel_area=torch.full((count, 1), 1e-4),
        camera_indices=torch.zeros(count, 1, dtype=torch.long),
    )  # fmt: skip


def test_coarse_to_fine_fine_levels_carry_no_gradient_early():
    model, c2w = _model(coarse_to_fine=0.5, coarse_to_fine_start_levels=2)
    model.train()
    model.total_steps = 100
    model._scheduled_regularisers(0)
    encoding = model.hash_levels
    outputs = model(_rays_from(c2w[0]))
    outputs["rgb"].sum().backward()
    grad = encoding.hash_table.grad.view(encoding.num_levels, -1)
    assert grad[:2].abs().sum() > 0 and grad[2:].abs().sum() == 0
    model._scheduled_regularisers(50)  # released at half of training: every level back, as at evaluation
    assert encoding.level_weights.tolist() == [1.0] * encoding.num_levels


def test_occlusion_penalty_lowers_density_next_to_a_training_camera():
    torch.manual_seed(0)
    model, c2w = _model(occlusion_weight=1.0)
    model.train()
    zone = reg.occlusion_zone_end(0.1, 4.0, model.config.regularisers.occlusion_fraction, linear=False)
    near_camera = c2w[0, :3, 3] - c2w[0, :3, 2] * torch.linspace(0.1, zone, 16)[:, None]

    def density() -> float:
        with torch.no_grad():
            return model.field.density_fn(near_camera[:, None]).mean().item()

    before = density()
    optimiser = torch.optim.Adam(model.field.parameters(), lr=1e-2)
    for _ in range(15):
        optimiser.zero_grad()
        losses = model.regulariser_losses(model(_rays_from(c2w[0])))
        losses["occlusion_loss"].backward()
        optimiser.step()
    assert density() < 0.5 * before


def test_schedules_are_fractions_of_training_and_end_released():
    from reconfusion.files import InputError

    with pytest.raises(InputError, match=r"anneal-near-far 1.5: must be in \(0, 1\]"):
        _model(anneal_near_far=1.5)
    model, _ = _model(coarse_to_fine=1.0, anneal_near_far=1.0)
    model.total_steps = 600
    model._scheduled_regularisers(599)  # the last step: trained as evaluation renders
    assert model.hash_levels.level_weights.tolist() == [1.0] * model.hash_levels.num_levels
    assert (model.collider.near_plane, model.collider.far_plane) == pytest.approx((0.1, 4.0))


def test_depth_smoothness_reaches_the_field_and_annealing_moves_the_collider():
    model, _ = _model(depth_smoothness_weight=0.1, anneal_near_far=0.5)
    model.train()
    model.total_steps = 100
    model._scheduled_regularisers(0)
    assert 0.1 < model.collider.near_plane < model.collider.far_plane < 4.0
    losses = model.regulariser_losses({})
    assert set(losses) == {"depth_smoothness_loss"} and torch.isfinite(losses["depth_smoothness_loss"])
    losses["depth_smoothness_loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.field.parameters())
    model._scheduled_regularisers(50)
    assert (model.collider.near_plane, model.collider.far_plane) == pytest.approx((0.1, 4.0))
    assert "depth smoothness 0.1" in model.config.regularisers.describe()
