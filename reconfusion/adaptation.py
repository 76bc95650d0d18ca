"""Scene adaptation of a repairing prior (beyond the paper, after GaussianObject and iFusion): before the fit, the
prior is fine-tuned briefly on the scene's own input views, leave-one-out - the other inputs observed, a degraded
stand-in for a rendering of the left-out view (:func:`reconfusion.degradation.synthetic_rendering`) to repair,
the left-out photograph as the target - so that what it restores looks like this scene.

The prior is changed in place and left in eval mode without gradients; its weights as loaded are not kept.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from reconfusion.cameras import normalize_for_prior
from reconfusion.degradation import synthetic_rendering
from reconfusion.observations import Observations
from reconfusion.prior import PriorBatch, ReconFusionPrior

logger = logging.getLogger("reconfusion")


@dataclass(frozen=True)
class AdaptationConfig:
    """Fine-tuning of a repairing prior on the scene's input views (off with 0 steps)."""

    steps: int = 0
    """Optimizer steps (each over every left-out view once); 0: off."""
    learning_rate: float = 3e-5
    """AdamW learning rate (a tenth of the repair preset's training rate: a nudge, not a retraining)."""
    observed: int = 3
    """Other input views observed per example (the nearest; fewer when the scene has fewer)."""
    seed: int = 0
    """Seeds the degradations, noise levels and noise."""


@dataclass(frozen=True)
class AdaptationResult:
    steps: int
    seconds: float
    loss_before: float
    """Mean diffusion loss of the leave-one-out examples before adapting (fixed noise draws)."""
    loss_after: float


def leave_one_out(observations: Observations, observed: int, rng: np.random.Generator) -> PriorBatch:
    """One example per input view: the nearest ``observed`` other views, a synthetic rendering of it, itself."""
    count = len(observations)
    if count < 2:
        raise ValueError("scene adaptation needs at least two input views (one left out, one observed)")
    images = observations.images.float().clamp(0, 1)
    c2w = observations.c2w.detach().double().cpu().numpy()
    centres = c2w[:, :3, 3]
    keep = min(observed, count - 1)
    fields: dict[str, list] = {k: [] for k in ("observed_images", "observed_c2w", "observed_intrinsics", "target_c2w",
                                               "target_intrinsics", "near", "far", "rendering")}  # fmt: skip
    for left_out in range(count):
        distance = np.linalg.norm(centres - centres[left_out], axis=-1)
        distance[left_out] = np.inf
        others = np.argsort(distance, kind="stable")[:keep]
        obs_c2w, target_c2w, near, far = normalize_for_prior(c2w[others], c2w[left_out][None])
        photo = images[left_out].permute(1, 2, 0).cpu().numpy()
        fields["observed_images"].append(images[torch.as_tensor(others)])
        fields["observed_c2w"].append(torch.as_tensor(obs_c2w, dtype=torch.float32))
        fields["observed_intrinsics"].append(observations.intrinsics[torch.as_tensor(others)].float())
        fields["target_c2w"].append(torch.as_tensor(target_c2w[0], dtype=torch.float32))
        fields["target_intrinsics"].append(observations.intrinsics[left_out].float())
        fields["near"].append(torch.tensor(float(near)))
        fields["far"].append(torch.tensor(float(far)))
        fields["rendering"].append(torch.from_numpy(synthetic_rendering(photo, rng)).permute(2, 0, 1))
    device = images.device
    batch = {k: torch.stack(v).to(device) for k, v in fields.items()}
    return PriorBatch(target_image=images, **batch)


def adapt_prior(prior: ReconFusionPrior, observations: Observations, config: AdaptationConfig) -> AdaptationResult:
    """Fine-tune ``prior`` (a repairing one) on the leave-one-out examples of ``observations``, in place."""
    if not prior.config.repairs:
        raise ValueError(f"scene adaptation fine-tunes a repairing prior; this one ({prior.config.preset}) does not repair")
    start, rng = time.perf_counter(), np.random.default_rng(config.seed)
    batch = leave_one_out(observations, config.observed, rng)
    parameters = [p for module in prior.trainable_components().values() for p in module.parameters()]
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=0.0)
    before = _mean_loss(prior, batch, config.seed)
    prior.train()
    for step in range(config.steps):
        generator = torch.Generator(device=prior.device).manual_seed(config.seed * 7919 + step)
        loss = prior.loss(batch, generator=generator).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    prior.eval().requires_grad_(False)
    after = _mean_loss(prior, batch, config.seed)
    result = AdaptationResult(config.steps, round(time.perf_counter() - start, 2), before, after)
    logger.info("prior adapted to the scene: %d steps on %d views, %.1f s, leave-one-out loss %.4f -> %.4f",
                config.steps, len(observations), result.seconds, before, after)  # fmt: skip
    return result


@torch.no_grad()
def _mean_loss(prior: ReconFusionPrior, batch: PriorBatch, seed: int, draws: int = 4) -> float:
    prior.eval()
    total = 0.0
    for draw in range(draws):
        generator = torch.Generator(device=prior.device).manual_seed(10_000 + seed + draw)
        total += float(prior.loss(batch, generator=generator).diffusion)
    return total / draws
