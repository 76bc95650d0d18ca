"""nerfstudio's trainer with two additions for short sparse-view fits.

- Learning-rate schedules scale with the run: every exponential-decay schedule reaches its final rate
  at ``lr_decay_steps``, by default ``--max-num-iterations`` times nerfacto's own proportion (200,000 /
  30,000), so a 600-step CPU fit decays as much as a 30,000-step nerfacto fit does over its run. Decaying
  all the way within the run measured 2.5 dB worse (fern and a procedural object at 6 views, 600 steps:
  21.19 / 23.45 dB against 23.78 / 25.94 dB with the proportional horizon; outputs of
  `reconfusion benchmark`, see the closing note of session 3).
- A run that bad input stops before it starts (a scene, split or prior that does not load) leaves no folder
  behind: nerfstudio writes config.yml before set-up, and an empty run would look like a failed fit.
- The settings chosen from the scene (:func:`nerfstudio_plugin.model.resolve_scene_settings`) and the
  decay length are written into the run's config.yml after set-up, and logged on one line, so the run
  can be read, reproduced and evaluated (ns-eval) with exactly those values.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Optional, Type

from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils.rich_utils import CONSOLE

from nerfstudio_plugin.model import describe_settings
from reconfusion.files import InputError


@dataclass
class ReconFusionTrainerConfig(TrainerConfig):
    """nerfstudio's TrainerConfig with learning-rate schedules that follow the run's length."""

    _target: Type = field(default_factory=lambda: ReconFusionTrainer)
    lr_decay_steps: Optional[int] = None
    """Steps over which the exponential learning-rate schedules reach their final rate. None: --max-num-iterations
    times nerfacto's proportion (200,000 decay steps for 30,000 iterations)."""


def decaying_over(optimizers: dict, steps: int) -> dict:
    """The optimizer configs with every exponential-decay schedule spanning ``steps``."""
    out = {}
    for name, group in optimizers.items():
        scheduler = group.get("scheduler")
        if isinstance(scheduler, ExponentialDecaySchedulerConfig):
            group = {**group, "scheduler": replace(scheduler, max_steps=steps)}
        out[name] = group
    return out


NERFACTO_DECAY_PROPORTION = 200_000 / 30_000
"""nerfacto's learning rates decay over 200,000 steps of a 30,000-step run."""


def decay_steps(config: ReconFusionTrainerConfig) -> int:
    """The decay horizon of a run: the configured one, else in nerfacto's proportion to its length."""
    return config.lr_decay_steps or round(config.max_num_iterations * NERFACTO_DECAY_PROPORTION)


class ReconFusionTrainer(Trainer):
    """See the module docstring."""

    config: ReconFusionTrainerConfig

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        steps = decay_steps(self.config)
        self.config.lr_decay_steps = steps
        self.config.optimizers = decaying_over(self.config.optimizers, steps)
        try:
            super().setup(test_mode)
        except InputError:
            remove_unstarted_run(self.base_dir, Path(self.config.output_dir))
            raise
        model_config = self.pipeline.model.config
        self.config.pipeline.model = model_config
        line = describe_settings(model_config, getattr(self.pipeline.model, "scene_reason", ""))
        CONSOLE.print(f"Fit settings: {line}, learning rates decay over {steps} steps", soft_wrap=True)
        if self.local_rank == 0:
            self.config.save_config()


def remove_unstarted_run(run: Path, output_dir: Path) -> None:
    """Delete ``run`` if it holds nothing but its config.yml, and the folders above it that it leaves empty (up to
    ``output_dir``); a run with anything else in it is left alone."""
    if not run.is_dir() or {p.name for p in run.iterdir()} - {"config.yml"}:
        return
    shutil.rmtree(run)
    output_dir = output_dir.resolve()
    for parent in run.resolve().parents:
        if parent == output_dir or output_dir not in parent.parents or any(parent.iterdir()):
            break
        parent.rmdir()
