"""The one metrics module: PSNR, SSIM and LPIPS (with an explicit, reported backend).

Images are float tensors in [0, 1], channels first: (B, 3, H, W) or (3, H, W). Every function returns
one value per image, shape (B,) (a 0-d tensor for a single (3, H, W) image).

LPIPS backends:

- ``"lpips"``: the standard LPIPS of Zhang et al. (PyPI ``lpips``, AlexNet trunk, linear layers v0.1).
  Its AlexNet trunk comes from torchvision's ImageNet weights, which are downloaded on first use;
  offline that fails.
- ``"stlpips"``: shift-tolerant LPIPS (Ghildyal and Liu, ECCV 2022; PyPI ``stlpips-pytorch``), whose
  weights (trunk and linear layers) ship inside the wheel. Its values are NOT comparable with published
  LPIPS numbers: every report must name the backend, which is why :func:`lpips` returns it.
- ``"auto"``: ``"lpips"`` where its weights load, else ``"stlpips"`` (the fallback is logged).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import socket
import sys
import types
from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

logger = logging.getLogger(__name__)

LpipsBackend = Literal["auto", "lpips", "stlpips"]
BACKEND_NAMES = {"lpips": "lpips-alex", "stlpips": "stlpips-alex-shift-tolerant"}
"""How each backend is named in logs and result files."""


def _as_batch(image: Tensor) -> Tensor:
    if image.dim() == 3:
        return image[None]
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W) or (3, H, W), got {tuple(image.shape)}")
    return image


def _check_pair(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor, bool]:
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    single = pred.dim() == 3
    return _as_batch(pred), _as_batch(target), single


def psnr(
    pred: Float[Tensor, "*B 3 H W"], target: Float[Tensor, "*B 3 H W"], data_range: float = 1.0
) -> Float[Tensor, "*B"]:
    """Peak signal-to-noise ratio in dB, ``10 log10(range^2 / MSE)`` per image."""
    pred, target, single = _check_pair(pred, target)
    mse = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    value = 10.0 * torch.log10(data_range**2 / mse)
    return value[0] if single else value


def gaussian_window(size: int = 11, sigma: float = 1.5) -> Float[Tensor, "size"]:
    """Normalised 1-D Gaussian taps (the separable SSIM window)."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    taps = torch.exp(-(coords**2) / (2.0 * sigma**2))
    return (taps / taps.sum()).float()


def _filter(x: Tensor, taps: Tensor) -> Tensor:
    """Separable 'valid' Gaussian filtering of (B, C, H, W), channel by channel."""
    channels = x.shape[1]
    kx = taps.to(x)[None, None, None, :].expand(channels, 1, 1, -1)
    ky = taps.to(x)[None, None, :, None].expand(channels, 1, -1, 1)
    return F.conv2d(F.conv2d(x, kx, groups=channels), ky, groups=channels)


def ssim(
    pred: Float[Tensor, "*B 3 H W"],
    target: Float[Tensor, "*B 3 H W"],
    data_range: float = 1.0,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Float[Tensor, "*B"]:
    """Structural similarity (Wang et al. 2004): Gaussian window 11 / sigma 1.5, K1 0.01, K2 0.03.

    The SSIM map is computed where the window fits inside the image and averaged over pixels and
    channels - the same numbers as ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=-1)``.
    """
    pred, target, single = _check_pair(pred, target)
    if min(pred.shape[-2:]) < window:
        raise ValueError(f"SSIM needs images of at least {window}x{window} pixels, got {tuple(pred.shape[-2:])}")
    x, y = pred.double(), target.double()
    taps = gaussian_window(window, sigma).double()
    mu_x, mu_y = _filter(x, taps), _filter(y, taps)
    var_x = _filter(x * x, taps) - mu_x**2
    var_y = _filter(y * y, taps) - mu_y**2
    cov = _filter(x * y, taps) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    value = ssim_map.flatten(1).mean(1).to(pred.dtype)
    return value[0] if single else value


# --------------------------------------------------------------------------- LPIPS


class LPIPS(nn.Module):
    """A frozen LPIPS network with its backend name; ``forward(pred, target)`` takes [0, 1] images."""

    def __init__(self, net: nn.Module, backend: str) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.backend = backend
        """The backend name written into reports (see ``BACKEND_NAMES``)."""

    def train(self, mode: bool = True) -> LPIPS:
        return super().train(False)  # dropout layers stay off: this is a metric/loss, never trained

    def forward(self, pred: Float[Tensor, "*B 3 H W"], target: Float[Tensor, "*B 3 H W"]) -> Float[Tensor, "*B"]:
        pred_b, target_b, single = _check_pair(pred, target)
        param = next(self.net.parameters())
        value = self.net(pred_b.to(param), target_b.to(param), normalize=True).flatten(1).mean(1).float()
        return value[0] if single else value


def _import_stlpips() -> types.ModuleType:
    """Import ``stlpips_pytorch.stlpips``.

    stlpips-pytorch 0.0.2 imports ``torchsummary`` (and ``IPython``) at module level for debugging
    helpers it never calls on our path; where those packages are absent an empty stand-in module is
    registered so the metric itself still loads.
    """
    for name, attr in (("torchsummary", "summary"), ("IPython", "embed")):
        try:
            importlib.import_module(name)
        except ImportError:
            stand_in = types.ModuleType(name)
            setattr(stand_in, attr, _unavailable(name))
            sys.modules[name] = stand_in
    return importlib.import_module("stlpips_pytorch.stlpips")


def _unavailable(name: str):
    def fail(*args, **kwargs):
        raise ImportError(f"{name} is not installed (stlpips-pytorch's debugging helper needs it)")

    return fail


DOWNLOAD_TIMEOUT_SECONDS = 20.0
"""How long the standard LPIPS may wait on the network for torchvision's AlexNet weights."""


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """A default socket timeout, so that a download behind a silent firewall fails instead of hanging."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _build(backend: Literal["lpips", "stlpips"]) -> LPIPS:
    if backend == "lpips":
        import lpips as lpips_package

        with _socket_timeout(DOWNLOAD_TIMEOUT_SECONDS):
            network = lpips_package.LPIPS(net="alex", verbose=False)
        return LPIPS(network, BACKEND_NAMES["lpips"])
    stlpips = _import_stlpips()
    return LPIPS(stlpips.LPIPS(net="alex", variant="shift_tolerant", verbose=False), BACKEND_NAMES["stlpips"])


@functools.lru_cache(maxsize=None)
def _load_cached(backend: LpipsBackend) -> LPIPS:
    model = _build_with_fallback(backend)
    logger.info("LPIPS backend: %s", model.backend)
    return model


def _build_with_fallback(backend: LpipsBackend) -> LPIPS:
    if backend != "auto":
        return _build(backend)
    try:
        return _build("lpips")
    except Exception as err:  # noqa: BLE001 - any failure to get the torchvision trunk means: fall back
        logger.warning(
            "standard LPIPS unavailable (%s: %s); using shift-tolerant LPIPS (stlpips-pytorch), whose values "
            "are not comparable with published LPIPS",
            type(err).__name__,
            err,
        )
        return _build("stlpips")


def load_lpips(backend: LpipsBackend = "auto", device: torch.device | str = "cpu") -> LPIPS:
    """The LPIPS network for ``backend`` on ``device`` (built once per process and backend).

    Its parameters are frozen; gradients still flow to the inputs, so it doubles as a perceptual loss.
    """
    return _load_cached(backend).to(device)


def lpips(
    pred: Float[Tensor, "*B 3 H W"], target: Float[Tensor, "*B 3 H W"], backend: LpipsBackend = "auto"
) -> tuple[Float[Tensor, "*B"], str]:
    """LPIPS distance per image and the name of the backend that computed it."""
    model = load_lpips(backend, pred.device)
    return model(pred, target), model.backend
