"""TAEF2 (reconfusion.taef2): the diffusers-style class, its bundled weights and the converter."""

import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reconfusion.assets import TAEF2_PATH
from reconfusion.presets import vae_downsampling
from reconfusion.taef2 import TAEF2, round_trip_psnr

REPO = Path(__file__).resolve().parents[1]
SHARED_WEIGHTS = REPO.parent / "shared" / "weights" / "taef2"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"


def _tiny() -> TAEF2:
    return TAEF2(block_out_channels=(8, 8, 16, 16), pool_channels=16, pool_groups=4).eval()


def _converter():
    spec = importlib.util.spec_from_file_location("convert_taef2", REPO / "scripts" / "convert_taef2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _smooth_image(size: int = 64) -> torch.Tensor:
    """(1, 3, size, size) colour gradients in [0, 1]: easy for any autoencoder."""
    t = torch.linspace(0.0, 1.0, size)
    y, x = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([x, y, 0.5 + 0.4 * torch.sin(3.0 * (x + y))])[None]


def _public(config) -> dict:
    """Config entries without diffusers' private ones, tuples as lists (as JSON stores them)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items() if not k.startswith("_")}


@pytest.fixture(scope="module")
def bundled() -> TAEF2:
    return TAEF2.from_pretrained(TAEF2_PATH).eval()


def test_tiny_save_load_round_trip_is_exact(tmp_path):
    model = _tiny()
    model.save_pretrained(tmp_path)
    loaded = TAEF2.from_pretrained(tmp_path).eval()
    assert _public(loaded.config) == _public(model.config)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    x = torch.rand(2, 3, 32, 48) * 2.0 - 1.0
    with torch.no_grad():
        z = model.encode(x).latent_dist
        assert z.mean.shape == (2, 32, 4, 6)
        assert torch.equal(z.sample(torch.Generator().manual_seed(1)), z.mean)  # deterministic encoder
        assert torch.equal(loaded.encode(x).latent_dist.mean, z.mean)
        y = model.decode(z.mean).sample
        assert y.shape == x.shape and torch.isfinite(y).all()
        assert torch.allclose(y, model.decoder(z.mean) * 2.0 - 1.0)  # network's [0, 1] -> [-1, 1]
        assert torch.equal(loaded.decode(z.mean).sample, y)
        assert torch.equal(model.decode(z.mean, return_dict=False)[0], y)


def test_tiny_config_reads_like_autoencoder_kl():
    model = _tiny()
    assert vae_downsampling(model) == 8
    assert model.config.latent_channels == 32
    z = torch.randn(1, 32, 2, 2)
    assert torch.allclose(model.unscale_latents(model.scale_latents(z)), z, atol=1e-6)
    assert torch.allclose(model.scale_latents(z), z * model.config.scaling_factor)  # shift 0: the prior's formula


def test_fp16_folder_loads_as_float32(tmp_path):
    model = _tiny()
    model.half().save_pretrained(tmp_path)
    loaded = TAEF2.from_pretrained(tmp_path)
    assert loaded.dtype == torch.float32
    assert TAEF2.from_pretrained(tmp_path, torch_dtype=torch.float16).dtype == torch.float16


def test_bundle_is_small_and_licensed(bundled):
    assert (TAEF2_PATH / "LICENSE").read_text().startswith("MIT License")
    assert "measured round trip" in (TAEF2_PATH / "README.md").read_text()
    assert sum(p.stat().st_size for p in TAEF2_PATH.iterdir()) < 6_000_000
    assert bundled.dtype == torch.float32 and bundled.config.pool_channels == 256
    assert sum(p.numel() for p in bundled.parameters()) == 1_338_528 + 1_338_499


def test_bundled_follows_autoencoder_kl_range(bundled):
    """[-1, 1] in and out: right inputs reconstruct well, [0, 1] inputs (the wrong convention) do not."""
    image = _smooth_image()
    good = round_trip_psnr(bundled, image).item()
    with torch.no_grad():
        wrong = (bundled(image).sample + 1.0) / 2.0  # [0, 1] fed where [-1, 1] is expected
    bad = -10.0 * torch.log10((wrong.clamp(0, 1) - image).pow(2).mean()).item()
    assert good > 26.0 and bad < good - 6.0
    with torch.no_grad():
        out = bundled(image * 2.0 - 1.0).sample
    assert -1.2 < out.min() < -0.5 and 0.5 < out.max() < 1.2


def test_bundled_fern_round_trip(bundled, shared_data):
    """The shared README's measurement: fern, 4 images, centre crop, 64 px: 24.27 dB."""
    images = _converter().load_images(shared_data, _converter().FERN, 64)
    psnr = round_trip_psnr(bundled, images)
    assert psnr.mean().item() >= 24.0 and psnr.mean().item() == pytest.approx(24.27, abs=0.2)
    scaled = bundled.scale_latents(bundled.encode(images * 2.0 - 1.0).latent_dist.mean)
    assert 0.8 < scaled.std().item() < 1.25


def test_converter_reproduces_bundle(tmp_path):
    if not SHARED_WEIGHTS.is_dir():
        pytest.skip(f"{SHARED_WEIGHTS} not present")
    model = _converter().convert(SHARED_WEIGHTS, tmp_path / "out")
    assert model.dtype == torch.float32
    ours, bundle = load_file(tmp_path / "out" / WEIGHTS_FILE), load_file(TAEF2_PATH / WEIGHTS_FILE)
    assert ours.keys() == bundle.keys()
    assert all(torch.equal(ours[k], bundle[k]) and ours[k].dtype == torch.float16 for k in ours)
    assert (tmp_path / "out" / "LICENSE").read_bytes() == (SHARED_WEIGHTS / "LICENSE").read_bytes()


def test_converter_rejects_mismatched_state_dict(tmp_path):
    if not SHARED_WEIGHTS.is_dir():
        pytest.skip(f"{SHARED_WEIGHTS} not present")
    converter = _converter()
    for part in converter.PARTS:
        state = torch.load(SHARED_WEIGHTS / f"taef2_{part}.pth", weights_only=True)
        if part == "decoder":
            state.pop("19.bias")
        torch.save(state, tmp_path / f"taef2_{part}.pth")
    with pytest.raises(KeyError, match="decoder.19.bias"):
        converter.mapped_state_dict(tmp_path, TAEF2())


def test_small_prior_preset_runs_on_taef2(tmp_path):
    from reconfusion.prior import ReconFusionPrior

    torch.manual_seed(0)
    prior = ReconFusionPrior.from_preset("small")
    assert prior.resolution == 128 and prior.latent_resolution == 16 and type(prior.vae).__name__ == "TAEF2"
    images = torch.rand(1, 3, 128, 128)
    assert prior.encode_images(images).shape == (1, 32, 16, 16)
    assert prior.decode_latents(prior.encode_images(images)).shape == (1, 3, 128, 128)
    prior.save_pretrained(tmp_path / "small")
    loaded = ReconFusionPrior.from_pretrained(tmp_path / "small")
    assert type(loaded.vae).__name__ == "TAEF2" and loaded.config.preset == "small"
    torch.testing.assert_close(loaded.encode_images(images), prior.encode_images(images))
