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
