"""TAEF2: a tiny autoencoder for the FLUX.2 latent space, as a diffusers-style model.

:class:`TAEF2` is a drop-in for diffusers' ``AutoencoderKL`` where the prior uses one:
``encode(x).latent_dist.mean`` / ``.sample(generator)``, ``decode(z).sample``,
``config.latent_channels``, ``config.scaling_factor`` and ``config.block_out_channels`` (whose
length gives the downsampling ``2 ** (len - 1)``, as ``presets.vae_downsampling`` reads it).

Ranges follow ``AutoencoderKL``: ``encode`` takes images in [-1, 1] and ``decode`` returns images
in about [-1, 1] (not clamped); the network itself works in [0, 1] and the conversion happens here.
Latents from ``encode`` and into ``decode`` are *unscaled*, as with ``AutoencoderKL``. The latent
scaling lives in one place, the config (``scaling_factor``, ``shift_factor``): callers scale with
:meth:`TAEF2.scale_latents` (``(z - shift) * scale``) and undo it with :meth:`TAEF2.unscale_latents`;
the prior's ``z * scaling_factor`` is the same thing while ``shift_factor`` is 0.

The encoder is deterministic: ``latent_dist`` is a point mass, so ``sample()`` returns the mean.
Architecture and weights: see ``reconfusion/assets/taef2/README.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

SCALING_FACTOR = 1.22
"""1 / std of unscaled TAEF2 latents on the fern and lego images (see the card for the measurement)."""


@dataclass
class PointLatent:
    """A deterministic ``latent_dist``: ``mean``, ``mode()`` and ``sample()`` all give the latent."""

    mean: Tensor

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        return self.mean

    def mode(self) -> Tensor:
        return self.mean


def conv3x3(n_in: int, n_out: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1, bias=bias)


class Block(nn.Module):
    """``relu(convs(x) + x)`` with three 3x3 convs (ReLU between them); with ``pool_channels`` > 0,
    ``x`` first becomes ``x + pool(x)`` where pool is 1x1 conv -> GroupNorm -> ReLU -> 1x1 conv."""

    def __init__(self, channels: int, pool_channels: int = 0, pool_groups: int = 4):
        super().__init__()
        self.conv = nn.Sequential(
            conv3x3(channels, channels), nn.ReLU(), conv3x3(channels, channels), nn.ReLU(), conv3x3(channels, channels)
        )
        self.pool = None
        if pool_channels:
            self.pool = nn.Sequential(
                nn.Conv2d(channels, pool_channels, 1, bias=False),
                nn.GroupNorm(pool_groups, pool_channels),
                nn.ReLU(),
                nn.Conv2d(pool_channels, channels, 1, bias=False),
            )

    def forward(self, x: Tensor) -> Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return torch.relu(self.conv(x) + x)


class SoftClamp(nn.Module):
    """``tanh(x / limit) * limit``: a smooth clamp to +-limit (no parameters)."""

    def __init__(self, limit: float):
        super().__init__()
        self.limit = limit

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x / self.limit) * self.limit


class TAEF2(ModelMixin, ConfigMixin):
    """Tiny FLUX.2 autoencoder; ``AutoencoderKL``'s interface and [-1, 1] image range (module docstring).

    ``block_out_channels``: channels per resolution, finest first (each later one halves the size);
    ``num_encoder_blocks`` / ``num_decoder_blocks``: residual blocks per resolution (encoder finest
    first, decoder coarsest first); ``pool_channels``: width of the pool branch in the blocks at
    latent resolution (0: none); ``latent_clamp``: the decoder's soft clamp of its input latents.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        latent_channels: int = 32,
        block_out_channels: tuple[int, ...] = (64, 64, 64, 64),
        num_encoder_blocks: tuple[int, ...] = (1, 3, 3, 3),
        num_decoder_blocks: tuple[int, ...] = (3, 3, 3, 1),
        pool_channels: int = 256,
        pool_groups: int = 4,
        latent_clamp: float = 3.0,
        scaling_factor: float = SCALING_FACTOR,
        shift_factor: float = 0.0,
    ):
        super().__init__()
        chans, last = list(block_out_channels), len(block_out_channels) - 1
        if not len(chans) == len(num_encoder_blocks) == len(num_decoder_blocks):
            raise ValueError("block_out_channels, num_encoder_blocks and num_decoder_blocks differ in length")

        def blocks(level: int, count: int) -> list[nn.Module]:
            pool = pool_channels if level == last else 0
            return [Block(chans[level], pool, pool_groups) for _ in range(count)]

        enc: list[nn.Module] = [conv3x3(in_channels, chans[0])] + blocks(0, num_encoder_blocks[0])
        for level in range(1, last + 1):
            enc += [conv3x3(chans[level - 1], chans[level], stride=2, bias=False)]
            enc += blocks(level, num_encoder_blocks[level])
        self.encoder = nn.Sequential(*enc, conv3x3(chans[last], latent_channels))

        dec: list[nn.Module] = [SoftClamp(latent_clamp), conv3x3(latent_channels, chans[last]), nn.ReLU()]
        for step, level in enumerate(range(last, -1, -1)):
            if step:
                dec += [nn.Upsample(scale_factor=2), conv3x3(chans[level + 1], chans[level], bias=False)]
            dec += blocks(level, num_decoder_blocks[step])
        self.decoder = nn.Sequential(*dec, conv3x3(chans[0], out_channels))

    @classmethod
    def from_pretrained(cls, *args, **kwargs) -> TAEF2:
        """diffusers' loader, but in float32 unless ``torch_dtype`` says otherwise (the bundle is fp16)."""
        kwargs.setdefault("torch_dtype", torch.float32)
        return super().from_pretrained(*args, **kwargs)

    def encode(self, images: Tensor, return_dict: bool = True) -> AutoencoderKLOutput | tuple[PointLatent]:
        """Unscaled latents (B, latent_channels, H/8, W/8) of images in [-1, 1], as ``.latent_dist``."""
        dist = PointLatent(self.encoder((images + 1.0) / 2.0))
        return AutoencoderKLOutput(latent_dist=dist) if return_dict else (dist,)

    def decode(self, latents: Tensor, return_dict: bool = True, generator=None) -> DecoderOutput | tuple[Tensor]:
        """Images in about [-1, 1] (unclamped) from unscaled latents, as ``.sample`` (``generator``: unused,
        kept for ``AutoencoderKL``'s signature)."""
        images = self.decoder(latents) * 2.0 - 1.0
        return DecoderOutput(sample=images) if return_dict else (images,)

    def forward(self, sample: Tensor, return_dict: bool = True) -> DecoderOutput | tuple[Tensor]:
        """Round trip: ``decode(encode(sample).latent_dist.mean)``, both in [-1, 1]."""
        return self.decode(self.encode(sample).latent_dist.mean, return_dict=return_dict)

    def scale_latents(self, latents: Tensor) -> Tensor:
        """``(z - shift_factor) * scaling_factor``: unit-variance latents for a diffusion model."""
        return (latents - self.config.shift_factor) * self.config.scaling_factor

    def unscale_latents(self, latents: Tensor) -> Tensor:
        """Inverse of :meth:`scale_latents`."""
        return latents / self.config.scaling_factor + self.config.shift_factor


@torch.no_grad()
def round_trip_psnr(vae: TAEF2, images: Tensor) -> Tensor:
    """Per-image PSNR (dB) of encode -> decode on images in [0, 1], output clamped to [0, 1]."""
    out = (vae(images.to(vae.dtype) * 2.0 - 1.0).sample.float() + 1.0) / 2.0
    mse = (out.clamp(0.0, 1.0) - images.float()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse)


@torch.no_grad()
def latent_std(vae: TAEF2, images: Tensor) -> tuple[float, float]:
    """Mean and std over all entries of the unscaled latents of images in [0, 1]."""
    latents = vae.encode(images.to(vae.dtype) * 2.0 - 1.0).latent_dist.mean.float()
    return latents.mean().item(), latents.std().item()
