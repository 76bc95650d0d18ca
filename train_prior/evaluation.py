"""Held-out quality of a prior: PixelNeRF PSNR and sample PSNR/SSIM on scenes it never saw.

``python -m train_prior.evaluation PRIOR_DIR --data HELDOUT_SCENES`` prints the numbers the model
card reports; the model card is written by the same function.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import tyro
from tyro.conf import Positional

from reconfusion.metrics import psnr, ssim
from reconfusion.prior import ReconFusionPrior
from train_prior.datasets import MultiviewDataset, WeightedSource
from train_prior.readers import read_scene_folders


@dataclass(frozen=True)
class PriorQuality:
    """Means over held-out examples (3 observed views + 1 target each)."""

    examples: int
    """How many examples were scored."""
    pixelnerf_psnr: float
    """PSNR of PixelNeRF's RGB (latent resolution) against the downsampled target."""
    sample_psnr: float
    """PSNR of a 10-step guided sample from pure noise against the target."""
    sample_ssim: float
    """SSIM of the same samples."""
    refine_psnr: float
    """PSNR of a sample started at t = 0.5 from PixelNeRF's RGB upsampled (an annealed-loss-like refinement)."""


def heldout_dataset(data: tuple[Path, ...], resolution: int, seed: int) -> MultiviewDataset:
    scenes = [scene for root in data for scene in read_scene_folders(root)]
    return MultiviewDataset([WeightedSource(scenes)], resolution=resolution, seed=seed, crop_scale=(1.0, 1.0))


@torch.no_grad()
def evaluate_prior(prior: ReconFusionPrior, data: tuple[Path, ...], examples: int = 64, batch_size: int = 16,
                   seed: int = 12345) -> PriorQuality:
    """Score ``prior`` on ``examples`` deterministic examples drawn from the scene folders ``data``."""
    dataset = heldout_dataset(data, prior.resolution, seed)
    prior.eval()
    totals = {"pixelnerf_psnr": 0.0, "sample_psnr": 0.0, "sample_ssim": 0.0, "refine_psnr": 0.0}
    for first in range(0, examples, batch_size):
        items = [dataset[i] for i in range(first, min(first + batch_size, examples))]
        batch = {k: torch.stack([item[k] for item in items]).to(prior.device) for k in items[0]}
        for key, value in _score_batch(prior, batch, seed + first).items():
            totals[key] += value * len(items)
    return PriorQuality(examples=examples, **{k: v / examples for k, v in totals.items()})


def _score_batch(prior: ReconFusionPrior, batch: dict, seed: int) -> dict[str, float]:
    views = (batch["observed_images"], batch["observed_c2w"], batch["observed_intrinsics"],
             batch["target_c2w"], batch["target_intrinsics"])
    target = batch["target_image"]
    condition = prior.condition(*views, near=batch["near"], far=batch["far"], stratified=False)
    small_target = F.interpolate(target, size=condition.rgb.shape[-2:], mode="area")
    generator = torch.Generator(device=prior.device).manual_seed(seed)
    sample = prior.sample(*views, near=batch["near"], far=batch["far"], generator=generator)
    coarse = F.interpolate(condition.rgb, size=target.shape[-2:], mode="bilinear", align_corners=False)
    refined = prior.sample(*views, init_images=coarse, t_start=0.5, near=batch["near"], far=batch["far"],
                           generator=generator)
    return {
        "pixelnerf_psnr": float(psnr(condition.rgb.clamp(0, 1), small_target).mean()),
        "sample_psnr": float(psnr(sample, target).mean()),
        "sample_ssim": float(ssim(sample, target).mean()),
        "refine_psnr": float(psnr(refined, target).mean()),
    }


def main(prior: Positional[Path], data: tuple[Path, ...], examples: int = 64, seed: int = 12345) -> None:
    """Print the held-out quality of the prior saved in PRIOR as JSON.

    Args:
        prior: A prior folder written by train_prior (save_pretrained).
        data: Held-out scene folders (never used for training).
        examples: Number of (3 observed + 1 target) examples scored.
        seed: Chooses the examples and the sampling noise.
    """
    model = ReconFusionPrior.from_pretrained(prior).to("cuda" if torch.cuda.is_available() else "cpu")
    print(json.dumps(asdict(evaluate_prior(model, data, examples=examples, seed=seed)), indent=2))


if __name__ == "__main__":
    tyro.cli(main)
