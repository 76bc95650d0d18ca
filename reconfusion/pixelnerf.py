"""PixelNeRF: the prior's 3D-aware conditioning branch (RECONFUSION.md section 1).

A small convolutional encoder turns each observed image into a feature map. For each pixel of the
target view (at the latent resolution of the diffusion model) points are sampled along the ray between
near and far, projected into every observed view, and the observed feature maps are sampled bilinearly
there. Each point's position and the ray direction, expressed in that observed camera's frame and
positionally encoded, join the sampled features in an MLP applied per view. The per-view results are
averaged over the views that see the point, decoded to density, a feature vector and RGB, and volume
rendered to a feature map ``f``, an RGB image ``c``, depth and opacity.

Cameras follow :mod:`reconfusion.cameras`. They are expected normalised as in the paper
(:func:`reconfusion.cameras.normalize_cameras`: focus point at the origin, camera centres in
[-1, 1]^3), for which the default depth range [DEFAULT_NEAR, DEFAULT_FAR] covers the scene.

Usage::

    model = PixelNeRF(feature_channels=16)
    out = model(images, c2w, intrinsics, target_c2w, target_intrinsics, height=16, width=16)
    out.features  # (B, 16, 16, 16), conditioning for the U-Net
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from jaxtyping import Bool, Float
from torch import Tensor, nn

from reconfusion.cameras import pixel_rays, world_to_camera
from reconfusion.rendering import (
    encoding_width,
    gather_features,
    masked_mean,
    positional_encoding,
    sample_depths,
    volume_render,
)

DEFAULT_NEAR = 0.1
"""Default near depth for normalised cameras (centres in [-1, 1]^3, focus at the origin)."""
DEFAULT_FAR = 3.0
"""Default far depth: past the origin from any normalised camera centre (at most sqrt(3) away)."""
_DENSITY_SHIFT = -1.0
"""Added to the raw density before softplus, so an untrained model starts mostly transparent."""


@dataclass(frozen=True)
class PixelNeRFOutput:
    """What one PixelNeRF render returns, at the requested (latent) resolution."""

    features: Float[Tensor, "B C H W"]
    """Volume-rendered feature map f (C = feature_channels), the U-Net's extra input channels."""
    rgb: Float[Tensor, "B 3 H W"]
    """Volume-rendered colour c in [0, 1] (composited over black)."""
    depth: Float[Tensor, "B H W"]
    """Expected ray termination depth; transparent rays count as ending at far."""
    opacity: Float[Tensor, "B H W"]
    """Accumulated opacity in [0, 1]."""


def _conv_stage(in_channels: int, out_channels: int) -> nn.Sequential:
    """One encoder stage: a stride-2 conv, normalisation, a second conv."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1),
        nn.GroupNorm(math.gcd(8, out_channels), out_channels),
        nn.SiLU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1),
        nn.SiLU(),
    )


def _mlp(in_channels: int, hidden: int, out_channels: int, layers: int, final_activation: bool) -> nn.Sequential:
    """``layers`` linear layers with ReLU in between (and after the last one when asked)."""
    widths = [in_channels] + [hidden] * (layers - 1) + [out_channels]
    modules: list[nn.Module] = []
    for i in range(layers):
        modules.append(nn.Linear(widths[i], widths[i + 1]))
        if i < layers - 1 or final_activation:
            modules.append(nn.ReLU())
    return nn.Sequential(*modules)


class _ConvEncoder(nn.Module):
    """Multi-scale conv encoder: every stage halves the resolution; all stages are upsampled to the
    first stage's size and concatenated with the image resized to it."""

    def __init__(self, channels: Sequence[int]):
        super().__init__()
        widths = [3, *channels]
        self.stages = nn.ModuleList(_conv_stage(widths[i], widths[i + 1]) for i in range(len(channels)))
        self.out_channels = sum(channels) + 3

    def forward(self, images: Float[Tensor, "N 3 H W"]) -> Float[Tensor, "N C h w"]:
        h = images * 2.0 - 1.0
        scales = []
        for stage in self.stages:
            h = stage(h)
            scales.append(h)
        size = scales[0].shape[-2:]
        colour = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
        upsampled = [F.interpolate(s, size=size, mode="bilinear", align_corners=False) for s in scales[1:]]
        return torch.cat([scales[0], *upsampled, colour], dim=1)


class _PointNetwork(nn.Module):
    """Per-view MLP, visibility-masked mean over views, decoder to raw (density, features, rgb)."""

    def __init__(self, in_channels: int, hidden: int, out_channels: int, view_layers: int, decoder_layers: int):
        super().__init__()
        self.view_mlp = _mlp(in_channels, hidden, hidden, view_layers, final_activation=True)
        # The decoder also sees the fraction of views that see the point (0 where none does).
        self.decoder = _mlp(hidden + 1, hidden, out_channels, decoder_layers, final_activation=False)

    def forward(self, inputs: Float[Tensor, "B V M I"], visible: Bool[Tensor, "B V M"]) -> Float[Tensor, "B M O"]:
        pooled = masked_mean(self.view_mlp(inputs), visible)
        seen = visible.to(pooled.dtype).mean(dim=1)[..., None]
        return self.decoder(torch.cat([pooled, seen], dim=-1))


class PixelNeRF(ModelMixin, ConfigMixin):
    """Image-conditioned radiance field rendered at the latent resolution (see module docstring)."""

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        feature_channels: int = 16,
        encoder_channels: tuple[int, ...] = (32, 64),
        num_samples: int = 32,
        hidden: int = 64,
        num_frequencies: int = 6,
        num_direction_frequencies: int = 4,
        view_layers: int = 2,
        decoder_layers: int = 2,
    ):
        super().__init__()
        if len(encoder_channels) == 0 or min(encoder_channels) <= 0:
            raise ValueError(f"encoder_channels must be a non-empty tuple of positive ints, got {encoder_channels}")
        if min(feature_channels, num_samples, hidden, view_layers, decoder_layers) <= 0:
            raise ValueError("feature_channels, num_samples, hidden, view_layers and decoder_layers must be positive")
        self.encoder = _ConvEncoder(tuple(encoder_channels))
        in_channels = (
            self.encoder.out_channels
            + encoding_width(3, num_frequencies)
            + encoding_width(3, num_direction_frequencies)
        )
        self.point_network = _PointNetwork(in_channels, hidden, 1 + feature_channels + 3, view_layers, decoder_layers)
        self.gradient_checkpointing = False

    def encode(self, images: Float[Tensor, "B V 3 H W"]) -> Float[Tensor, "B V C h w"]:
        """Feature maps of the observed images (h, w = ceil(H / 2), ceil(W / 2))."""
        batch, views = images.shape[:2]
        maps = self.encoder(images.flatten(0, 1).to(self.dtype))
        return maps.unflatten(0, (batch, views))

    def forward(
        self,
        observed_images: Float[Tensor, "B V 3 H W"],
        observed_c2w: Float[Tensor, "B V 4 4"],
        observed_intrinsics: Float[Tensor, "B V 4"],
        target_c2w: Float[Tensor, "B 4 4"],
        target_intrinsics: Float[Tensor, "B 4"],
        height: int,
        width: int,
        near: float | Tensor = DEFAULT_NEAR,
        far: float | Tensor = DEFAULT_FAR,
        chunk: int = 8192,
        stratified: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> PixelNeRFOutput:
        """Render the target cameras at ``height`` x ``width`` from the observed views.

        ``observed_intrinsics`` refer to the observed images; ``target_intrinsics`` to the output
        resolution. ``near``/``far``: floats or (B,) tensors. ``chunk``: rays per network evaluation
        (over the whole batch), bounding memory. ``stratified`` (default: ``self.training``) jitters
        the samples inside their depth bins, drawing from ``generator``.
        """
        _check_observed(observed_images, observed_c2w, observed_intrinsics)
        feature_maps = self.encode(observed_images)
        image_hw = (observed_images.shape[-2], observed_images.shape[-1])
        return self.render(
            feature_maps, observed_c2w, observed_intrinsics, image_hw, target_c2w, target_intrinsics,
            height, width, near, far, chunk=chunk, stratified=stratified, generator=generator,
        )  # fmt: skip

    def render(
        self,
        feature_maps: Float[Tensor, "B V C h w"],
        observed_c2w: Float[Tensor, "B V 4 4"],
        observed_intrinsics: Float[Tensor, "B V 4"],
        image_hw: tuple[int, int],
        target_c2w: Float[Tensor, "B 4 4"],
        target_intrinsics: Float[Tensor, "B 4"],
        height: int,
        width: int,
        near: float | Tensor = DEFAULT_NEAR,
        far: float | Tensor = DEFAULT_FAR,
        chunk: int = 8192,
        stratified: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> PixelNeRFOutput:
        """Render from feature maps already computed by :meth:`encode` (e.g. several targets per encode)."""
        batch = feature_maps.shape[0]
        near_t, far_t = _check_render(
            feature_maps, observed_c2w, observed_intrinsics, target_c2w, target_intrinsics,
            height, width, near, far, chunk,
        )  # fmt: skip
        obs_c2w, obs_intr = observed_c2w.float(), observed_intrinsics.float()
        origins, dirs = pixel_rays(target_c2w.float(), target_intrinsics.float(), height, width)
        origins, dirs = origins.reshape(batch, -1, 3), dirs.reshape(batch, -1, 3)
        num_rays, num_samples = origins.shape[1], self.config.num_samples
        stratified = self.training if stratified is None else stratified
        depths = sample_depths(near_t, far_t, num_rays, num_samples, stratified, generator)
        bin_width = (far_t - near_t) / num_samples
        step = max(1, chunk // batch)
        pieces = [
            self._render_rays(
                feature_maps, obs_c2w, obs_intr, image_hw,
                origins[:, s : s + step], dirs[:, s : s + step], depths[:, s : s + step], bin_width, far_t,
            )
            for s in range(0, num_rays, step)
        ]  # fmt: skip
        values = torch.cat([p.values for p in pieces], dim=1).transpose(1, 2).unflatten(-1, (height, width))
        return PixelNeRFOutput(
            features=values[:, 3:],
            rgb=values[:, :3],
            depth=torch.cat([p.depth for p in pieces], dim=1).unflatten(-1, (height, width)),
            opacity=torch.cat([p.opacity for p in pieces], dim=1).unflatten(-1, (height, width)),
        )

    def _render_rays(self, feature_maps, obs_c2w, obs_intr, image_hw, origins, dirs, depths, bin_width, far):
        """One chunk: (B, r) rays with (B, r, N) sample depths -> composited [rgb, features]."""
        batch, rays, samples = depths.shape
        points = (origins[:, :, None] + depths[..., None] * dirs[:, :, None]).reshape(batch, -1, 3)
        features, visible = gather_features(feature_maps, points, obs_c2w, obs_intr, image_hw)
        pos_cam = world_to_camera(points[:, None], obs_c2w)  # (B, V, M, 3)
        # Directions only rotate: d_cam = R^T d, written as a row vector times R.
        dir_cam = dirs[:, None] @ obs_c2w[..., :3, :3]  # (B, V, r, 3)
        dir_enc = positional_encoding(dir_cam, self.config.num_direction_frequencies)
        dir_enc = dir_enc[:, :, :, None].expand(-1, -1, -1, samples, -1).flatten(2, 3)
        inputs = torch.cat([features, positional_encoding(pos_cam, self.config.num_frequencies).to(features.dtype),
                            dir_enc.to(features.dtype)], dim=-1)  # fmt: skip
        if self.gradient_checkpointing and torch.is_grad_enabled():
            raw = self._gradient_checkpointing_func(self.point_network, inputs, visible)
        else:
            raw = self.point_network(inputs, visible)
        raw = raw.float().reshape(batch, rays, samples, -1)
        density = F.softplus(raw[..., 0] + _DENSITY_SHIFT)
        values = torch.cat([torch.sigmoid(raw[..., 1:4]), raw[..., 4:]], dim=-1)
        return volume_render(density, values, depths, bin_width, far)


def _check_observed(images: Tensor, c2w: Tensor, intrinsics: Tensor) -> None:
    """Observed images (B, V, 3, H, W) must match the cameras' batch and view counts."""
    if images.ndim != 5 or images.shape[2] != 3:
        raise ValueError(f"observed_images must have shape (B, V, 3, H, W), got {tuple(images.shape)}")
    if tuple(c2w.shape[:2]) != tuple(images.shape[:2]) or tuple(intrinsics.shape[:2]) != tuple(images.shape[:2]):
        raise ValueError(
            f"observed cameras and images disagree: images have (B, V) = {tuple(images.shape[:2])}, "
            f"observed_c2w {tuple(c2w.shape[:2])}, observed_intrinsics {tuple(intrinsics.shape[:2])}; "
            "pass one camera per observed image"
        )


def _as_depth(value: float | Tensor, batch: int, name: str) -> Tensor:
    """A float or (B,) / scalar tensor -> float32 (B,) tensor."""
    tensor = torch.as_tensor(value, dtype=torch.float32).flatten()
    if tensor.numel() == 1:
        tensor = tensor.expand(batch)
    if tensor.shape != (batch,):
        raise ValueError(f"{name} must be a float or a tensor of shape ({batch},), got shape {tuple(tensor.shape)}")
    return tensor


def _check_render(feature_maps, obs_c2w, obs_intr, target_c2w, target_intr, height, width, near, far, chunk):
    """Validate shapes, finiteness and the depth range; returns near, far as (B,) tensors."""
    batch, views = feature_maps.shape[:2]
    expected = {
        "observed_c2w": (obs_c2w, (batch, views, 4, 4)),
        "observed_intrinsics": (obs_intr, (batch, views, 4)),
        "target_c2w": (target_c2w, (batch, 4, 4)),
        "target_intrinsics": (target_intr, (batch, 4)),
    }
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} for B={batch}, V={views}; got {tuple(tensor.shape)}")
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{name} contains non-finite values (NaN or inf); check the camera poses")
    for name, intr in (("observed_intrinsics", obs_intr), ("target_intrinsics", target_intr)):
        if not (intr[..., :2] > 0).all():
            raise ValueError(f"{name}: focal lengths fx, fy must be positive")
    if int(height) <= 0 or int(width) <= 0 or int(chunk) <= 0:
        raise ValueError(f"height, width and chunk must be positive, got {height}, {width}, {chunk}")
    near_t = _as_depth(near, batch, "near").to(feature_maps.device)
    far_t = _as_depth(far, batch, "far").to(feature_maps.device)
    if not (torch.isfinite(near_t).all() and torch.isfinite(far_t).all() and (near_t >= 0).all()):
        raise ValueError(f"near/far must be finite with near >= 0, got near={near_t.tolist()}, far={far_t.tolist()}")
    if not (far_t > near_t).all():
        raise ValueError(f"far must exceed near, got near={near_t.tolist()}, far={far_t.tolist()}")
    return near_t, far_t
