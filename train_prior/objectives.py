"""What each training stage optimises, as one ``nn.Module`` that Accelerate can wrap (DDP, FSDP, DeepSpeed).

An objective maps a batch (the dict of tensors ``MultiviewDataset`` yields, collated) and a
generator to a dict of scalar tensors whose ``"loss"`` entry is minimised, and exports its trained
weights as ``save_pretrained`` folders.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from torch import Tensor, nn

from reconfusion.prior import PriorBatch, ReconFusionPrior


class VaeObjective(nn.Module):
    """Stage 1 of the tiny preset: an AutoencoderKL trained from scratch (L1 + MSE + small KL).

    It tracks a running standard deviation of the latents; the exported VAE's ``scaling_factor`` is
    its inverse, so the diffusion stage sees unit-variance latents as Stable Diffusion's does.
    """

    def __init__(self, vae: AutoencoderKL, kl_weight: float = 1e-6, std_momentum: float = 0.99):
        super().__init__()
        self.vae, self.kl_weight, self.std_momentum = vae, kl_weight, std_momentum
        self.register_buffer("latent_std", torch.ones(()))

    def forward(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        images = torch.cat([batch["observed_images"].flatten(0, 1), batch["target_image"]]) * 2.0 - 1.0
        posterior = self.vae.encode(images).latent_dist
        latents = posterior.sample(generator)
        reconstruction = self.vae.decode(latents).sample
        l1 = F.l1_loss(reconstruction, images)
        mse = F.mse_loss(reconstruction, images)
        kl = posterior.kl().mean()
        with torch.no_grad():
            self.latent_std.lerp_(latents.std(), 1.0 - self.std_momentum)
        return {"loss": l1 + mse + self.kl_weight * kl, "l1": l1, "kl": kl, "latent_std": self.latent_std.clone()}

    def export(self, folder: Path) -> None:
        self.vae.register_to_config(scaling_factor=float(1.0 / self.latent_std))
        self.vae.save_pretrained(Path(folder) / "vae")


class PriorObjective(nn.Module):
    """Stage 2: L_diff + lambda * L_PixelNeRF (+ a repairing prior's pixel and perceptual terms) of the prior (its
    frozen VAE has no trainable parameters)."""

    def __init__(self, prior: ReconFusionPrior):
        super().__init__()
        self.prior = prior

    def forward(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        losses = self.prior.loss(PriorBatch(**batch), generator=generator)
        logged = {"loss": losses.total, "diffusion": losses.diffusion, "pixelnerf": losses.pixelnerf,
                  "pixel": losses.pixel, "perceptual": losses.perceptual}  # fmt: skip
        return {name: value for name, value in logged.items() if value is not None}

    def export(self, folder: Path) -> None:
        self.prior.save_pretrained(Path(folder) / "prior")
