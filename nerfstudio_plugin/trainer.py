"""nerfstudio's trainer with two additions for short sparse-view fits.

- Learning rates decay over the run: every exponential-decay schedule ends at its final rate at
  ``lr_decay_steps`` (None: ``--max-num-iterations``), so a 600-step CPU fit ends near 1e-4 instead of
  stopping early in a schedule meant for 20,000 steps.
- The settings chosen from the scene (:func:`nerfstudio_plugin.model.resolve_scene_settings`) and the
  decay length are written into the run's config.yml after set-up, and logged on one line, so the run
  can be read, reproduced and evaluated (ns-eval) with exactly those values.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal, Optional, Type

from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils.rich_utils import CONSOLE

from nerfstudio_plugin.model import describe_settings


@dataclass
class ReconFusionTrainerConfig(TrainerConfig):
    """nerfstudio's TrainerConfig with learning-rate schedules that follow the run's length."""

    _target: Type = field(default_factory=lambda: ReconFusionTrainer)
    lr_decay_steps: Optional[int] = None
    """Steps over which the exponential learning-rate schedules reach their final rate. None: --max-num-iterations."""


def decaying_over(optimizers: dict, steps: int) -> dict:
    """The optimizer configs with every exponential-decay schedule spanning ``steps``."""
    out = {}
    for name, group in optimizers.items():
        scheduler = group.get("scheduler")
        if isinstance(scheduler, ExponentialDecaySchedulerConfig):
            group = {**group, "scheduler": replace(scheduler, max_steps=steps)}
        out[name] = group
    return out


class ReconFusionTrainer(Trainer):
    """See the module docstring."""

    config: ReconFusionTrainerConfig

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        steps = self.config.lr_decay_steps or self.config.max_num_iterations
        self.config.lr_decay_steps = steps
        self.config.optimizers = decaying_over(self.config.optimizers, steps)
        super().setup(test_mode)
        model_config = self.pipeline.model.config
        self.config.pipeline.model = model_config
        line = describe_settings(model_config, getattr(self.pipeline.model, "scene_reason", ""))
        CONSOLE.print(f"Fit settings: {line}, learning rates decay over {steps} steps", soft_wrap=True)
        if self.local_rank == 0:
            self.config.save_config()
