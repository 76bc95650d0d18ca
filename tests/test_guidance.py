"""reconfusion.guidance: the noise schedule, the views the prior sees, and the three loss modes."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from reconfusion.cameras import pixel_rays, project
from reconfusion.guidance import (Agreement, SampleGuidance, SampleLossConfig, default_sample_weight, input_agreement,
                                  t_range)
from reconfusion.metrics import load_lpips
from reconfusion.novel_views import look_at
from reconfusion.observations import Coverage, observed_coverage, square_views
from reconfusion.prior import ReconFusionPrior


@pytest.fixture(scope="module")
def prior() -> ReconFusionPrior:
    torch.manual_seed(0)
    return ReconFusionPrior.from_preset("tiny").eval().requires_grad_(False)


class ToyScene(torch.nn.Module):
    """A differentiable 'scene': colour as a function of the ray direction, every ray ending at ``distance``."""

    def __init__(self, distance: float | None = 2.0) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 3)
        self.distance = distance
        self.calls: list[tuple[int, int, int]] = []

    def forward(self, c2w, intrinsics, height, width, camera_index):
        self.calls.append((c2w.shape[0], height, width))
        _, dirs = pixel_rays(c2w, intrinsics, height, width)
        depth = None if self.distance is None else torch.full((c2w.shape[0], 1, height, width), self.distance)
        return torch.sigmoid(self.layer(dirs)).permute(0, 3, 1, 2), depth


def observations(resolution: int = 64, count: int = 3):
    positions = [np.array([np.cos(a), np.sin(a), 0.3]) for a in np.linspace(0, 2 * np.pi, count, endpoint=False)]
    c2w = torch.tensor(np.stack([look_at(p * 2.0, np.zeros(3), np.array([0.0, 0.0, 1.0])) for p in positions]))
    intrinsics = torch.tensor([[60.0, 60.0, 40.0, 30.0]] * count)
    images = [torch.rand(3, 60, 80) for _ in range(count)]
    return square_views(images, c2w, intrinsics, resolution)


def make_guidance(prior, **changes) -> SampleGuidance:
    # The check against the photographs (tested on its own below) would refuse most of a random prior's samples.
    config = replace(SampleLossConfig(num_steps=2, views_per_refresh=2, check_against_inputs=False), **changes)
    lpips = load_lpips("stlpips") if config.mode != "sds" else None
    return SampleGuidance(config, prior, observations(prior.resolution), total_steps=100, lpips=lpips)


def test_t_min_is_annealed_linearly_and_only_in_the_annealed_mode():
    annealed = SampleLossConfig(mode="annealed-multistep")
    assert t_range(annealed, 0, 100) == (1.0, 1.0)
    assert t_range(annealed, 25, 100) == pytest.approx((0.75, 1.0))
    assert t_range(annealed, 50, 100) == pytest.approx((0.5, 1.0))
    assert t_range(annealed, 100, 100) == pytest.approx((0.0, 1.0))
    assert t_range(annealed, 500, 100) == pytest.approx((0.0, 1.0))
    assert t_range(replace(annealed, anneal_steps=10), 5, 100) == pytest.approx((0.5, 1.0))
    for mode in ("multistep", "sds"):
        fixed = SampleLossConfig(mode=mode)
        assert {t_range(fixed, step, 100) for step in (0, 50, 100)} == {(0.0, 1.0)}


def test_square_views_crop_and_resize_keep_the_geometry():
    c2w = torch.eye(4)[None]
    c2w[0, 2, 3] = 3.0
    intrinsics = torch.tensor([[50.0, 50.0, 41.0, 29.0]])
    obs = square_views([torch.rand(3, 60, 80)], c2w, intrinsics, 32)
    assert obs.images.shape == (1, 3, 32, 32) and len(obs) == 1
    points = torch.tensor([[[0.3, -0.2, 0.0], [-0.5, 0.4, 1.0]]])
    before, _ = project(points, c2w, intrinsics)
    after, _ = project(points, obs.c2w, obs.intrinsics)
    expected = (before - torch.tensor([10.0, 0.0])) * (32 / 60)  # centre crop 10 px from the left, then resize
    assert torch.allclose(after, expected, atol=1e-4)
    whole, _ = project(points, obs.c2w, obs.frame_intrinsics)
    assert torch.allclose(whole, before * (32 / 60), atol=1e-4)  # the whole frame, resized
    assert obs.frame_sizes.tolist() == [[32, 43]]


def test_novel_windows_cover_the_whole_frame(prior):
    guidance = make_guidance(prior)
    views = guidance.sample_views(200, step=0)
    obs = guidance.observations
    frame = obs.frame_intrinsics[views.conditioning[:, 0]]
    left, top = frame[:, 2] - views.intrinsics[:, 2], frame[:, 3] - views.intrinsics[:, 3]
    slack = obs.frame_sizes[0, 1].item() - prior.resolution  # 60x80 frames: 64 x 85 at the prior's scale
    assert slack > 0 and (top == 0).all() and left.min() == 0 and left.max() == slack
    assert torch.equal(views.intrinsics[:, :2], frame[:, :2])


def test_coverage_weight_is_zero_where_an_observed_view_sees_the_point_and_one_where_none_is_near(prior):
    guidance = make_guidance(prior)
    obs, size = guidance.observations, prior.resolution
    depth = torch.full((1, 1, size, size), 2.0)  # observed cameras sit 2.1 from the origin, looking at it
    same = replace(guidance.sample_views(1, 0), c2w=obs.c2w[:1], intrinsics=obs.intrinsics[:1])
    assert guidance.coverage_weights(same, depth).max() == 0.0
    between = look_at(np.array([np.cos(np.pi / 3), np.sin(np.pi / 3), 0.3]) * 2.0, np.zeros(3), np.array([0.0, 0.0, 1.0]))
    halfway = replace(same, c2w=torch.tensor(between, dtype=torch.float32)[None])  # 60 degrees from two inputs
    weights = guidance.coverage_weights(halfway, depth)
    assert weights[..., size // 2 - 4 : size // 2 + 4, size // 2 - 4 : size // 2 + 4].min() == 1.0
    assert (guidance.coverage_weights(halfway, None) == 1).all()  # no depth: the paper's weight
    paper = make_guidance(prior, coverage_degrees=None)
    assert (paper.coverage_weights(same, depth) == 1).all()


def test_observed_coverage_at_an_observed_camera_is_that_view(prior):
    obs = observations(prior.resolution)
    size = prior.resolution
    coverage = observed_coverage(obs.c2w[:1], obs.intrinsics[:1], torch.full((1, 1, size, size), 2.0), obs)
    assert coverage.known.all() and coverage.angle.max() < 1e-3
    assert torch.allclose(coverage.colour, obs.images[:1], atol=1e-4)  # the same pixels, read back
    behind = obs.c2w[:1].clone()
    behind[0, :3, 3] += 100.0 * behind[0, :3, 2]  # far behind view 0: its points are behind every camera
    far = observed_coverage(behind, obs.intrinsics[:1], torch.full((1, 1, size, size), 2.0), obs)
    assert not far.known.any() and (far.weights((5.0, 25.0)) == 1).all()  # seen by no view: no colour


def test_targets_the_photographs_contradict_teach_nothing(prior):
    """At an observed camera with every pixel half-weighted, a prior whose sample is the photograph is taught, and
    one whose sample is its negative is not (no loss, the target is the rendering)."""
    guidance = make_guidance(prior, views_per_refresh=1, target="sample", coverage_degrees=(-10.0, 10.0),
                             check_against_inputs=True)  # fmt: skip
    obs, size = guidance.observations, prior.resolution
    views = replace(guidance.sample_views(1, 0), c2w=obs.c2w[:1], intrinsics=obs.intrinsics[:1])
    rendering, depth = torch.full((1, 3, size, size), 0.5), torch.full((1, 1, size, size), 2.0)
    try:
        prior.sample = lambda *a, **k: obs.images[:1]
        taught = guidance.make_targets(views, rendering, depth, step=0)
        assert taught.active.tolist() == [True] and guidance.last_agreement > 0
        prior.sample = lambda *a, **k: 1 - obs.images[:1]
        refused = guidance.make_targets(views, rendering, depth, step=0)
        assert refused.active.tolist() == [False] and torch.equal(refused.targets, rendering)
        unchecked = make_guidance(prior, views_per_refresh=1, target="sample", coverage_degrees=(-10.0, 10.0))
        assert unchecked.make_targets(views, rendering, depth, step=0).active.tolist() == [True]
    finally:
        del prior.sample


def test_input_agreement_is_signed_and_ignores_pixels_no_view_shows():
    colour = torch.rand(2, 3, 8, 8)
    angle = torch.full((2, 1, 8, 8), math.radians(10.0))
    angle[:, :, :4] = torch.inf  # the top half is seen by no observed view
    coverage = Coverage(angle, colour, torch.isfinite(angle))
    rendering = colour + 0.2
    noise = 0.01 * torch.randn(2, 1, 8, 8)
    targets = torch.stack([colour[0] + 0.1, colour[1] + 0.3]) + noise
    targets[:, :, :4] = 5.0  # changes where nothing was photographed are not judged
    agreement = input_agreement(rendering, targets, coverage, 25.0)
    assert agreement.gain.tolist() == pytest.approx([0.1, -0.1], abs=0.01)
    assert agreement.z[0] > 20 and agreement.z[1] < -20 and agreement.fraction.tolist() == [0.5, 0.5]
    oblique = input_agreement(rendering, targets, coverage, 5.0)  # every pixel seen too obliquely to compare
    assert oblique.gain.tolist() == oblique.z.tolist() == oblique.fraction.tolist() == [0.0, 0.0]


def test_views_too_little_photographed_follow_the_recent_verdicts(prior):
    guidance = make_guidance(prior, check_against_inputs=True)
    drawn = torch.tensor([True])

    def check(z: float, fraction: float) -> bool:
        agreement = Agreement(torch.tensor([z / 100]), torch.tensor([z]), torch.tensor([fraction]))
        return bool(guidance._checked(agreement, drawn))

    assert not check(0.0, 0.0)  # nothing judged yet: not taught
    assert check(3.0, 0.5) and check(0.0, 0.0)  # judged and passed; the next unjudged view follows
    assert not check(1.0, 0.5)  # judged: not significant
    assert not check(-3.0, 0.5) and not check(0.0, 0.0)  # one pass, two failures: not trusted


def test_whole_view_loss_renders_once_per_refresh_and_covered_pixels_teach_nothing(prior):
    guidance = make_guidance(prior, views_per_refresh=1, refresh_every=2)
    scene = ToyScene()
    loss = guidance.loss(0, scene)["sample_loss"]
    loss.backward()
    assert scene.calls == [(1, 64, 64)] and scene.layer.weight.grad.abs().sum() > 0
    guidance.loss(1, scene)
    assert scene.calls == [(1, 64, 64)] * 2  # the cached target, rendered again with gradients
    covered = make_guidance(prior, views_per_refresh=1, coverage_degrees=(179.0, 180.0), min_coverage=0.0)
    assert covered.loss(0, ToyScene())["sample_loss"].item() == pytest.approx(0.0, abs=1e-6)
    gated = make_guidance(prior, views_per_refresh=1, coverage_degrees=(179.0, 180.0))  # min_coverage 0.1
    prior.sample = lambda *a, **k: pytest.fail("a fully covered view must not draw a sample")
    try:
        assert gated.loss(0, ToyScene()) == {} and gated.cache.active.tolist() == [False]
    finally:
        del prior.sample


def test_multistep_loss_reaches_the_scene_and_reuses_targets(prior):
    guidance = make_guidance(prior, refresh_every=3, patch_size=32)
    assert guidance.weight == pytest.approx(default_sample_weight(prior) / 3) == pytest.approx(3e-4 / 3)
    calls = []
    original = prior.sample
    prior.sample = lambda *a, **k: calls.append(k["t_start"]) or original(*a, **k)
    scene = ToyScene()
    try:
        targets = []
        for step in range(5):
            loss = guidance.loss(step, scene)["sample_loss"]
            targets.append(guidance.cache.targets)
            scene.layer.weight.grad = None
            loss.backward()
            assert torch.isfinite(loss) and scene.layer.weight.grad.abs().sum() > 0
    finally:
        del prior.sample
    assert len(calls) == 2  # refreshed at steps 0 and 3 only
    assert targets[0] is targets[1] is targets[2] and targets[3] is not targets[2]
    assert (2, 64, 64) in scene.calls and (1, 32, 32) in scene.calls  # full views to refresh, windows with grad
    t_min = guidance.noise_range(3)[0]
    assert (calls[1] >= t_min - 1e-6).all() and (calls[1] <= 1.0).all()


def test_multistep_t_range_does_not_shrink_but_annealed_does(prior):
    late = {}
    for mode in ("annealed-multistep", "multistep"):
        guidance = make_guidance(prior, mode=mode)
        late[mode] = guidance.sample_views(64, step=90).t
    assert late["annealed-multistep"].min() >= 0.1 - 1e-6
    assert late["multistep"].min() < 0.1


def test_score_distillation_has_no_sampling_loop_and_flows_through_the_encoder(prior):
    guidance = make_guidance(prior, mode="sds")
    encoded = []
    original_encode = prior.encode_images
    prior.encode_images = lambda images: encoded.append(images.requires_grad) or original_encode(images)
    prior.sample = lambda *a, **k: pytest.fail("score distillation must not run the sampling loop")
    scene = ToyScene()
    try:
        losses = guidance.loss(10, scene)
    finally:
        del prior.encode_images, prior.sample
    assert set(losses) == {"sds_loss"}
    losses["sds_loss"].backward()
    assert encoded == [True]
    assert torch.isfinite(scene.layer.weight.grad).all() and scene.layer.weight.grad.abs().sum() > 0


def test_loss_every_skips_steps(prior):
    guidance = make_guidance(prior, loss_every=2, patch_size=24)
    assert guidance.loss(1, ToyScene()) == {}
    assert set(guidance.loss(2, ToyScene())) == {"sample_loss"}


def test_bad_settings_raise(prior):
    with pytest.raises(ValueError, match="patch_size"):
        make_guidance(prior, patch_size=prior.resolution + 1)
    with pytest.raises(ValueError, match="LPIPS"):
        SampleGuidance(SampleLossConfig(), prior, observations(), total_steps=10, lpips=None)
    with pytest.raises(ValueError, match="render_size"):
        make_guidance(prior, render_size=prior.resolution + 1)
    with pytest.raises(ValueError, match="patch_size"):
        make_guidance(prior, render_size=prior.resolution // 2, patch_size=prior.resolution // 2 + 1)


class IdentityPrior:
    """A prior whose samples are the autoencoder round trip of its input: it changes nothing."""

    def __init__(self, prior) -> None:
        self.inner = prior
        self.resolution, self.scheduler = prior.resolution, prior.scheduler

    def encode_images(self, images):
        return self.inner.encode_images(images)

    def decode_latents(self, latents):
        return self.inner.decode_latents(latents)

    def sample(self, *args, init_images, **kwargs):
        return self.decode_latents(self.encode_images(init_images))


class BrighteningPrior(IdentityPrior):
    """Changes every pixel by +0.1."""

    def sample(self, *args, init_images, **kwargs):
        return super().sample(init_images=init_images) + 0.1


def test_smaller_renderings_get_the_priors_change_resized_to_them(prior):
    half = prior.resolution // 2
    scene = ToyScene()
    lazy = make_guidance(IdentityPrior(prior), render_size=half, views_per_refresh=1, t_min_final=0.5)
    loss = lazy.loss(0, scene)["sample_loss"]
    assert scene.calls == [(1, half, half)] and lazy.cache.targets.shape == (1, 3, half, half)
    assert loss.item() == pytest.approx(0.0, abs=1e-4)  # a prior that changes nothing teaches nothing
    brighter = make_guidance(BrighteningPrior(prior), render_size=half, views_per_refresh=1, t_min_final=0.5,
                             coverage_degrees=None, lpips_weight=0.0)  # fmt: skip
    loss = brighter.loss(0, scene)["sample_loss"]
    views = brighter.cache
    rendering, _ = scene(views.c2w, views.intrinsics * 0.5, half, half, views.conditioning[:, 0])
    unclipped = rendering < 0.85
    change = (views.targets - rendering)[unclipped]
    torch.testing.assert_close(change, torch.full_like(change, 0.1), atol=1e-4, rtol=0)
    loss.backward()
    assert loss.item() == pytest.approx(brighter.weight * 0.1, rel=0.2) and scene.layer.weight.grad.abs().sum() > 0


def test_residual_targets_are_free_of_the_autoencoder(prior):
    scene = ToyScene()
    lazy = make_guidance(IdentityPrior(prior), t_min_final=0.5)
    views = lazy.refresh(0, scene)
    rendering, _ = scene(views.c2w, views.intrinsics, prior.resolution, prior.resolution, views.conditioning[:, 0])
    torch.testing.assert_close(views.targets, rendering.clamp(0, 1).detach(), atol=1e-5, rtol=0)  # nothing changed
    assert lazy.loss(0, scene)["sample_loss"].item() == pytest.approx(0.0, abs=1e-4)
    paper = make_guidance(IdentityPrior(prior), t_min_final=0.5, target="sample")
    assert (paper.refresh(0, scene).targets - rendering).abs().mean() > 0.01  # the paper's target: the round trip


def test_residual_target_is_the_rendering_at_t_zero(prior):
    scene = ToyScene()
    guidance = make_guidance(prior, t_max=0.0, t_min_final=0.0)
    views = guidance.refresh(0, scene)
    rendering, _ = scene(views.c2w, views.intrinsics, prior.resolution, prior.resolution, views.conditioning[:, 0])
    torch.testing.assert_close(views.targets, rendering.clamp(0, 1).detach(), atol=1e-6, rtol=0)


def test_fading_weight_reaches_zero_with_t_min(prior):
    guidance = make_guidance(prior, weight_schedule="fade", patch_size=24)
    assert guidance.weight_at(0) == pytest.approx(guidance.weight)
    assert guidance.weight_at(50) == pytest.approx(guidance.weight / 2)
    assert guidance.weight_at(100) == 0.0 and guidance.loss(100, ToyScene()) == {}
    constant = make_guidance(prior, weight_schedule="constant")
    assert constant.weight_at(100) == pytest.approx(guidance.weight)  # the paper's constant weight


def test_a_repairing_prior_is_never_asked_for_more_noise_than_it_was_trained_on():
    from reconfusion.presets import PriorConfig, TinyPreset

    torch.manual_seed(0)
    preset = TinyPreset(prior=PriorConfig(repairs=True, max_noise=0.5))
    repairing = ReconFusionPrior.from_preset("tiny", preset=preset).eval().requires_grad_(False)
    guidance = make_guidance(repairing, mode="multistep")
    assert guidance.noise_range(0) == (0.0, 0.5)
    assert float(guidance.sample_views(16, step=0).t.max()) <= 0.5
    assert guidance.config.guidance_scale == 1.0  # conditioned on the rendering, guidance only overshoots
    assert make_guidance(repairing, guidance_scale=2.0).config.guidance_scale == 2.0  # unless asked for
    assert guidance.weight == pytest.approx(0.3 / 3)  # its targets stay near the renderings: a weight that lets them act
    assert make_guidance(repairing, lambda_sample=3e-4).weight == pytest.approx(3e-4 / 3)


def test_a_prior_that_generates_keeps_the_papers_guidance_scale(prior):
    assert make_guidance(prior).config.guidance_scale == 3.0


def test_a_prior_that_takes_warped_views_gets_the_conditioning_views_warped_with_the_rendered_depth():
    from reconfusion.presets import PriorConfig, TinyPreset

    torch.manual_seed(0)
    preset = TinyPreset(prior=PriorConfig(repairs=True, max_noise=0.5, warped_views=2))
    repairing = ReconFusionPrior.from_preset("tiny", preset=preset).eval().requires_grad_(False)
    guidance = make_guidance(repairing, mode="multistep")
    views = guidance.sample_views(3, step=0)
    rendering, depth = guidance._render(views, ToyScene(distance=2.0))
    warps = guidance.warped_views(views, depth)
    assert warps["warped_images"].shape == (3, 2, 3, 64, 64) and warps["warped_valid"].shape == (3, 2, 1, 64, 64)
    assert warps["warped_valid"].any()
    assert guidance.warped_views(views, None) == {}  # no depth: the prior repairs without them
    given = {}
    sample = repairing.sample

    def spy(*args, **kwargs):
        given.update(kwargs)
        return sample(*args, **kwargs)

    repairing.sample = spy
    targets = guidance.make_targets(views, rendering, depth, step=0)
    assert targets.targets.shape == rendering.shape
    assert torch.equal(given["warped_valid"], warps["warped_valid"])


def test_score_distillation_conditions_a_repairing_prior_on_the_rendering_and_its_warped_views():
    from reconfusion.presets import PriorConfig, TinyPreset

    torch.manual_seed(0)
    preset = TinyPreset(prior=PriorConfig(repairs=True, max_noise=0.5, warped_views=2))
    repairing = ReconFusionPrior.from_preset("tiny", preset=preset).eval().requires_grad_(False)
    guidance = make_guidance(repairing, mode="sds", render_size=32)  # render_size is for the multistep modes only
    given = {}
    condition = repairing.condition
    repairing.condition = lambda *a, **k: given.update(k) or condition(*a, **k)
    scene = ToyScene()
    loss = guidance.loss(10, scene)["sds_loss"]
    loss.backward()
    assert scene.calls == [(1, 64, 64)] and scene.layer.weight.grad.abs().sum() > 0
    assert given["rendering"].shape == (1, 3, 64, 64) and not given["rendering"].requires_grad
    assert given["warped_images"].shape == (1, 2, 3, 64, 64)
    assert given["rendering_latents"].shape[0] == 1 and not given["rendering_latents"].requires_grad  # encoded once
