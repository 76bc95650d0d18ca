"""The repairing prior: the rendering's latent as input, the photograph's latent as a residual over it, trained on
noised renderings, min-SNR weights, and the files it saves."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from reconfusion.prior import PriorBatch, ReconFusionPrior, min_snr_weight
from test_prior import make_batch, micro_prior, sample_args


def repairing_prior(seed: int = 0) -> ReconFusionPrior:
    return micro_prior(seed, repairs=True, max_noise=0.7, min_snr_gamma=5.0, condition_dropout=0.0)


def with_rendering(batch: PriorBatch, seed: int = 1) -> PriorBatch:
    gen = torch.Generator().manual_seed(seed)
    blurred = torch.nn.functional.avg_pool2d(batch.target_image, 3, stride=1, padding=1)
    return dataclasses.replace(batch, rendering=(blurred + 0.05 * torch.randn(blurred.shape, generator=gen)).clamp(0, 1))


def test_the_unet_takes_the_renderings_latent_beside_the_noisy_latent_and_the_features():
    prior = repairing_prior()
    latent, features = prior.vae.config.latent_channels, prior.pixelnerf.config.feature_channels
    assert prior.unet.config.in_channels == 2 * latent + features


def test_a_repairing_prior_refuses_to_work_without_a_rendering():
    prior, batch = repairing_prior(), make_batch()
    with pytest.raises(ValueError, match="rendering"):
        prior.loss(batch)
    with pytest.raises(ValueError, match="init_images"):
        prior.sample(*sample_args(batch), t_start=0.5)


def test_an_untrained_repairing_prior_gives_back_the_rendering_at_every_noise_level():
    prior, batch = repairing_prior(), with_rendering(make_batch())
    assert not prior.unet.conv_out.weight.any()  # the residual starts at zero
    round_trip = prior.decode_latents(prior.encode_images(batch.rendering))
    for t_start in (0.1, 0.4, 0.7):
        out = prior.sample(*sample_args(batch), init_images=batch.rendering, t_start=t_start, num_steps=4,
                           guidance_scale=2.0, generator=torch.Generator().manual_seed(0))  # fmt: skip
        torch.testing.assert_close(out, round_trip, atol=2e-3, rtol=0)


def test_the_renderings_latents_given_are_not_encoded_again_and_sample_the_same():
    prior, batch = repairing_prior(), with_rendering(make_batch())
    torch.nn.init.normal_(prior.unet.conv_out.weight, std=0.1)  # a prior that changes the rendering
    kwargs = dict(init_images=batch.rendering, t_start=0.5, num_steps=3, guidance_scale=2.0)
    plain = prior.sample(*sample_args(batch), generator=torch.Generator().manual_seed(0), **kwargs)
    latents = prior.encode_images(batch.rendering)
    encoded = []
    encode = prior.encode_images
    prior.encode_images = lambda images: encoded.append(images.shape) or encode(images)
    try:
        given = prior.sample(*sample_args(batch), init_latents=latents, generator=torch.Generator().manual_seed(0), **kwargs)
    finally:
        del prior.encode_images
    assert encoded == []  # neither the noised start nor the condition encodes the rendering again
    torch.testing.assert_close(given, plain)


def test_training_draws_timesteps_below_max_noise_and_learns_to_repair():
    prior, batch = repairing_prior(), with_rendering(make_batch(size=4))
    prior.train()
    params = [p for module in prior.trainable_components().values() for p in module.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-3)

    def held_out_loss() -> float:
        with torch.no_grad():
            return sum(float(prior.loss(batch, generator=torch.Generator().manual_seed(1000 + k)).diffusion)
                       for k in range(4))  # fmt: skip

    before = held_out_loss()
    for step in range(60):
        out = prior.loss(batch, generator=torch.Generator().manual_seed(step))
        assert int(out.timesteps.max()) < 0.7 * prior.scheduler.config.num_train_timesteps
        optimizer.zero_grad()
        out.diffusion.backward()
        optimizer.step()
    assert held_out_loss() < 0.5 * before


def test_the_pixel_and_perceptual_terms_score_the_decoded_prediction_and_their_gradients_reach_the_unet():
    batch = with_rendering(make_batch(size=2))
    plain, weighted = repairing_prior(), repairing_prior()
    weighted.config = dataclasses.replace(weighted.config, pixel_loss_weight=4.0, lpips_loss_weight=0.5)
    assert plain.loss(batch).pixel is None and plain.loss(batch).perceptual is None
    out = weighted.loss(batch, generator=torch.Generator().manual_seed(0))
    assert float(out.pixel) > 0 and float(out.perceptual) > 0
    torch.testing.assert_close(out.total, out.diffusion + weighted.config.pixelnerf_loss_weight * out.pixelnerf
                               + 4.0 * out.pixel + 0.5 * out.perceptual)  # fmt: skip
    for term in (out.pixel, out.perceptual):  # the residual starts at zero: the last layer is where a gradient lands
        weighted.unet.conv_out.weight.grad = None
        term.backward(retain_graph=True)
        assert weighted.unet.conv_out.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in weighted.vae.parameters())  # the autoencoder stays frozen


def test_min_snr_weights():
    alpha_bar = torch.tensor([0.99, 0.5, 0.01])
    snr = alpha_bar / (1 - alpha_bar)
    torch.testing.assert_close(min_snr_weight(alpha_bar, 5.0, "v_prediction"), snr.clamp(max=5) / (snr + 1))
    torch.testing.assert_close(min_snr_weight(alpha_bar, 5.0, "sample"), snr.clamp(max=5) / 5)
    assert min_snr_weight(alpha_bar, 0.0, "epsilon").tolist() == [1.0, 1.0, 1.0]


def test_a_saved_repairing_prior_loads_with_its_settings(tmp_path):
    prior = repairing_prior()
    prior.save_pretrained(tmp_path / "prior")
    loaded = ReconFusionPrior.from_pretrained(tmp_path / "prior")
    assert loaded.config == prior.config and loaded.config.repairs
    batch = with_rendering(make_batch())
    a = prior.sample(*sample_args(batch), init_images=batch.rendering, t_start=0.3, num_steps=2,
                     generator=torch.Generator().manual_seed(0))  # fmt: skip
    b = loaded.sample(*sample_args(batch), init_images=batch.rendering, t_start=0.3, num_steps=2,
                      generator=torch.Generator().manual_seed(0))  # fmt: skip
    torch.testing.assert_close(a, b)


def test_scene_adaptation_fits_the_left_out_views_and_leaves_the_prior_ready_to_sample():
    from reconfusion.adaptation import AdaptationConfig, adapt_prior, leave_one_out
    from test_guidance import observations

    prior = repairing_prior()
    views = observations(prior.resolution, count=4)
    batch = leave_one_out(views, observed=3, rng=np.random.default_rng(0))
    assert batch.observed_images.shape[:2] == (4, 3) and batch.rendering.shape == batch.target_image.shape
    result = adapt_prior(prior, views, AdaptationConfig(steps=15, learning_rate=1e-3))
    assert result.loss_after < result.loss_before
    assert not prior.training and not any(p.requires_grad for p in prior.parameters())
    with pytest.raises(ValueError, match="repairing"):
        adapt_prior(micro_prior(), views, AdaptationConfig(steps=1))


def with_warps(batch: PriorBatch, views: int = 2, seed: int = 2) -> PriorBatch:
    gen = torch.Generator().manual_seed(seed)
    size = batch.target_image.shape[-1]
    images = torch.rand(batch.target_image.shape[0], views, 3, size, size, generator=gen)
    valid = (torch.rand(batch.target_image.shape[0], views, 1, size, size, generator=gen) > 0.3).float()
    return dataclasses.replace(batch, warped_images=images, warped_valid=valid)


def test_a_prior_widened_for_warped_views_repairs_as_before_until_training_teaches_it_to_use_them():
    prior = repairing_prior()
    widened = prior.with_warped_views(2)
    latent, features = prior.vae.config.latent_channels, prior.pixelnerf.config.feature_channels
    assert widened.unet.config.in_channels == 2 * latent + features + 2 * (latent + 1)
    batch = with_warps(with_rendering(make_batch()))
    outputs = [p.sample(*sample_args(batch), init_images=batch.rendering, t_start=0.4, num_steps=2, guidance_scale=2.0,
                        generator=torch.Generator().manual_seed(0), warped_images=batch.warped_images,
                        warped_valid=batch.warped_valid) for p in (prior, widened)]  # fmt: skip
    torch.testing.assert_close(outputs[0], outputs[1])
    torch.nn.init.normal_(widened.unet.conv_out.weight, std=0.01)  # as after some training (it starts at zero)
    widened.train().loss(batch, generator=torch.Generator().manual_seed(0)).total.backward()
    assert widened.unet.conv_in.weight.grad[:, -2 * (latent + 1) :].abs().sum() > 0  # the warps reach the U-Net
    with pytest.raises(ValueError, match="at most 1 warped views"):
        widened.with_warped_views(1)


def test_warped_views_count_only_where_valid_and_not_for_dropped_examples():
    prior = repairing_prior().with_warped_views(2)
    batch = with_warps(with_rendering(make_batch()))
    cameras = sample_args(batch)

    def warped(**given):
        return prior.condition(*cameras, rendering=batch.rendering, with_null=True, **given)

    shown = warped(warped_images=batch.warped_images, warped_valid=batch.warped_valid)
    assert not torch.equal(shown.warped, shown.null_warped)
    invalid = warped(warped_images=batch.warped_images, warped_valid=torch.zeros_like(batch.warped_valid))
    torch.testing.assert_close(invalid.warped, shown.null_warped)  # invalid pixels show the rendering, nothing else
    torch.testing.assert_close(warped().warped, shown.null_warped)  # no warps given: no view shows the target
    dropped = warped(warped_images=batch.warped_images, warped_valid=batch.warped_valid,
                     dropped=torch.tensor([True, False]))  # fmt: skip
    torch.testing.assert_close(dropped.warped[0], shown.null_warped[0])
    torch.testing.assert_close(dropped.warped[1], shown.warped[1])
    one_view = warped(warped_images=batch.warped_images[:, :1], warped_valid=batch.warped_valid[:, :1])
    torch.testing.assert_close(one_view.warped[:, -(prior.vae.config.latent_channels + 1) :],
                               shown.null_warped[:, -(prior.vae.config.latent_channels + 1) :])  # fmt: skip
    with pytest.raises(ValueError, match="warped_valid"):
        warped(warped_images=batch.warped_images, warped_valid=None)
    with pytest.raises(ValueError, match="only a repairing prior takes warped views"):
        micro_prior(warped_views=2)


def test_fine_tuning_a_repairing_prior_with_the_repair_preset_widens_it_to_the_presets_warped_views(tmp_path):
    from reconfusion.presets import REPAIR_PRESET
    from train_prior.__main__ import load_prior_to_fine_tune
    from train_prior.config import TrainConfig

    count = REPAIR_PRESET.prior.warped_views
    repairing_prior().save_pretrained(tmp_path / "plain")
    config = TrainConfig(preset="repair", init_from=tmp_path / "plain", resolution=32)
    widened = load_prior_to_fine_tune(config)
    assert widened.config.warped_views == count
    assert widened.config.pixel_loss_weight == REPAIR_PRESET.prior.pixel_loss_weight > 0  # the preset's objective
    assert widened.config.lpips_loss_weight == REPAIR_PRESET.prior.lpips_loss_weight
    assert widened.unet.config.in_channels == repairing_prior().unet.config.in_channels + count * (
        widened.vae.config.latent_channels + 1)
    repairing_prior().with_warped_views(count + 1).save_pretrained(tmp_path / "more")
    with pytest.raises(SystemExit, match=f"takes {count + 1} warped views"):
        load_prior_to_fine_tune(TrainConfig(preset="repair", init_from=tmp_path / "more", resolution=32))
