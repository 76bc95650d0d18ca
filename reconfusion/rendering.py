"""Pure functions of image-conditioned volume rendering (used by PixelNeRF).

Depth samples along rays, positional encoding, gathering observed-view features at 3D points, the
visibility-masked mean over views, and alpha compositing. No state, no parameters: the network that
wires these together is :class:`reconfusion.pixelnerf.PixelNeRF`.

Cameras follow :mod:`reconfusion.cameras` (OpenGL camera-to-world, intrinsics in pixels of the image
they are given with, pixel centres at +0.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

from reconfusion.cameras import project


def positional_encoding(x: Float[Tensor, "*batch D"], num_frequencies: int) -> Float[Tensor, "*batch E"]:
    """NeRF's encoding ``[x, sin(2^k pi x), cos(2^k pi x)]`` for k < num_frequencies.

    Output width E = D * (1 + 2 * num_frequencies).
    """
    if num_frequencies == 0:
        return x
    freqs = math.pi * 2.0 ** torch.arange(num_frequencies, dtype=x.dtype, device=x.device)
    angles = (x[..., None, :] * freqs[:, None]).flatten(-2)
    return torch.cat([x, torch.sin(angles), torch.cos(angles)], dim=-1)


def encoding_width(dim: int, num_frequencies: int) -> int:
    """Width of :func:`positional_encoding` of a ``dim``-vector."""
    return dim * (1 + 2 * num_frequencies)


def sample_depths(
    near: Float[Tensor, "B"],
    far: Float[Tensor, "B"],
    num_rays: int,
    num_samples: int,
    stratified: bool,
    generator: torch.Generator | None = None,
) -> Float[Tensor, "B R N"]:
    """Depths of the samples along each ray: one per equal bin of [near, far].

    Stratified: uniformly at random inside each bin (training). Otherwise: the bin midpoints.
    """
    fractions = torch.arange(num_samples, dtype=near.dtype, device=near.device)
    shape = (near.shape[0], num_rays, num_samples)
    if stratified:
        offsets = torch.rand(shape, dtype=near.dtype, device=near.device, generator=generator)
    else:
        offsets = torch.full(shape, 0.5, dtype=near.dtype, device=near.device)
    width = ((far - near) / num_samples)[:, None, None]
    return near[:, None, None] + (fractions + offsets) * width


def gather_features(
    feature_maps: Float[Tensor, "B V C h w"],
    points: Float[Tensor, "B M 3"],
    c2w: Float[Tensor, "B V 4 4"],
    intrinsics: Float[Tensor, "B V 4"],
    image_hw: tuple[int, int],
) -> tuple[Float[Tensor, "B V M C"], Bool[Tensor, "B V M"]]:
    """Bilinearly sample every observed view's feature map where each world point projects.

    ``intrinsics`` refer to the observed images of size ``image_hw`` = (H, W); the feature maps may
    be smaller (normalised sampling coordinates do not depend on resolution). A point is visible in a
    view when it is in front of the camera and projects inside the image; features of invisible
    points are meaningless (clamped to the border) and must be masked by the caller.
    """
    height, width = image_hw
    batch, views, channels, h, w = feature_maps.shape
    uv, depth = project(points[:, None], c2w, intrinsics)  # (B, V, M, 2), (B, V, M)
    u, v = uv[..., 0], uv[..., 1]
    visible = (depth > 0) & (u >= 0) & (u <= width) & (v >= 0) & (v <= height)  # False for NaN too
    # align_corners=False: -1 and +1 are the outer edges of the border pixels, as u = 0 and u = W.
    grid = torch.stack([2.0 * u / width - 1.0, 2.0 * v / height - 1.0], dim=-1)
    grid = torch.nan_to_num(grid, nan=0.0).clamp(-1.5, 1.5).to(feature_maps.dtype)
    sampled = F.grid_sample(
        feature_maps.reshape(batch * views, channels, h, w),
        grid.reshape(batch * views, 1, -1, 2),
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )  # (B * V, C, 1, M)
    features = sampled.reshape(batch, views, channels, -1).transpose(-1, -2)
    return features, visible


def masked_mean(values: Float[Tensor, "B V M C"], mask: Bool[Tensor, "B V M"]) -> Float[Tensor, "B M C"]:
    """Mean over the views where ``mask`` holds; zero where no view does."""
    weights = mask.to(values.dtype)
    total = (values * weights[..., None]).sum(dim=1)
    count = weights.sum(dim=1).clamp(min=1.0)
    return total / count[..., None]


@dataclass(frozen=True)
class Composite:
    """Alpha-composited quantities along a batch of rays."""

    values: Float[Tensor, "B R C"]
    """Weighted sum of the per-sample values (transparent rays composite over zero)."""
    depth: Float[Tensor, "B R"]
    """Expected termination depth; the transmittance left at the end counts as ending at ``far``."""
    opacity: Float[Tensor, "B R"]
    """Sum of the weights, in [0, 1]."""
    weights: Float[Tensor, "B R N"]
    """Per-sample compositing weights ``T_i * alpha_i``."""


def volume_render(
    density: Float[Tensor, "B R N"],
    values: Float[Tensor, "B R N C"],
    depths: Float[Tensor, "B R N"],
    bin_width: Float[Tensor, "B"],
    far: Float[Tensor, "B"],
) -> Composite:
    """Alpha compositing with each sample standing for its bin of width ``bin_width``.

    ``alpha_i = 1 - exp(-density_i * bin_width)``, ``T_i = prod_{j<i} (1 - alpha_j)``; rays are unit
    length per depth unit (directions normalised), so densities are per world unit.
    """
    optical = density * bin_width[:, None, None]
    alpha = 1.0 - torch.exp(-optical)
    # Transmittance from the exclusive cumulative sum of optical depth (stable, no product of 1 - alpha).
    accumulated = torch.cumsum(optical, dim=-1) - optical
    weights = alpha * torch.exp(-accumulated)
    opacity = weights.sum(dim=-1)
    composited = (weights[..., None] * values).sum(dim=-2)
    depth = (weights * depths).sum(dim=-1) + (1.0 - opacity) * far[:, None]
    return Composite(values=composited, depth=depth, opacity=opacity, weights=weights)
