"""The nerfstudio methods (entry points in pyproject.toml).

- ``reconfusion``: nerfacto-sized fitting with the prior's sample loss (GPU).
- ``reconfusion-baseline``: the same model, data, split and schedule without the prior.
- ``reconfusion-cpu`` / ``reconfusion-baseline-cpu``: the same pair sized for small images on a CPU
  (DESIGN.md: 1024 rays, 64+32 proposal samples, 24 NeRF samples, 8 hash levels, log2 table 15;
  single-process data loading).

Each baseline is built by the same function as its method with ``prior=None``: their configs differ
only in the method name and the prior (tests/test_plugin.py checks this).

Importing this module registers the numpy types that nerfstudio checkpoints need with torch's
weights-only loader (see :mod:`nerfstudio_plugin.compat`) and makes bad input found by the plugin a
one-line error (:mod:`nerfstudio_plugin.errors`).
"""

from __future__ import annotations

from typing import Optional

from nerfstudio.cameras.camera_optimizers import CameraOptimizerConfig
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
from nerfstudio.data.datamanagers.parallel_datamanager import ParallelDataManagerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.plugins.types import MethodSpecification

from nerfstudio_plugin import errors
from nerfstudio_plugin.compat import register_checkpoint_globals
from nerfstudio_plugin.dataparser import ReconFusionDataParserConfig
from nerfstudio_plugin.model import BUNDLED_PRIOR, ReconFusionModelConfig
from nerfstudio_plugin.pipeline import ReconFusionPipelineConfig
from nerfstudio_plugin.trainer import ReconFusionTrainerConfig
from reconfusion.guidance import SampleLossConfig

register_checkpoint_globals()
errors.install()

CPU_SAMPLE_LOSS = SampleLossConfig(refresh_every=10, loss_every=10, views_per_refresh=1, render_size=64)
"""CPU: every 10th step, one novel view rendered whole at 64 px, with gradients; the same rendering, resized to
the prior's resolution, starts the prior's sampling, so every sample-loss step has a fresh target for one small
rendering's cost, and LPIPS sees the whole view. At the prior's 128 px the rendering cost more than the prior
itself. Measured with benchmarks/bench_plugin.py --step-timing (benchmarks/results/render_size/step_timing.md)."""
GPU_SAMPLE_LOSS = SampleLossConfig(refresh_every=10, views_per_refresh=4, patch_size=64)
"""GPU: a 64x64 window with gradients every step (the whole view for a 64 px prior; at 512 px it keeps
the rendering with gradients at the size of nerfacto's ray batch), targets refreshed every 10 steps for
4 views. Not measured with nerfstudio on a GPU yet."""


CPU_ITERATIONS = 600
"""The CPU preset's training budget, from test PSNR against iterations at the protocols' resolutions (fern
504x378, scan24 400x300, lego 400x400, 3 views): every scene is within 0.5 dB of its best by 600 steps
(benchmarks/results/convergence_full.md, with its command and plot)."""


def _optimizers() -> dict:
    """nerfacto's optimizers; the trainer stretches each decay over the run (lr_decay_steps)."""
    adam = {"optimizer": AdamOptimizerConfig(lr=1e-2, eps=1e-15)}
    decay = ExponentialDecaySchedulerConfig(lr_final=1e-4)
    return {
        "proposal_networks": {**adam, "scheduler": decay},
        "fields": {**adam, "scheduler": decay},
        "camera_opt": {
            "optimizer": AdamOptimizerConfig(lr=1e-3, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-4),
        },
    }


def gpu_config(method_name: str, prior: Optional[str]) -> ReconFusionTrainerConfig:
    """nerfacto's settings (4096 rays, mixed precision) on the sparse-view data, with or without the prior."""
    model = ReconFusionModelConfig(
        prior=prior,
        sample_loss=GPU_SAMPLE_LOSS,
        eval_num_rays_per_chunk=1 << 15,
        average_init_density=0.01,
        camera_optimizer=CameraOptimizerConfig(mode="off"),
    )
    datamanager = ParallelDataManagerConfig(
        dataparser=ReconFusionDataParserConfig(), train_num_rays_per_batch=4096, eval_num_rays_per_batch=4096
    )
    return ReconFusionTrainerConfig(
        method_name=method_name,
        steps_per_eval_batch=500,
        steps_per_save=2000,
        max_num_iterations=30000,
        mixed_precision=True,
        pipeline=ReconFusionPipelineConfig(datamanager=datamanager, model=model),
        optimizers=_optimizers(),
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    )


def cpu_config(method_name: str, prior: Optional[str]) -> ReconFusionTrainerConfig:
    """Small images on a CPU: light nerfacto (torch hash grid), single-process data, tensorboard logs."""
    model = ReconFusionModelConfig(
        prior=prior,
        sample_loss=CPU_SAMPLE_LOSS,
        implementation="torch",
        num_levels=8,
        log2_hashmap_size=15,
        num_proposal_samples_per_ray=(64, 32),
        num_nerf_samples_per_ray=24,
        eval_num_rays_per_chunk=4096,
        average_init_density=0.01,
        camera_optimizer=CameraOptimizerConfig(mode="off"),
    )
    datamanager = VanillaDataManagerConfig(
        dataparser=ReconFusionDataParserConfig(), train_num_rays_per_batch=1024, eval_num_rays_per_batch=1024
    )
    return ReconFusionTrainerConfig(
        method_name=method_name,
        steps_per_eval_batch=500,
        steps_per_eval_image=500,
        steps_per_eval_all_images=1_000_000,
        steps_per_save=1000,
        max_num_iterations=CPU_ITERATIONS,
        mixed_precision=False,
        pipeline=ReconFusionPipelineConfig(datamanager=datamanager, model=model),
        optimizers=_optimizers(),
        viewer=ViewerConfig(num_rays_per_chunk=4096, quit_on_train_completion=True),
        vis="tensorboard",
        machine=MachineConfig(device_type="cpu"),
    )


reconfusion = MethodSpecification(
    config=gpu_config("reconfusion", BUNDLED_PRIOR),
    description="ReconFusion: nerfacto + the diffusion prior's annealed multistep sample loss (sparse views)",
)
reconfusion_baseline = MethodSpecification(
    config=gpu_config("reconfusion-baseline", None),
    description="reconfusion without the prior: the same nerfacto, data, split and schedule",
)
reconfusion_cpu = MethodSpecification(
    config=cpu_config("reconfusion-cpu", BUNDLED_PRIOR),
    description="reconfusion sized for small images on a CPU (with the prior)",
)
reconfusion_baseline_cpu = MethodSpecification(
    config=cpu_config("reconfusion-baseline-cpu", None),
    description="reconfusion-cpu without the prior (the baseline at CPU size)",
)
