"""Image grids for tensorboard and the training clock that survives resumes."""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torchvision.utils import make_grid

from reconfusion.files import read_scalars
from train_prior.datasets import MultiviewDataset, warps_of

MONITOR_INDEX = 2**61
"""Examples from this index on are used for image grids; training reaches them only after ~10^17 examples."""


class TrainClock:
    """Training seconds summed over every resumed run (registered for checkpointing)."""

    def __init__(self):
        self.seconds, self._since = 0.0, time.perf_counter()

    def elapsed(self) -> float:
        now = time.perf_counter()
        self.seconds, self._since = self.seconds + now - self._since, now
        return self.seconds

    def state_dict(self) -> dict:
        return {"seconds": self.elapsed()}

    def load_state_dict(self, state: dict) -> None:
        self.seconds, self._since = float(state["seconds"]), time.perf_counter()


REPAIR_T = 0.4
"""Noise level a repairing prior's monitoring samples start from (the rendering noised to it)."""


def _monitor_batch(dataset: MultiviewDataset, count: int, device) -> dict[str, torch.Tensor]:
    items = [dataset[MONITOR_INDEX + k] for k in range(count)]
    return {k: torch.stack([item[k] for item in items]).to(device) for k in items[0]}


@torch.no_grad()
def image_grid(objective: torch.nn.Module, dataset: MultiviewDataset, count: int = 4) -> torch.Tensor:
    """Rows of observed views | PixelNeRF RGB | sample | target (prior stage; a repairing prior's rows show the
    rendering before its repair from t = REPAIR_T) or input | reconstruction (VAE stage)."""
    device = next(objective.parameters()).device
    batch = _monitor_batch(dataset, count, device)
    target = batch["target_image"]
    was_training = objective.training
    objective.eval()
    if hasattr(objective, "prior"):
        prior = objective.prior
        views = (batch["observed_images"], batch["observed_c2w"], batch["observed_intrinsics"],
                 batch["target_c2w"], batch["target_intrinsics"])
        rendering = batch.get("rendering")
        rgb = prior.condition(*views, near=batch["near"], far=batch["far"], stratified=False, rendering=rendering,
                              **warps_of(batch)).rgb
        generator = torch.Generator(device=device).manual_seed(0)
        start = {"init_images": rendering, "t_start": REPAIR_T} if prior.config.repairs else {}
        sample = prior.sample(*views, near=batch["near"], far=batch["far"], generator=generator, **start, **warps_of(batch))
        given = [] if rendering is None else [rendering]
        columns = [*batch["observed_images"].unbind(1), F.interpolate(rgb.clamp(0, 1), size=target.shape[-2:]), *given,
                   sample, target]  # fmt: skip
    else:
        latents = objective.vae.encode(target * 2 - 1).latent_dist.mode()
        columns = [target, (objective.vae.decode(latents).sample * 0.5 + 0.5).clamp(0, 1)]
    objective.train(was_training)
    tiles = torch.stack(columns, dim=1).flatten(0, 1)
    return make_grid(tiles.float().cpu(), nrow=len(columns), padding=1)


def log_image_grid(accelerator: Accelerator, objective: torch.nn.Module, dataset: MultiviewDataset, step: int) -> None:
    tracker = accelerator.get_tracker("tensorboard", unwrap=True)
    tracker.add_image("examples", image_grid(objective, dataset), step)


LOSS_TAGS = ("loss", "diffusion", "pixelnerf", "pixel", "perceptual")
"""The training losses a run logs (a repairing prior's pixel and perceptual terms only where it trains them)."""


def plot_loss_curves(log_dir: Path, out: Path, tags: tuple[str, ...] = LOSS_TAGS,
                     ylabel: str = "loss at the logged steps", yscale: str = "log") -> Path | None:
    """A PNG of the scalars ``tags`` (the training losses) logged under ``log_dir`` (None when none was logged)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curves = {tag: xy for tag, xy in read_scalars(log_dir, tags).items() if xy[0]}
    if not curves:
        return None
    figure = Figure(figsize=(6, 3.5))
    axes = figure.add_subplot()
    for tag, (steps, values) in curves.items():
        axes.plot(steps, values, label=tag)
    axes.set(xlabel="optimizer step", ylabel=ylabel, yscale=yscale)
    axes.legend()
    figure.tight_layout()
    FigureCanvasAgg(figure).print_png(str(out))
    return out


VALIDATION_TAGS = ("validation/gain_db", "validation/lpips_change")
"""Restoration on the held-out scenes (restored minus rendering: PSNR in dB, LPIPS), logged by :func:`validate`
as ``validation/CORPUS_NAME/...`` for each degraded corpus (:func:`validation_tags`); runs before that logged the
first corpus under these tags themselves, and the model card still plots them where the logs hold them."""


def validation_tags(config) -> dict[Path, tuple[str, ...]]:
    """The tags :func:`validate` logs each degraded corpus of a run's ``config`` (a TrainConfig) under, named by the
    corpus folder so that reordering --datasets between resumes keeps each corpus's curve."""
    corpora = [dataset.path for dataset in config.all_datasets() if dataset.format == "degraded"]
    return {corpus: tuple(tag.replace("validation/", f"validation/{Path(corpus).name}/") for tag in VALIDATION_TAGS)
            for corpus in corpora}  # fmt: skip


def held_out_corpus_scenes(corpus: Path, holdout: tuple[str, ...]) -> tuple[str, ...]:
    """The corpus scenes of held-out captures (their forward-facing arcs included) that have finished fits in
    ``corpus`` (the ones validation can score)."""
    from reconfusion.corpus import is_held_out, read_corpus

    return tuple(sorted({fit.scene.root.name for fit in read_corpus(corpus) if is_held_out(fit.scene.root.name, holdout)}))


@torch.no_grad()
def validate(prior, corpus: Path, scenes: tuple[str, ...], examples: int = 16, t: float = REPAIR_T,
             tags: tuple[str, ...] = VALIDATION_TAGS) -> dict[str, float]:
    """Restoration gain of ``prior`` on ``scenes`` of a degraded-rendering corpus (the run's held-out scenes), as
    ``python -m train_prior.evaluation --corpus CORPUS --scenes SCENES --ts T`` scores it."""
    from train_prior.evaluation import evaluate_restoration

    was_training = prior.training
    overall = evaluate_restoration(prior, corpus, ts=(t,), examples=examples, batch_size=examples, scenes=scenes)[0]
    prior.train(was_training)
    return {tags[0]: overall.gain_db, tags[1]: overall.restored_lpips - overall.rendering_lpips}
