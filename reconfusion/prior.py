"""The ReconFusion prior: a PixelNeRF-conditioned latent diffusion model (RECONFUSION.md section 1).

:class:`ReconFusionPrior` holds five components, as a diffusers pipeline does: ``pixelnerf``
(:class:`~reconfusion.pixelnerf.PixelNeRF`), ``image_encoder`` (one token per observed view,
:mod:`reconfusion.conditioning`), ``unet`` (UNet2DConditionModel taking the noisy latent concatenated
with PixelNeRF's feature map), ``vae`` (AutoencoderKL, frozen) and ``scheduler`` (DDPMScheduler for
training; sampling uses a DDIMScheduler built from its config).

- :meth:`ReconFusionPrior.loss`: L_diff + lambda * L_PixelNeRF, observed views dropped per example.
- :meth:`ReconFusionPrior.sample`: the annealed multistep sample of section 2: encode an image, noise
  it to ``t_start``, ``num_steps`` DDIM steps to 0 with classifier-free guidance.
- :meth:`ReconFusionPrior.save_pretrained` / :meth:`ReconFusionPrior.from_pretrained`: one folder.

Dropping the observed views (classifier-free guidance) zeroes their images, which PixelNeRF then sees,
and replaces their tokens by the null (zero) token. The unconditional branch of guidance is the same.

Usage::

    prior = ReconFusionPrior.from_preset("tiny")            # or .from_pretrained(folder)
    losses = prior.loss(batch)                                # PriorBatch of tensors
    images = prior.sample(obs, obs_c2w, obs_k, c2w, k, init_images=x, t_start=0.5)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from diffusers.utils.torch_utils import randn_tensor
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from reconfusion.cameras import scale_intrinsics
from reconfusion.conditioning import PriorCondition, check_views, null_tokens, stack_views
from reconfusion.pixelnerf import PixelNeRF
from reconfusion.sampling import ddim_update, generator_on, prediction_of, sampling_timesteps, split_prediction, uniform
from reconfusion.taef2 import TAEF2
from reconfusion.files import read_json
from reconfusion.metrics import load_lpips
from reconfusion.presets import (
    COMPONENT_CLASSES,
    REPAIR_PRESET,
    SMALL_PRESET,
    PriorConfig,
    StableDiffusionPreset,
    TinyPreset,
    build_small_components,
    build_tiny_components,
    check_components,
    load_component,
    load_prior_folder,
    load_stable_diffusion_components,
    save_prior_folder,
    vae_downsampling,
    widen_conv_in,
)


@dataclass(frozen=True)
class PriorBatch:
    """One training batch: V observed views and one target view per example, images in [0, 1]."""

    observed_images: Float[Tensor, "B V 3 H W"]
    """Observed views (any common size; their intrinsics refer to that size)."""
    observed_c2w: Float[Tensor, "B V 4 4"]
    """OpenGL camera-to-world matrices of the observed views (normalised cameras)."""
    observed_intrinsics: Float[Tensor, "B V 4"]
    """fx, fy, cx, cy of the observed views, in pixels of observed_images."""
    target_image: Float[Tensor, "B 3 R R"]
    """The image to denoise, at the prior's resolution R."""
    target_c2w: Float[Tensor, "B 4 4"]
    """Camera-to-world of the target view."""
    target_intrinsics: Float[Tensor, "B 4"]
    """Intrinsics of the target view, in pixels of target_image."""
    near: Float[Tensor, "B"]
    """Near depth of PixelNeRF rays per example."""
    far: Float[Tensor, "B"]
    """Far depth of PixelNeRF rays per example."""
    rendering: Float[Tensor, "B 3 R R"] | None = None
    """The rendering of the target view to repair, aligned with target_image (a repairing prior only)."""
    warped_images: Float[Tensor, "B V 3 R R"] | None = None
    """Observed views warped into the target with the rendering's depth, nearest first (reconfusion.warping; a
    repairing prior with ``warped_views`` only; None: no view shows the target)."""
    warped_valid: Float[Tensor, "B V 1 R R"] | None = None
    """Where each warped view is valid (1) or not (0)."""


@dataclass(frozen=True)
class PriorLosses:
    """What :meth:`ReconFusionPrior.loss` returns."""

    total: Float[Tensor, ""]
    """L_diff + lambda * L_PixelNeRF (+ the pixel and perceptual terms times their weights), to backpropagate."""
    diffusion: Float[Tensor, ""]
    """L_diff: MSE between the U-Net output and its target (epsilon or v, the scheduler's prediction type)."""
    pixelnerf: Float[Tensor, ""]
    """L_PixelNeRF: MSE between PixelNeRF's RGB and the target at latent resolution (kept examples only)."""
    dropped: Bool[Tensor, "B"]
    """Which examples had their observed views dropped."""
    timesteps: Int[Tensor, "B"]
    """The diffusion timesteps drawn."""
    pixelnerf_rgb: Float[Tensor, "B 3 h w"]
    """PixelNeRF's RGB at latent resolution (detached), for logging."""
    pixel: Float[Tensor, ""] | None = None
    """A repairing prior's weighted MSE between its decoded prediction and the photograph (None: not computed)."""
    perceptual: Float[Tensor, ""] | None = None
    """A repairing prior's weighted LPIPS between its decoded prediction and the photograph (None: not computed)."""


def min_snr_weight(alpha_bar: Tensor, gamma: float, prediction_type: str) -> Tensor:
    """Min-SNR-gamma weights (Hang et al. 2023) of a loss on the given prediction type: min(SNR, gamma) over
    SNR + 1 (v), SNR (epsilon) or gamma (sample, so that low noise weighs 1); ones when gamma is 0."""
    if gamma <= 0:
        return torch.ones_like(alpha_bar)
    snr = alpha_bar / (1 - alpha_bar)
    scale = {"v_prediction": snr + 1, "epsilon": snr, "sample": torch.full_like(snr, gamma)}[prediction_type]
    return snr.clamp(max=gamma) / scale


class ReconFusionPrior(nn.Module):
    """PixelNeRF-conditioned latent diffusion prior (see the module docstring)."""

    def __init__(
        self,
        pixelnerf: PixelNeRF,
        image_encoder: nn.Module,
        unet: UNet2DConditionModel,
        vae: AutoencoderKL,
        scheduler: DDPMScheduler,
        config: PriorConfig = PriorConfig(),
    ):
        super().__init__()
        problems = check_components(pixelnerf, image_encoder, unet, vae, scheduler, config)
        if problems:
            raise ValueError("the prior's components do not fit together: " + "; ".join(problems))
        self.pixelnerf, self.image_encoder, self.unet, self.vae = pixelnerf, image_encoder, unet, vae
        self.scheduler = scheduler
        self.sampler = DDIMScheduler.from_config(scheduler.config)
        self.config = config
        self.vae.requires_grad_(False)
        self.vae.eval()

    # ------------------------------------------------------------------ construction and files

    @classmethod
    def from_preset(cls, name: str = "tiny", **kwargs) -> ReconFusionPrior:
        """``"tiny"`` (kwargs: ``preset=TinyPreset(...)``, ``vae=trained AutoencoderKL``), ``"small"`` (128 px
        on the bundled pretrained TAEF2 autoencoder), ``"repair"`` (the small one repairing renderings) or ``"sd"``
        (kwargs as :meth:`from_stable_diffusion`)."""
        if name == "tiny":
            preset = kwargs.pop("preset", TinyPreset())
            config = dataclasses.replace(preset.prior, resolution=preset.resolution, preset="tiny")
            return cls(**build_tiny_components(preset, **kwargs), config=config)
        if name in ("small", "repair"):
            preset = SMALL_PRESET if name == "small" else REPAIR_PRESET
            config = dataclasses.replace(preset.prior, resolution=preset.resolution, preset=name)
            return cls(**build_small_components(preset), config=config)
        if name == "sd":
            return cls.from_stable_diffusion(**kwargs)
        raise ValueError(f"unknown prior preset {name!r}; choose 'tiny', 'small', 'repair' or 'sd'")

    @classmethod
    def from_stable_diffusion(
        cls,
        base: str | Path | None = None,
        *,
        preset: StableDiffusionPreset = StableDiffusionPreset(),
        image_encoder: nn.Module | None = None,
        pixelnerf: PixelNeRF | None = None,
        torch_dtype: torch.dtype | None = None,
    ) -> ReconFusionPrior:
        """Start from a Stable Diffusion folder or hub id (U-Net widened with zero weights for f)."""
        preset = preset if base is None else dataclasses.replace(preset, base=str(base))
        components, resolution = load_stable_diffusion_components(preset, image_encoder, pixelnerf, torch_dtype)
        config = dataclasses.replace(preset.prior, resolution=resolution, base_model=preset.base, preset="sd")
        return cls(**components, config=config)

    def save_pretrained(self, path: str | Path, overwrite: bool = True) -> None:
        """One folder: a subfolder per component (safetensors + config.json) and reconfusion_prior.json."""
        save_prior_folder(self._components(), self.config, Path(path), overwrite)

    @classmethod
    def from_pretrained(cls, path: str | Path, torch_dtype: torch.dtype | None = None) -> ReconFusionPrior:
        """Load a folder written by :meth:`save_pretrained` (a local folder or a hub id)."""
        components, config = load_prior_folder(path, torch_dtype)
        return cls(**components, config=config)

    def with_vae(self, vae: AutoencoderKL | TAEF2 | str | Path) -> ReconFusionPrior:
        """The same components with another autoencoder (an AutoencoderKL, a TAEF2 or the save_pretrained
        folder of either), e.g. the one trained by train_prior's VAE stage."""
        if isinstance(vae, (str, Path)):
            config_file = Path(vae) / "config.json"
            kind = read_json(config_file).get("_class_name") if config_file.is_file() else None
            vae = load_component(TAEF2 if kind == "TAEF2" else AutoencoderKL, Path(vae), "vae")
        return type(self)(**dict(self._components(), vae=vae), config=self.config)

    def with_warped_views(self, count: int) -> ReconFusionPrior:
        """This repairing prior taking ``count`` warped views (more than it takes now): its U-Net's first convolution
        widened with zero weights, so that it repairs exactly as before until training teaches it to use them."""
        extra = count - self.config.warped_views
        if not self.config.repairs or extra < 0:
            raise ValueError(f"with_warped_views({count}): a repairing prior taking at most {count} warped views "
                             f"is needed, this one takes {self.config.warped_views} (repairs={self.config.repairs})")  # fmt: skip
        unet = widen_conv_in(self.unet, extra * (self.vae.config.latent_channels + 1))
        config = dataclasses.replace(self.config, warped_views=count)
        return type(self)(**dict(self._components(), unet=unet), config=config)

    def trainable_components(self) -> dict[str, nn.Module]:
        """What the prior objective trains: PixelNeRF, the image encoder (its open_clip tower stays frozen)
        and the U-Net. The VAE is frozen."""
        return {"pixelnerf": self.pixelnerf, "image_encoder": self.image_encoder, "unet": self.unet}

    def _components(self) -> dict:
        return {name: getattr(self, name) for name in COMPONENT_CLASSES}

    def train(self, mode: bool = True) -> ReconFusionPrior:
        """Train mode for the trainable parts; the frozen VAE stays in eval mode."""
        super().train(mode)
        self.vae.eval()
        return self

    # ------------------------------------------------------------------ properties

    @property
    def resolution(self) -> int:
        return self.config.resolution

    @property
    def latent_resolution(self) -> int:
        return self.config.resolution // vae_downsampling(self.vae)

    @property
    def prediction_type(self) -> str:
        return self.scheduler.config.prediction_type

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    # ------------------------------------------------------------------ building blocks

    def encode_images(self, images: Float[Tensor, "B 3 R R"]) -> Float[Tensor, "B c h w"]:
        """Scaled latents (the VAE posterior's mean) of images in [0, 1]; differentiable."""
        posterior = self.vae.encode(images.to(self.vae.dtype) * 2.0 - 1.0).latent_dist
        return posterior.mean * self.vae.config.scaling_factor

    def decode_latents(self, latents: Float[Tensor, "B c h w"], clamp: bool = True) -> Float[Tensor, "B 3 R R"]:
        """Images in [0, 1] from scaled latents (``clamp=False``: not clipped, for losses that need its gradient)."""
        images = self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor).sample
        images = (images.float() + 1.0) / 2.0
        return images.clamp(0.0, 1.0) if clamp else images

    def condition(
        self,
        observed_images: Float[Tensor, "B V 3 H W"] | list[Tensor],
        observed_c2w: Float[Tensor, "B V 4 4"],
        observed_intrinsics: Float[Tensor, "B V 4"],
        target_c2w: Float[Tensor, "B 4 4"],
        target_intrinsics: Float[Tensor, "B 4"],
        *,
        near: float | Tensor | None = None,
        far: float | Tensor | None = None,
        dropped: Bool[Tensor, "B"] | None = None,
        with_null: bool = False,
        stratified: bool | None = None,
        generator: torch.Generator | None = None,
        rendering: Float[Tensor, "B 3 R R"] | None = None,
        rendering_latents: Tensor | None = None,
        warped_images: Float[Tensor, "B V 3 R R"] | None = None,
        warped_valid: Float[Tensor, "B V 1 R R"] | None = None,
    ) -> PriorCondition:
        """PixelNeRF features and image tokens for target cameras given at the prior's resolution.

        ``dropped`` examples get zeroed images and null tokens; ``with_null`` also renders the
        all-dropped features for guidance. ``stratified`` PixelNeRF samples default to training mode.
        A repairing prior needs the ``rendering`` to repair (images in [0, 1] at the prior's resolution), and one with
        ``warped_views`` takes the observed views warped into it (:mod:`reconfusion.warping`; without them, or where
        they are invalid, the prior repairs as if no view showed those pixels; dropped examples lose them too).
        ``rendering_latents``: the rendering's :meth:`encode_images`, where the caller has it already.
        """
        if self.config.repairs and rendering is None:
            raise ValueError("this prior repairs renderings: pass the rendering of the target view")
        images = stack_views(observed_images).to(self.device, self.dtype)
        check_views(images, observed_c2w, observed_intrinsics, target_c2w, target_intrinsics)
        batch = images.shape[0]
        dropped = torch.zeros(batch, dtype=torch.bool, device=self.device) if dropped is None else dropped
        images = images * (~dropped).to(images.dtype)[:, None, None, None, None]
        size, scale = self.latent_resolution, self.latent_resolution / self.resolution
        near = self.config.near if near is None else near
        far = self.config.far if far is None else far
        cams = (observed_c2w, observed_intrinsics, target_c2w, scale_intrinsics(target_intrinsics, scale, scale))
        cams = tuple(c.to(self.device, torch.float32) for c in cams)
        if with_null:  # one PixelNeRF call renders the conditional and the all-dropped batch
            images = torch.cat([images, torch.zeros_like(images)])
            cams = tuple(torch.cat([c, c]) for c in cams)
            near, far = (torch.cat([d, d]) if isinstance(d, Tensor) and d.ndim else d for d in (near, far))
        rendered = self.pixelnerf(
            images, *cams, height=size, width=size, near=near, far=far, stratified=stratified,
            generator=generator_on(generator, self.device),
        )  # fmt: skip
        features = rendered.features.to(self.dtype)
        tokens = null_tokens(self.image_encoder(images[:batch]).to(self.dtype), dropped)
        latent = None
        if self.config.repairs:
            latent = self.encode_images(rendering.to(self.device)) if rendering_latents is None else rendering_latents
        warped, null_warped = self._warped_latents(latent, rendering, warped_images, warped_valid, dropped)
        return PriorCondition(
            features=features[:batch],
            tokens=tokens,
            rgb=rendered.rgb[:batch],
            null_features=features[batch:] if with_null else None,
            rendering=latent,
            warped=warped,
            null_warped=null_warped if with_null else None,
        )

    @torch.no_grad()
    def _warped_latents(self, latent: Tensor | None, rendering: Tensor | None, images: Tensor | None,
                        valid: Tensor | None, dropped: Tensor) -> tuple[Tensor | None, Tensor | None]:  # fmt: skip
        """(the warped views' channels, the same without evidence) for the U-Net: per view, the latent of the view
        with the rendering where it is invalid, then its validity at latent resolution. Without evidence every view
        is the rendering, invalid everywhere."""
        count = self.config.warped_views
        if not count:
            return None, None
        size = latent.shape[-1]
        nothing = torch.cat([latent, latent.new_zeros(latent.shape[0], 1, size, size)], 1).repeat(1, count, 1, 1)
        if images is None:
            return nothing, nothing
        if valid is None or images.shape[:2] != valid.shape[:2] or images.shape[-2:] != rendering.shape[-2:]:
            raise ValueError(f"warped_images {tuple(images.shape)} and warped_valid "
                             f"{None if valid is None else tuple(valid.shape)} must be (B, V, 3 | 1, R, R) with R the "
                             f"rendering's size {tuple(rendering.shape[-2:])}")  # fmt: skip
        images, valid = images[:, :count].to(self.device, self.dtype), valid[:, :count].to(self.device, self.dtype)
        missing = count - images.shape[1]
        if missing > 0:  # fewer observed views than the prior takes: the rest show nothing
            images = torch.cat([images, images.new_zeros(images.shape[0], missing, *images.shape[2:])], 1)
            valid = torch.cat([valid, valid.new_zeros(valid.shape[0], missing, *valid.shape[2:])], 1)
        valid = valid * (~dropped).to(valid.dtype)[:, None, None, None, None]
        filled = images * valid + rendering.to(images)[:, None] * (1 - valid)
        latents = self.encode_images(filled.flatten(0, 1)).unflatten(0, (-1, count))
        small = F.interpolate(valid.flatten(0, 1), size=(size, size), mode="area").unflatten(0, (-1, count))
        return torch.cat([latents, small.to(latents.dtype)], 2).flatten(1, 2), nothing

    def unet_output(
        self, noisy_latents: Tensor, timesteps: Tensor, features: Tensor, tokens: Tensor, rendering: Tensor | None = None,
        warped: Tensor | None = None,
    ) -> Float[Tensor, "B c h w"]:
        """The prediction (epsilon, v or sample: the scheduler's prediction type); a repairing prior's is the one
        that denoises to :meth:`repaired_latents`."""
        if self.config.repairs:
            clean = self.repaired_latents(noisy_latents, timesteps, features, tokens, rendering, warped)
            a = self.scheduler.alphas_cumprod.to(clean.device)[timesteps].view(-1, 1, 1, 1).to(clean.dtype)
            return prediction_of(noisy_latents, clean, a, self.prediction_type)
        return self._unet(noisy_latents, timesteps, features, tokens)

    def repaired_latents(
        self, noisy_latents: Tensor, timesteps: Tensor, features: Tensor, tokens: Tensor, rendering: Tensor,
        warped: Tensor | None = None,
    ) -> Float[Tensor, "B c h w"]:
        """A repairing prior's prediction of the photograph's latent: the rendering's latent plus the U-Net's
        residual (the U-Net sees the noisy latent, PixelNeRF's features, the rendering's latent and the warped views)."""
        return rendering.to(self.dtype) + self._unet(noisy_latents, timesteps, features, tokens, rendering, warped)

    def _unet(self, noisy_latents: Tensor, timesteps: Tensor, features: Tensor, tokens: Tensor,
              rendering: Tensor | None = None, warped: Tensor | None = None) -> Tensor:  # fmt: skip
        inputs = [noisy_latents, features] + [x for x in (rendering, warped) if x is not None]
        return self.unet(torch.cat([x.to(self.dtype) for x in inputs], dim=1), timesteps,
                         encoder_hidden_states=tokens.to(self.dtype)).sample  # fmt: skip

    def guided_output(
        self, noisy_latents: Tensor, timesteps: Tensor, conditioning: PriorCondition, guidance_scale: float
    ) -> Float[Tensor, "B c h w"]:
        """Classifier-free guidance: out_uncond + s * (out_cond - out_uncond) (s = 1: conditional only)."""
        rendering, warped = conditioning.rendering, conditioning.warped
        if guidance_scale == 1.0:
            return self.unet_output(noisy_latents, timesteps, conditioning.features, conditioning.tokens, rendering, warped)
        if conditioning.null_features is None:
            raise ValueError("guidance needs the unconditional features: build the condition with with_null=True")
        features = torch.cat([conditioning.null_features, conditioning.features])
        tokens = torch.cat([torch.zeros_like(conditioning.tokens), conditioning.tokens])
        both = self.unet_output(torch.cat([noisy_latents] * 2), torch.cat([timesteps] * 2), features, tokens,
                                None if rendering is None else torch.cat([rendering] * 2),
                                None if warped is None else torch.cat([conditioning.null_warped, warped]))  # fmt: skip
        uncond, cond = both.chunk(2)
        return uncond + guidance_scale * (cond - uncond)

    def predict_noise(
        self, noisy_latents: Tensor, timesteps: Int[Tensor, "B"], conditioning: PriorCondition, guidance_scale: float
    ) -> Float[Tensor, "B c h w"]:
        """Guided epsilon at ``timesteps`` (converted from v or x0 predictions), e.g. for score distillation."""
        output = self.guided_output(noisy_latents, timesteps, conditioning, guidance_scale)
        alpha_bar = self.scheduler.alphas_cumprod.to(noisy_latents.device)[timesteps].view(-1, 1, 1, 1)
        return split_prediction(noisy_latents, output, alpha_bar.to(noisy_latents.dtype), self.prediction_type)[1]

    # ------------------------------------------------------------------ training and sampling

    def forward(self, batch: PriorBatch, generator: torch.Generator | None = None) -> PriorLosses:
        """Same as :meth:`loss` (so that data-parallel wrappers can call the module)."""
        return self.loss(batch, generator)

    def loss(self, batch: PriorBatch, generator: torch.Generator | None = None) -> PriorLosses:
        """L_diff + lambda * L_PixelNeRF on one batch; each example's views dropped with the set rate.

        Timesteps are drawn from the first ``max_noise`` of the schedule. A repairing prior noises the batch's
        rendering (not the photograph) to t and is scored on the photograph's latent it predicts."""
        target = batch.target_image.to(self.device, self.dtype)
        if tuple(target.shape[1:]) != (3, self.resolution, self.resolution):
            expected = (3, self.resolution, self.resolution)
            raise ValueError(f"target_image must be (B, *{expected}) for this prior, got {tuple(target.shape)}")
        size = target.shape[0]
        dropped = uniform((size,), generator, self.device) < self.config.condition_dropout
        cond = self.condition(
            batch.observed_images, batch.observed_c2w, batch.observed_intrinsics, batch.target_c2w,
            batch.target_intrinsics, near=batch.near, far=batch.far, dropped=dropped, generator=generator,
            rendering=batch.rendering, warped_images=batch.warped_images, warped_valid=batch.warped_valid,
        )  # fmt: skip
        with torch.no_grad():
            posterior = self.vae.encode(target * 2.0 - 1.0).latent_dist
            drawn_latents = posterior.mean if self.config.repairs else posterior.sample(generator)  # as the rendering's
            latents = drawn_latents * self.vae.config.scaling_factor
        noise = randn_tensor(latents.shape, generator=generator, device=self.device, dtype=latents.dtype)
        steps = self.scheduler.config.num_train_timesteps
        drawn = uniform((size,), generator, self.device) * self.config.max_noise * steps
        timesteps = drawn.long().clamp(max=steps - 1)
        start = latents if cond.rendering is None else cond.rendering.detach()
        noisy = self.scheduler.add_noise(start, noise, timesteps)
        alpha_bar = self.scheduler.alphas_cumprod.to(self.device)[timesteps].view(-1, 1, 1, 1)
        if self.config.repairs:  # scored on the photograph's latent it predicts
            repaired = self.repaired_latents(noisy, timesteps, cond.features, cond.tokens, cond.rendering, cond.warped)
            error = repaired.float() - latents.float()
        else:
            output = self.unet_output(noisy, timesteps, cond.features, cond.tokens).float()
            goal = noise if self.prediction_type == "epsilon" else self.scheduler.get_velocity(latents, noise, timesteps)
            error = output - (latents if self.prediction_type == "sample" else goal).float()
        kind = "sample" if self.config.repairs else self.prediction_type
        weight = min_snr_weight(alpha_bar, self.config.min_snr_gamma, kind)
        diffusion = (weight.float() * error.pow(2)).mean()
        pixel = perceptual = None
        if self.config.repairs:
            pixel, perceptual = self._pixel_losses(repaired, target, weight.float().flatten())
        small = F.interpolate(target.float(), size=cond.rgb.shape[-2:], mode="area")
        per_example = ((cond.rgb.float() - small) ** 2).mean(dim=(1, 2, 3))
        kept = (~dropped).float()
        pixelnerf = (per_example * kept).sum() / kept.sum().clamp(min=1.0)
        total = diffusion + self.config.pixelnerf_loss_weight * pixelnerf
        if pixel is not None:
            total = total + self.config.pixel_loss_weight * pixel
        if perceptual is not None:
            total = total + self.config.lpips_loss_weight * perceptual
        return PriorLosses(
            total=total,
            diffusion=diffusion,
            pixelnerf=pixelnerf,
            dropped=dropped,
            timesteps=timesteps,
            pixelnerf_rgb=cond.rgb.detach(),
            pixel=pixel,
            perceptual=perceptual,
        )

    def _pixel_losses(self, repaired: Tensor, target: Tensor, weight: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """A repairing prior's weighted MSE and LPIPS of its decoded prediction against the photograph (None where
        the config's weight is 0)."""
        pixel = perceptual = None
        if self.config.pixel_loss_weight <= 0 and self.config.lpips_loss_weight <= 0:
            return pixel, perceptual  # no decoder pass
        decoded, target = self.decode_latents(repaired, clamp=False), target.float()
        if self.config.pixel_loss_weight > 0:
            pixel = (weight * (decoded - target).pow(2).mean(dim=(1, 2, 3))).mean()
        if self.config.lpips_loss_weight > 0:
            perceptual = (weight * load_lpips(device=self.device)(decoded, target)).mean()
        return pixel, perceptual

    @torch.no_grad()
    def sample(
        self,
        observed_images: Float[Tensor, "B V 3 H W"] | list[Tensor],
        observed_c2w: Float[Tensor, "B V 4 4"],
        observed_intrinsics: Float[Tensor, "B V 4"],
        target_c2w: Float[Tensor, "B 4 4"],
        target_intrinsics: Float[Tensor, "B 4"],
        *,
        init_images: Float[Tensor, "B 3 R R"] | None = None,
        init_latents: Tensor | None = None,
        t_start: float | Tensor = 1.0,
        num_steps: int = 10,
        guidance_scale: float = 3.0,
        generator: torch.Generator | None = None,
        near: float | Tensor | None = None,
        far: float | Tensor | None = None,
        warped_images: Float[Tensor, "B V 3 R R"] | None = None,
        warped_valid: Float[Tensor, "B V 1 R R"] | None = None,
    ) -> Float[Tensor, "B 3 R R"]:
        """Images at the target cameras: ``init_images`` noised to ``t_start`` (a fraction of the training
        timesteps; 1 = pure noise, the init ignored), then ``num_steps`` DDIM steps to 0 with guidance. A
        repairing prior is also conditioned on ``init_images``, the renderings it repairs, and on the observed views
        warped into them where it takes them (see :meth:`condition`). ``init_latents``: the init_images'
        :meth:`encode_images`, where the caller has it already (it is then not encoded again)."""
        if self.config.repairs and init_images is None:
            raise ValueError("this prior repairs renderings: pass them as init_images")
        images = stack_views(observed_images)
        batch = images.shape[0]
        start = torch.as_tensor(t_start, dtype=torch.float64, device=self.device).flatten()
        start = start.expand(batch) if start.numel() == 1 else start
        if start.shape != (batch,) or not ((start >= 0) & (start <= 1)).all() or num_steps < 1:
            raise ValueError(f"t_start must be a float or a ({batch},) tensor in [0, 1], num_steps >= 1; "
                             f"got {t_start}, {num_steps}")  # fmt: skip
        size = (batch, self.vae.config.latent_channels, self.latent_resolution, self.latent_resolution)
        latents = randn_tensor(size, generator=generator, device=self.device, dtype=torch.float32)  # DDIM in fp32
        steps_total = self.scheduler.config.num_train_timesteps
        timesteps = sampling_timesteps(start, steps_total, num_steps)
        if init_images is not None:
            init_latents = self._init_latents(init_images, init_latents, batch)
            noised = self.scheduler.add_noise(init_latents.to(latents.dtype), latents, timesteps[0])
            latents = torch.where((start >= 1).view(-1, 1, 1, 1), latents, noised)
        elif (start < 1).any():
            raise ValueError("t_start < 1 needs init_images to start from")
        cond = self.condition(
            images, observed_c2w, observed_intrinsics, target_c2w, target_intrinsics,
            near=near, far=far, with_null=guidance_scale != 1.0, stratified=False,
            rendering=init_images if self.config.repairs else None, rendering_latents=init_latents,
            warped_images=warped_images, warped_valid=warped_valid,
        )  # fmt: skip
        alphas = self.sampler.alphas_cumprod.to(self.device)
        final = torch.as_tensor(self.sampler.final_alpha_cumprod, device=self.device).expand(batch)
        for k in range(num_steps):
            output = self.guided_output(latents, timesteps[k], cond, guidance_scale).float()
            alpha_prev = alphas[timesteps[k + 1]] if k + 1 < num_steps else final
            latents = ddim_update(latents, output, alphas[timesteps[k]], alpha_prev, self.prediction_type)
        return self.decode_latents(latents)

    def _init_latents(self, init_images: Tensor, init_latents: Tensor | None, batch: int) -> Tensor:
        """The latents of ``init_images`` (checked for shape), encoded unless given."""
        expected = (batch, 3, self.resolution, self.resolution)
        if tuple(init_images.shape) != expected:
            raise ValueError(f"init_images must have shape {expected}, got {tuple(init_images.shape)}")
        return self.encode_images(init_images.to(self.device)) if init_latents is None else init_latents

