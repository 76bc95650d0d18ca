"""The diffusion prior: objective, conditioning dropout, sampler, save/load, starting from Stable Diffusion."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, PNDMScheduler, UNet2DConditionModel

from reconfusion.conditioning import OpenCLIPImageEncoder
from reconfusion.files import InputError
from reconfusion.pixelnerf import PixelNeRF
from reconfusion.presets import PriorConfig, TinyPreset
from reconfusion.prior import PriorBatch, ReconFusionPrior
from reconfusion.sampling import ddim_update

MICRO = TinyPreset(
    resolution=32,
    vae_channels=(8, 16, 16),
    unet_channels=(16, 32, 32),
    cross_attention_dim=16,
    attention_heads=2,
    feature_channels=4,
    pixelnerf_samples=8,
    pixelnerf_hidden=32,
    pixelnerf_encoder_channels=(8, 16),
    image_encoder_channels=(8, 16),
)
TINY_CLIP = {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8}


@pytest.fixture(autouse=True, scope="module")
def _deterministic():
    from diffusers.utils.torch_utils import enable_full_determinism

    before = torch.are_deterministic_algorithms_enabled()
    enable_full_determinism()
    yield
    torch.use_deterministic_algorithms(before)


def micro_prior(seed: int = 0, **prior_settings) -> ReconFusionPrior:
    torch.manual_seed(seed)
    preset = dataclasses.replace(MICRO, prior=PriorConfig(preset="tiny", **prior_settings))
    return ReconFusionPrior.from_preset("tiny", preset=preset).eval()


def look_at(position: list[float]) -> torch.Tensor:
    """OpenGL camera-to-world at ``position`` looking at the origin."""
    pos = torch.tensor(position, dtype=torch.float32)
    back = pos / pos.norm()
    right = torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0]), back)
    right = right / right.norm()
    c2w = torch.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, torch.linalg.cross(back, right), back, pos
    return c2w


def make_batch(size: int = 2, views: int = 3, resolution: int = 32, seed: int = 0) -> PriorBatch:
    gen = torch.Generator().manual_seed(seed)
    angles = torch.rand(size, views + 1, generator=gen) * 2 * math.pi
    c2w = torch.stack([torch.stack([look_at([math.sin(a), 0.4, math.cos(a)]) for a in row.tolist()]) for row in angles])
    k = torch.tensor([1.2, 1.2, 0.5, 0.5]) * resolution
    return PriorBatch(
        observed_images=torch.rand(size, views, 3, resolution, resolution, generator=gen),
        observed_c2w=c2w[:, :views],
        observed_intrinsics=k.expand(size, views, 4).clone(),
        target_image=torch.rand(size, 3, resolution, resolution, generator=gen),
        target_c2w=c2w[:, views],
        target_intrinsics=k.expand(size, 4).clone(),
        near=torch.full((size,), 0.1),
        far=torch.full((size,), 3.0),
    )


def sample_args(batch: PriorBatch) -> tuple:
    b = batch
    return b.observed_images, b.observed_c2w, b.observed_intrinsics, b.target_c2w, b.target_intrinsics


def test_tiny_preset_sizes():
    prior = ReconFusionPrior.from_preset("tiny")
    assert (prior.resolution, prior.latent_resolution, prior.config.preset) == (64, 16, "tiny")
    assert prior.unet.config.in_channels == 4 + 16 and prior.prediction_type == "v_prediction"
    assert 2e6 < sum(p.numel() for p in prior.unet.parameters()) < 10e6
    assert not any(p.requires_grad for p in prior.vae.parameters())


# ----------------------------------------------------------------------------- training objective


def test_overfitting_a_tiny_batch_drives_both_losses_down():
    prior = micro_prior(condition_dropout=0.0).train()
    batch = make_batch()
    params = [p for p in prior.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=3e-3)
    history = []
    for _ in range(25):
        losses = prior.loss(batch, generator=torch.Generator().manual_seed(0))  # same t and noise every step
        optimizer.zero_grad()
        losses.total.backward()
        optimizer.step()
        history.append((losses.diffusion.item(), losses.pixelnerf.item()))
    assert history[-1][0] < 0.5 * history[0][0], history[::10]
    assert history[-1][1] < 0.5 * history[0][1], history[::10]
    assert all(p.grad is None for p in prior.vae.parameters()), "the VAE is frozen"


def test_views_are_dropped_at_the_set_rate():
    prior = micro_prior(condition_dropout=0.1)
    batch = make_batch(size=32)
    gen = torch.Generator().manual_seed(123)
    with torch.no_grad():
        dropped = torch.cat([prior.loss(batch, generator=gen).dropped for _ in range(25)])
    count, expected = int(dropped.sum()), 0.1 * dropped.numel()  # 800 examples: 80 expected, sd 8.5
    assert abs(count - expected) < 4 * math.sqrt(dropped.numel() * 0.1 * 0.9), count
    with torch.no_grad():
        assert not micro_prior(condition_dropout=0.0).loss(batch, generator=gen).dropped.any()
        assert micro_prior(condition_dropout=1.0).loss(batch, generator=gen).dropped.all()


def test_dropped_views_get_zero_images_and_null_tokens():
    prior = micro_prior()
    batch = make_batch(size=2)
    args = sample_args(batch)
    with torch.no_grad():
        cond = prior.condition(*args, dropped=torch.tensor([True, False]), with_null=True)
        zeroed = prior.condition(torch.zeros_like(batch.observed_images), *args[1:])
    assert torch.all(cond.tokens[0] == 0) and torch.any(cond.tokens[1] != 0)
    torch.testing.assert_close(cond.features[0], zeroed.features[0])
    torch.testing.assert_close(cond.null_features, zeroed.features)


# ----------------------------------------------------------------------------- sampler


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddim_update_matches_diffusers_ddim_step(prediction_type):
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", prediction_type=prediction_type, clip_sample=False)
    scheduler.set_timesteps(10)
    sample, output = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    for t in (scheduler.timesteps[0], scheduler.timesteps[4], scheduler.timesteps[-1]):
        expected = scheduler.step(output, t, sample).prev_sample
        prev = t - scheduler.config.num_train_timesteps // 10
        a_prev = scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.final_alpha_cumprod
        got = ddim_update(sample, output, scheduler.alphas_cumprod[t].expand(2), a_prev.expand(2), prediction_type)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_sample_near_zero_returns_the_encoded_input_and_at_one_ignores_it():
    prior = micro_prior()
    batch = make_batch(size=2)
    init = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    other = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        reconstructed = prior.decode_latents(prior.encode_images(init))

    def run(images, t_start, seed=0):
        gen = torch.Generator().manual_seed(seed)
        return prior.sample(*sample_args(batch), init_images=images, t_start=t_start, num_steps=5, generator=gen)

    runs = {t: run(init, t) for t in (0.0, 0.01, 0.3, 1.0)}
    near_zero, from_noise = runs[0.01], runs[1.0]
    # Untrained U-Net: the sample drifts from the input in proportion to the noise level it starts at.
    errors = [(sample - reconstructed).abs().mean().item() for sample in runs.values()]
    assert errors == sorted(errors) and errors[0] < 0.02 and errors[1] < 0.3 * errors[3], errors
    assert torch.equal(from_noise, run(other, 1.0)), "t_start = 1 starts from pure noise"
    assert torch.equal(from_noise, run(None, 1.0))
    assert torch.equal(near_zero, run(init, 0.01)), "same seed, same sample"
    assert not torch.equal(from_noise, run(init, 1.0, seed=1))
    per_example = run(init, torch.tensor([0.01, 1.0]))
    torch.testing.assert_close(per_example[0], near_zero[0])
    torch.testing.assert_close(per_example[1], from_noise[1])
    assert from_noise.shape == (2, 3, 32, 32) and from_noise.min() >= 0 and from_noise.max() <= 1


def test_predict_noise_is_epsilon_for_v_prediction():
    prior = micro_prior()
    assert prior.prediction_type == "v_prediction"
    batch = make_batch(size=2)
    latents = torch.randn(2, 4, 8, 8)
    noise = torch.randn(2, 4, 8, 8)
    t = torch.tensor([100, 900])
    noisy = prior.scheduler.add_noise(latents, noise, t)
    with torch.no_grad():
        cond = prior.condition(*sample_args(batch), with_null=True)
        v = prior.guided_output(noisy, t, cond, 2.0)
        eps = prior.predict_noise(noisy, t, cond, 2.0)
    a = prior.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    x0 = a.sqrt() * noisy - (1 - a).sqrt() * v
    torch.testing.assert_close(a.sqrt() * x0 + (1 - a).sqrt() * eps, noisy, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- files


def test_save_and_load_round_trip_bit_for_bit(tmp_path):
    prior = micro_prior(seed=3)
    prior.save_pretrained(tmp_path / "prior")
    loaded = ReconFusionPrior.from_pretrained(tmp_path / "prior").eval()
    assert loaded.config == prior.config
    for name, tensor in prior.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    assert not any(p.requires_grad for p in loaded.vae.parameters())
    batch = make_batch(size=1)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    expected = prior.sample(*sample_args(batch), generator=gen())
    assert torch.equal(expected, loaded.sample(*sample_args(batch), generator=gen()))
    with torch.no_grad():
        assert torch.equal(prior.loss(batch, gen()).total, loaded.loss(batch, gen()).total)


def test_with_vae_swaps_in_a_trained_autoencoder(tmp_path):
    from reconfusion.presets import build_tiny_vae

    prior = micro_prior()
    torch.manual_seed(7)
    build_tiny_vae(MICRO).save_pretrained(tmp_path / "vae")
    swapped = prior.with_vae(tmp_path / "vae")
    assert swapped.unet is prior.unet
    assert not torch.equal(swapped.vae.encoder.conv_in.weight, prior.vae.encoder.conv_in.weight)
    assert not any(p.requires_grad for p in swapped.vae.parameters())
    assert sorted(swapped.trainable_components()) == ["image_encoder", "pixelnerf", "unet"]
    wider = dataclasses.replace(MICRO, latent_channels=8)
    with pytest.raises(ValueError, match="in_channels=8 but vae latent_channels=8"):
        prior.with_vae(build_tiny_vae(wider))
    with pytest.raises(InputError, match="vae folder is missing"):
        prior.with_vae(tmp_path / "nowhere")


def test_folder_of_another_configuration_is_a_clear_error(tmp_path):
    micro_prior().save_pretrained(tmp_path / "prior")
    PixelNeRF(feature_channels=8, encoder_channels=(8, 16), num_samples=8, hidden=32).save_pretrained(
        tmp_path / "prior" / "pixelnerf"
    )
    with pytest.raises(InputError, match=r"in_channels=8 .*feature_channels=8"):
        ReconFusionPrior.from_pretrained(tmp_path / "prior")
    with pytest.raises(InputError, match="not a saved ReconFusion prior"):
        ReconFusionPrior.from_pretrained(tmp_path)


# ----------------------------------------------------------------------------- Stable Diffusion start


def write_tiny_stable_diffusion(folder) -> UNet2DConditionModel:
    torch.manual_seed(1)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=24, attention_head_dim=2, norm_num_groups=8,
    )  # fmt: skip
    vae = AutoencoderKL(
        block_out_channels=(8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, latent_channels=4, norm_num_groups=8, layers_per_block=1,
    )  # fmt: skip
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    scheduler = PNDMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    scheduler.save_pretrained(folder / "scheduler")
    return unet.eval()


def test_start_from_stable_diffusion_folder_keeps_the_base_unet_output(tmp_path):
    base = write_tiny_stable_diffusion(tmp_path / "sd")
    encoder = OpenCLIPImageEncoder(model_name="ViT-B-32", cross_attention_dim=24, vision_cfg=TINY_CLIP, embed_dim=16)
    pixelnerf = PixelNeRF(feature_channels=6, encoder_channels=(8, 16), num_samples=8, hidden=32)
    prior = ReconFusionPrior.from_stable_diffusion(tmp_path / "sd", image_encoder=encoder, pixelnerf=pixelnerf).eval()
    assert prior.resolution == 32 and prior.prediction_type == "epsilon" and prior.unet.config.in_channels == 10
    latents, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 700])
    tokens = torch.randn(2, 3, 24)
    with torch.no_grad():
        expected = base(latents, t, encoder_hidden_states=tokens).sample
        for seed in range(2):
            features = torch.randn(2, 6, 8, 8, generator=torch.Generator().manual_seed(seed)) * 10
            torch.testing.assert_close(prior.unet_output(latents, t, features, tokens), expected, rtol=1e-5, atol=1e-6)
    batch = make_batch(size=1)
    out = prior.sample(*sample_args(batch), num_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 32, 32)
    prior.save_pretrained(tmp_path / "prior")  # the open_clip tower is saved with the prior
    loaded = ReconFusionPrior.from_pretrained(tmp_path / "prior")
    assert loaded.config.base_model == str(tmp_path / "sd") and isinstance(loaded.image_encoder, OpenCLIPImageEncoder)
    assert torch.equal(out, loaded.sample(*sample_args(batch), num_steps=2, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(InputError, match="from_stable_diffusion"):
        ReconFusionPrior.from_pretrained(tmp_path / "sd")


def test_open_clip_tower_loads_from_a_checkpoint_and_stays_frozen(tmp_path):
    import open_clip

    text = {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}
    clip = open_clip.create_model("ViT-B-32", pretrained=None, embed_dim=16, vision_cfg=TINY_CLIP, text_cfg=text)
    torch.save(clip.state_dict(), tmp_path / "clip.pt")
    encoder = OpenCLIPImageEncoder.from_open_clip(
        "ViT-B-32", str(tmp_path / "clip.pt"), cross_attention_dim=24, embed_dim=16, vision_cfg=TINY_CLIP, text_cfg=text
    )
    for name, tensor in clip.visual.state_dict().items():
        assert torch.equal(encoder.tower.state_dict()[name], tensor), name
    encoder.train()
    encoder(torch.rand(2, 3, 3, 40, 40)).sum().backward()
    assert all(p.grad is None for p in encoder.tower.parameters())
    assert encoder.projection.weight.grad is not None


# ----------------------------------------------------------------------------- bad input


def test_bad_observed_views_are_clear_errors():
    prior = micro_prior()
    batch = make_batch(size=1)
    obs, c2w, k, tc2w, tk = sample_args(batch)
    views = [obs[:, 0], obs[:, 1, :, :16]]
    with pytest.raises(ValueError, match="observed view 1 has shape"):
        prior.sample(views, c2w[:, :2], k[:, :2], tc2w, tk)
    with pytest.raises(ValueError, match=r"observed_c2w has shape \(1, 2, 4, 4\) .*V=3"):
        prior.sample(obs, c2w[:, :2], k, tc2w, tk)
    bad = c2w.clone()
    bad[0, 1, 0, 3] = float("nan")
    with pytest.raises(ValueError, match=r"non-finite .*\(0, 1\)"):
        prior.sample(obs, bad, k, tc2w, tk)
    with pytest.raises(ValueError, match="init_images"):
        prior.sample(obs, c2w, k, tc2w, tk, t_start=0.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_sample_and_loss_are_seeded_by_a_cpu_generator():
    prior = micro_prior().to("cuda")
    batch = make_batch(size=2)
    runs = [prior.sample(*sample_args(batch), generator=torch.Generator().manual_seed(0)) for _ in range(2)]
    assert runs[0].is_cuda and torch.equal(runs[0], runs[1])
    prior.train()
    losses = [prior.loss(batch, generator=torch.Generator().manual_seed(0)).total.item() for _ in range(2)]
    assert losses[0] == losses[1]
