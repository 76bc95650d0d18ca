"""reconfusion.metrics: PSNR, SSIM and LPIPS against known values and reference implementations."""

import math

import numpy as np
import pytest
import torch

from reconfusion import metrics


def _smooth_image(seed: int, size: int = 48) -> torch.Tensor:
    """A structured image (gradients, a disc, noise) in [0, 1], (3, size, size)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    disc = ((x - 0.5) ** 2 + (y - 0.4) ** 2 < 0.08).astype(np.float64)
    base = np.stack([x, y, 0.5 * disc + 0.25 * x * y])
    return torch.from_numpy(np.clip(base + 0.05 * rng.normal(size=base.shape), 0, 1)).float()


def test_psnr_of_known_mse():
    target = torch.full((2, 3, 8, 8), 0.5)
    pred = target + torch.tensor([0.1, 0.01]).view(2, 1, 1, 1)  # MSE 1e-2 and 1e-4
    assert torch.allclose(metrics.psnr(pred, target), torch.tensor([20.0, 40.0]), atol=1e-3)
    assert metrics.psnr(pred[0], target[0]).shape == ()


def test_ssim_identical_images_is_one():
    image = _smooth_image(0)
    assert metrics.ssim(image, image).item() == pytest.approx(1.0, abs=1e-6)


def test_ssim_matches_skimage():
    skimage_metrics = pytest.importorskip("skimage.metrics")
    a, b = _smooth_image(1), _smooth_image(2)
    b = 0.7 * b + 0.2 * a
    ours = metrics.ssim(torch.stack([a, b]), torch.stack([b, b]))
    reference = skimage_metrics.structural_similarity(
        a.permute(1, 2, 0).double().numpy(), b.permute(1, 2, 0).double().numpy(),
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1,
    )  # fmt: skip
    assert ours[0].item() == pytest.approx(reference, abs=1e-5)
    assert ours[1].item() == pytest.approx(1.0, abs=1e-6)
    assert 0.0 < reference < 0.99


def test_gaussian_window_is_normalised_and_symmetric():
    taps = metrics.gaussian_window(11, 1.5)
    assert taps.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(taps, taps.flip(0))
    assert taps.argmax().item() == 5


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        metrics.psnr(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))


def test_shift_tolerant_lpips_values_backend_and_gradient():
    a = _smooth_image(3, 32)[None]
    b = 1.0 - a.flip(-1)  # a clearly different image
    same, backend = metrics.lpips(a, a, backend="stlpips")
    assert backend == metrics.BACKEND_NAMES["stlpips"]
    assert same.item() == pytest.approx(0.0, abs=1e-6)
    model = metrics.load_lpips("stlpips")
    assert not any(p.requires_grad for p in model.parameters())
    pred = b.clone().requires_grad_(True)
    value = model(pred, a)
    value.sum().backward()
    assert value.item() > 0.05
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    # the wrapper feeds [0, 1] images to the network's [-1, 1] convention
    direct = model.net(2 * b - 1, 2 * a - 1).flatten()
    assert value.item() == pytest.approx(direct.item(), rel=1e-5)


def test_auto_backend_falls_back_to_shift_tolerant(monkeypatch, caplog):
    real_build = metrics._build

    def offline_build(backend):
        if backend == "lpips":
            raise OSError("no network: torchvision alexnet weights cannot be downloaded")
        return real_build(backend)

    metrics._load_cached.cache_clear()
    monkeypatch.setattr(metrics, "_build", offline_build)
    try:
        value, backend = metrics.lpips(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32), backend="auto")
    finally:
        metrics._load_cached.cache_clear()
    assert backend == metrics.BACKEND_NAMES["stlpips"]
    assert math.isfinite(value.item())
    assert "not comparable" in caplog.text
