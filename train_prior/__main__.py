"""Train the prior: ``accelerate launch -m train_prior tiny --data scenes/`` (or ``python -m train_prior``).

Reads top to bottom like Accelerate's examples: accelerator, seed, data, objective, optimizer, one
``prepare()``, resume, the loop, export, ``end_training()``.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import tyro
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from reconfusion.cli import one_line
from reconfusion.files import InputError
from train_prior.checkpoints import resume_latest, save_checkpoint
from train_prior.config import PRESETS, TrainConfig
from train_prior.datasets import DegradedDataset, Mixture, MultiviewDataset, Recoloured, StepSampler, WeightedSource
from train_prior.monitoring import TrainClock, log_image_grid
from train_prior.readers import READERS

logger = logging.getLogger("reconfusion")


def make_accelerator(config: TrainConfig) -> Accelerator:
    cpu = config.cpu or not torch.cuda.is_available()
    project = ProjectConfiguration(project_dir=str(config.output_dir), logging_dir=str(config.output_dir / "logs"))
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision="no" if cpu else config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation,
        log_with="tensorboard",
        project_config=project,
    )
    if accelerator.is_main_process:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    return accelerator


def make_dataset(config: TrainConfig, warped_views: int = 0) -> torch.utils.data.Dataset:
    """The examples: scene datasets mixed by weight, and degraded-rendering corpora (a repairing prior only,
    whose scene examples then carry a synthetic degradation as their rendering), with ``warped_views`` observed
    views warped into each target (the prior's ``warped_views``; scene examples, without depth, show nothing)."""
    from reconfusion.corpus import is_held_out, read_corpus

    try:
        datasets = config.all_datasets()
    except ValueError as err:
        raise SystemExit(f"train_prior: error: {err}") from None
    if not datasets:
        raise SystemExit("no training data: pass --data SCENES_DIR (or --datasets ...); see `python -m train_prior --help`")
    repairs = config.preset == "repair"
    corpora = [d for d in datasets if d.format == "degraded"]
    if corpora and not repairs:
        raise SystemExit(f"train_prior: error: degraded:{corpora[0].path} trains a repairing prior; use the repair preset")
    scenes = [d for d in datasets if d.format != "degraded"]
    kept = lambda scene: not is_held_out(scene.root.name, config.holdout_scenes)  # noqa: E731
    parts, weights, names = [], [], set()
    if scenes:
        found = [READERS[d.format](d.path, min_views=config.num_observed + 1) for d in scenes]
        names |= {scene.root.name for group in found for scene in group}
        sources = [WeightedSource([s for s in group if kept(s)], d.weight) for group, d in zip(found, scenes)]
        parts.append(MultiviewDataset(sources, resolution=config.resolution, num_observed=config.num_observed,
                                      seed=config.seed, cache_megabytes=config.view_cache_mb,
                                      synthetic_renderings=repairs, warped_views=warped_views))  # fmt: skip
        weights.append(sum(d.weight for d in scenes))
    for corpus in corpora:
        fits = read_corpus(corpus.path)
        names |= {fit.scene.root.name for fit in fits}
        parts.append(DegradedDataset([fit for fit in fits if kept(fit.scene)], resolution=config.resolution,
                                     num_observed=config.num_observed, seed=config.seed,
                                     cache_megabytes=config.view_cache_mb, warped_views=warped_views))  # fmt: skip
        weights.append(corpus.weight)
    unknown = sorted(set(config.holdout_scenes) - names)
    if unknown:
        raise SystemExit(f"train_prior: error: --holdout-scenes {' '.join(unknown)}: no such scene in the datasets; "
                         "name scene folders, e.g. --holdout-scenes " + " ".join(sorted(names)[:3]))  # fmt: skip
    dataset = parts[0] if len(parts) == 1 else Mixture(parts, weights, seed=config.seed)
    return Recoloured(dataset, seed=config.seed) if repairs and config.recolour else dataset


def make_objective(config: TrainConfig) -> torch.nn.Module:
    from reconfusion.prior import ReconFusionPrior
    from train_prior.objectives import PriorObjective, VaeObjective

    if config.init_from is not None:
        return PriorObjective(load_prior_to_fine_tune(config))
    if config.preset == "sd":
        if config.pretrained is None:
            raise SystemExit("the sd preset starts from Stable Diffusion: pass --pretrained FOLDER_OR_HUB_ID")
        return PriorObjective(ReconFusionPrior.from_stable_diffusion(config.pretrained))
    if config.preset in ("small", "repair"):
        return PriorObjective(ReconFusionPrior.from_preset(config.preset))  # its autoencoder is pretrained
    prior = ReconFusionPrior.from_preset("tiny")
    if config.stage == "vae":
        return VaeObjective(prior.vae.train().requires_grad_(True))
    if config.vae is None:
        raise SystemExit("the tiny prior stage needs the autoencoder of the vae stage: pass --vae RUN_DIR/vae")
    return PriorObjective(prior.with_vae(config.vae))


def load_prior_to_fine_tune(config: TrainConfig):
    from reconfusion.files import InputError
    from reconfusion.presets import REPAIR_PRESET
    from reconfusion.prior import ReconFusionPrior

    if config.stage != "prior" or config.vae is not None or config.pretrained is not None:
        raise SystemExit(f"train_prior: error: --init-from {config.init_from} fine-tunes a whole prior, autoencoder "
                         "included: use it with the prior stage and without --vae / --pretrained")  # fmt: skip
    try:
        prior = ReconFusionPrior.from_pretrained(config.init_from)
    except InputError as err:
        raise SystemExit(f"train_prior: error: --init-from {err}") from None
    if prior.config.resolution != config.resolution:
        raise SystemExit(f"train_prior: error: --init-from {config.init_from}: a {prior.config.resolution} px prior; "
                         f"pass --resolution {prior.config.resolution} to fine-tune it")  # fmt: skip
    wanted = warped_views(config)
    if prior.config.warped_views > wanted:
        raise SystemExit(f"train_prior: error: --init-from {config.init_from} takes {prior.config.warped_views} warped "
                         f"views, the {config.preset} preset {wanted}: fine-tune it with a preset that takes as many")  # fmt: skip
    if prior.config.warped_views < wanted and prior.config.repairs:
        logging.getLogger(__name__).info("--init-from %s: its U-Net widened (zero weights) to take %d warped views",
                                         config.init_from, wanted)  # fmt: skip
        prior = prior.with_warped_views(wanted)
    if prior.config.repairs and config.preset == "repair":  # the preset's training objective, whatever the prior's was
        trained = REPAIR_PRESET.prior
        prior.config = replace(prior.config, pixel_loss_weight=trained.pixel_loss_weight,
                               lpips_loss_weight=trained.lpips_loss_weight)  # fmt: skip
    return prior


def warped_views(config: TrainConfig) -> int:
    """How many observed views warped into the target the trained prior takes: the repair preset's (a prior fine-tuned
    with it is widened to take them)."""
    from reconfusion.presets import REPAIR_PRESET

    return REPAIR_PRESET.prior.warped_views if config.preset == "repair" else 0


def make_optimizer(config: TrainConfig, objective: torch.nn.Module, num_processes: int):
    parameters = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=1e-2)
    # Accelerate steps a prepared scheduler once per process per optimizer step.
    scheduler = get_scheduler(
        "constant_with_warmup", optimizer, num_warmup_steps=config.warmup_steps * num_processes
    )
    return optimizer, scheduler


def make_loader(dataset, config: TrainConfig, accelerator: Accelerator, start_step: int):
    sampler = StepSampler(
        config.batch_size,
        rank=accelerator.process_index,
        world=accelerator.num_processes,
        start_step=start_step * config.gradient_accumulation,
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=config.batch_size, sampler=sampler, num_workers=config.num_workers
    )
    return iter(loader)


def step_generator(config: TrainConfig, accelerator: Accelerator, micro_step: int) -> torch.Generator:
    """Noise, timesteps and dropout of micro-step ``micro_step`` on this process: a function of the step only."""
    seed = (config.seed * 1_000_003 + micro_step * accelerator.num_processes + accelerator.process_index) % 2**63
    return torch.Generator(device=accelerator.device).manual_seed(seed)


class StopRequest:
    """Ends training at a step boundary, agreed by all processes: on SIGTERM/SIGINT (SLURM pre-emption,
    Ctrl-C; the run resumes later) or when this run's time limit is reached (the run counts as finished)."""

    def __init__(self, max_minutes: float):
        self.signalled, self.deadline = False, time.perf_counter() + 60 * max_minutes if max_minutes else None
        self._previous = {sig: signal.signal(sig, self._request) for sig in (signal.SIGTERM, signal.SIGINT)}

    def close(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _request(self, *_):
        self.signalled = True

    def reason(self, accelerator: Accelerator) -> str | None:
        timed_out = self.deadline is not None and time.perf_counter() > self.deadline
        flags = torch.tensor([float(self.signalled), float(timed_out)], device=accelerator.device)
        signalled, timed_out = (accelerator.reduce(flags, reduction="sum") > 0).tolist()
        return "signal" if signalled else "time limit" if timed_out else None


def train_step(objective, batch_iter, optimizer, scheduler, accelerator, config, step) -> dict[str, float]:
    """One optimizer step over ``gradient_accumulation`` micro-batches; returns the mean of each logged scalar."""
    totals: dict[str, float] = {}
    for micro in range(config.gradient_accumulation):
        batch = {k: v.to(accelerator.device) for k, v in next(batch_iter).items()}
        with accelerator.accumulate(objective):
            outputs = objective(batch, generator=step_generator(config, accelerator, step * config.gradient_accumulation + micro))
            accelerator.backward(outputs["loss"])
            if accelerator.sync_gradients and config.max_grad_norm > 0:
                accelerator.clip_grad_norm_(objective.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        for key, value in outputs.items():
            totals[key] = totals.get(key, 0.0) + float(value.detach()) / config.gradient_accumulation
    return totals


@dataclass
class Training:
    """Everything the loop updates; prepared by Accelerate and resumed from the latest checkpoint."""

    accelerator: Accelerator
    dataset: torch.utils.data.Dataset
    objective: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    ema: EMAModel | None
    clock: TrainClock
    step: int
    losses: list[float] = field(default_factory=list)
    """Mean loss of every step this run took (tests compare resumed and straight runs with it)."""

    @property
    def model(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.objective)


def prepare(config: TrainConfig) -> Training:
    """Accelerator, seed, data, objective, optimizer, one prepare(), EMA, resume."""
    accelerator = make_accelerator(config)
    set_seed(config.seed)
    dataset = make_dataset(config, warped_views=warped_views(config))
    objective = make_objective(config)
    optimizer, scheduler = make_optimizer(config, objective, accelerator.num_processes)
    objective, optimizer, scheduler = accelerator.prepare(objective, optimizer, scheduler)
    ema = None
    if config.ema_decay > 0:
        ema = EMAModel(accelerator.unwrap_model(objective).parameters(), decay=config.ema_decay)
        accelerator.register_for_checkpointing(ema)
    clock = TrainClock()
    accelerator.register_for_checkpointing(clock)
    step = resume_latest(accelerator, config.output_dir)
    if ema is not None:
        ema.to(accelerator.device)  # load_state restores the EMA weights on the CPU
    return Training(accelerator, dataset, objective, optimizer, scheduler, ema, clock, step)


def train_loop(training: Training, config: TrainConfig) -> str | None:
    """Step until config.steps or a stop request; returns why it stopped early (None when done)."""
    accelerator, step = training.accelerator, training.step
    batch_iter = make_loader(training.dataset, config, accelerator, step)
    stop = StopRequest(config.max_minutes)
    progress = tqdm(total=config.steps, initial=step, disable=not accelerator.is_main_process, desc=f"train {config.stage}",
                    mininterval=1.0 if sys.stderr.isatty() else 30.0)
    tick, examples, reason = time.perf_counter(), 0, None
    while step < config.steps and reason is None:
        losses = train_step(training.objective, batch_iter, training.optimizer, training.scheduler, accelerator, config, step)
        if training.ema is not None:
            training.ema.step(training.model.parameters())
        step, training.step = step + 1, step + 1
        training.losses.append(losses["loss"])
        examples += config.batch_size * config.gradient_accumulation * accelerator.num_processes
        progress.update(1)
        progress.set_postfix(loss=f"{losses['loss']:.4f}")
        if step % config.log_every == 0 or step == config.steps:
            elapsed, tick = time.perf_counter() - tick, time.perf_counter()
            lr = training.scheduler.get_last_lr()[0]
            accelerator.log({**losses, "lr": lr, "examples_per_s": examples / elapsed}, step=step)
            examples = 0
        if config.image_every and step % config.image_every == 0 and accelerator.is_main_process:
            log_image_grid(accelerator, training.model, training.dataset, step)
        if config.validate_every and step % config.validate_every == 0 and accelerator.is_main_process:
            log_validation(training, config, step)
        reason = stop.reason(accelerator)
        if step % config.checkpoint_every == 0 or step == config.steps or reason:
            save_checkpoint(accelerator, config.output_dir, step, config.keep_checkpoints)
    progress.close()
    stop.close()
    return reason


@contextmanager
def ema_weights(ema: EMAModel | None, model: torch.nn.Module) -> Iterator[None]:
    """``model`` holds the EMA weights inside the block (unchanged without EMA); its own come back after."""
    if ema is None:
        yield
        return
    ema.store(model.parameters())
    ema.copy_to(model.parameters())
    try:
        yield
    finally:
        ema.restore(model.parameters())


def validation_scenes(config: TrainConfig, corpus: Path) -> tuple[str, ...]:
    """The held-out scenes validation scores in ``corpus``: those with fits when the run first validated, kept in
    OUT/validation_scenes.json so that the curve compares the same scenes across resumes as the corpus grows."""
    from reconfusion.files import read_json, write_json
    from train_prior.monitoring import held_out_corpus_scenes

    path = config.output_dir / "validation_scenes.json"
    chosen = read_json(path) if path.is_file() else {}
    if str(corpus) not in chosen:
        chosen[str(corpus)] = list(held_out_corpus_scenes(corpus, config.holdout_scenes))
        write_json(path, chosen)
    return tuple(chosen[str(corpus)])


def log_validation(training: Training, config: TrainConfig, step: int) -> None:
    """Restoration of the held-out scenes by the EMA weights, for each degraded corpus that has fits of them."""
    from train_prior.monitoring import validate, validation_tags

    model = training.model
    with ema_weights(training.ema, model):
        for corpus, tags in validation_tags(config).items():
            scenes = validation_scenes(config, corpus)
            if scenes:
                scores = validate(model.prior, corpus, scenes, tags=tags)
                training.accelerator.log(scores, step=step)
                logger.info("validation on %s at step %d: %s", " ".join(scenes), step,
                            ", ".join(f"{k} {v:+.3f}" for k, v in scores.items()))  # fmt: skip


def run(config: TrainConfig) -> Training:
    """Train according to ``config`` (resuming if possible) and export once finished."""
    training = prepare(config)
    accelerator = training.accelerator
    if accelerator.is_main_process:
        accelerator.init_trackers("train_prior", config={"stage": config.stage, "preset": config.preset,
                                                         "batch_size": config.batch_size, "lr": config.learning_rate})
    reason = train_loop(training, config)
    if reason:
        logger.info("stopped at step %d (%s); the same command resumes", training.step, reason)
    if training.step >= config.steps or reason == "time limit":
        export(accelerator, training.objective, training.ema, config, training.step, training.clock.elapsed())
    accelerator.end_training()
    return training


def export(accelerator: Accelerator, objective, ema, config: TrainConfig, step: int, seconds: float) -> Path:
    """Write the trained (EMA) weights as save_pretrained folders, plus a model card for the prior."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(objective)
        with ema_weights(ema, model):
            model.export(config.output_dir)
            if config.stage == "prior":
                from train_prior.model_card import write_model_card

                write_model_card(config, step, seconds, accelerator.num_processes)
        logger.info("exported to %s", config.output_dir)
    accelerator.wait_for_everyone()
    return config.output_dir


def main() -> None:
    config = tyro.extras.overridable_config_cli(PRESETS)
    try:
        run(config)
    except InputError as err:  # bad data or options: the message names the file and the fix, not a traceback
        sys.stderr.write(f"train_prior: error: {one_line(str(err))}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
