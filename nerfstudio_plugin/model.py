"""nerfacto plus the prior's sample loss (RECONFUSION.md section 2).

:class:`ReconFusionModel` is nerfacto with four changes:

- the settings that depend on the scene (near/far, scene contraction, initial sampler, background,
  appearance embeddings) default to None and are taken from the dataparser's
  :class:`reconfusion.scene_fit.SceneFit` (the trainer writes the values chosen into config.yml);
  scenes with alpha train on random backgrounds and are rendered and evaluated on the declared
  background, with masked metrics (prediction and ground truth multiplied by the alpha mask) beside
  the unmasked ones;

- the sample loss of :class:`reconfusion.guidance.SampleGuidance` is added to the training losses
  when a prior is set up (:meth:`ReconFusionModel.setup_prior`; the pipeline does it for training).
  With ``prior=None`` the model is the baseline: the same nerfacto, data, split and schedule;
- the paper's Charbonnier reconstruction loss by default (nerfacto's MSE as an option);
- the sparse-view regularisers of :mod:`reconfusion.regularisers` (coarse-to-fine hash levels, occlusion,
  depth smoothness on unobserved patches, sparse depth, near/far annealing), each a switch of ``regularisers``;
- metrics from :mod:`reconfusion.metrics`, with an LPIPS built lazily on first use (offline it falls
  back to shift-tolerant LPIPS, and a failure is logged, never fatal). Neither the LPIPS network nor the
  prior is a registered submodule, so neither is ever written into a nerfstudio checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple, Type

import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.field_components.encodings import HashEncoding
from nerfstudio.field_components.mlp import MLP
from nerfstudio.model_components.losses import ds_nerf_depth_loss
from nerfstudio.model_components.renderers import background_color_override_context
from nerfstudio.models.nerfacto import NerfactoModel, NerfactoModelConfig
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor

from nerfstudio_plugin.compat import without_stock_lpips
from nerfstudio_plugin.hash_encoding import use_fast_hash_encoding
from reconfusion import metrics
from reconfusion.files import InputError
from reconfusion.adaptation import AdaptationConfig, adapt_prior
from reconfusion.guidance import SampleGuidance, SampleLossConfig
from reconfusion.observations import square_views
from reconfusion import regularisers as reg
from nerfstudio_plugin.dataparser import FIT_METADATA, SPARSE_DEPTH_METADATA
from reconfusion.scene_fit import SceneFit, SceneKind

logger = logging.getLogger(__name__)

BUNDLED_PRIOR = "bundled"


@dataclass
class ReconFusionModelConfig(NerfactoModelConfig):
    """nerfacto with the ReconFusion sample loss (prior=None: the baseline without it)."""

    _target: Type = field(default_factory=lambda: ReconFusionModel)
    prior: Optional[str] = BUNDLED_PRIOR
    """The diffusion prior: a folder written by ReconFusionPrior.save_pretrained, a hub id, "bundled" (the
    prior shipped in reconfusion/assets/default_prior), or None for the baseline without a prior."""
    prior_half_precision: bool = True
    """Run the prior in float16 on CUDA devices (always float32 on CPU)."""
    sample_loss: SampleLossConfig = field(default_factory=SampleLossConfig)
    """The sample loss (mode, weight, noise schedule, refresh of the targets, novel cameras)."""
    prior_adaptation: AdaptationConfig = field(default_factory=AdaptationConfig)
    """Fine-tune a repairing prior on the scene's input views (leave-one-out) before the fit; off by default."""
    regularisers: reg.RegularisersConfig = field(default_factory=reg.RegularisersConfig)
    """Sparse-view regularisers shared by the baseline and reconfusion (coarse-to-fine, occlusion, depth
    smoothness, sparse depth, near/far annealing)."""
    reconstruction_loss: Literal["mse", "charbonnier"] = "charbonnier"
    """Photometric loss on the observed rays: the paper's Charbonnier or nerfacto's MSE."""
    charbonnier_epsilon: float = 1e-3
    """epsilon in sqrt((x - y)^2 + epsilon^2)."""
    scene_kind: Optional[SceneKind] = None
    """Recorded, not set: the kind of scene the settings below were chosen for (written by the trainer)."""
    near_plane: Optional[float] = None  # type: ignore[assignment]
    """Near plane (normalised frame). None: from the scene (object sphere, LLFF bounds, else 0.05)."""
    far_plane: Optional[float] = None  # type: ignore[assignment]
    """Far plane (normalised frame). None: from the scene (object sphere, LLFF bounds, else 1000)."""
    background_color: Optional[Literal["random", "last_sample", "black", "white"]] = None  # type: ignore[assignment]
    """Training background. None: random for images with alpha, the declared colour, else last_sample."""
    display_background: Optional[Tuple[float, float, float]] = None
    """Colour renderings and ground truth are composed on outside training when training on random
    backgrounds. None: the scene's declared background (white where undeclared)."""
    disable_scene_contraction: Optional[bool] = None  # type: ignore[assignment]
    """None: no contraction for objects (bounded box), contraction otherwise."""
    proposal_initial_sampler: Optional[Literal["piecewise", "uniform"]] = None  # type: ignore[assignment]
    """None: uniform for objects, piecewise otherwise."""
    use_appearance_embedding: Optional[bool] = None  # type: ignore[assignment]
    """None: off with 9 training views or fewer (each view would explain itself), on above."""
    lpips_backend: metrics.LpipsBackend = "auto"
    """LPIPS for the perceptual loss and the metrics: lpips (standard), stlpips (shift-tolerant, ships with
    its weights), auto (standard where its weights load, else shift-tolerant)."""


NERFACTO_SETTINGS = SceneFit(
    kind="unbounded-360", reason="no scene information", near=0.05, far=1000.0, aabb=((-1.0,) * 3, (1.0,) * 3),
    contraction=True, initial_sampler="piecewise", background="last_sample", display_background=(1.0, 1.0, 1.0),
    appearance_embedding=True,
)  # fmt: skip
"""nerfacto's own defaults, for a model built without a dataparser's scene information."""


def resolve_scene_settings(config: ReconFusionModelConfig, fit: Optional[SceneFit]) -> ReconFusionModelConfig:
    """The config with every scene setting left at None taken from ``fit`` (nerfacto's defaults without it)."""
    fit = fit or NERFACTO_SETTINGS
    chosen = {
        "scene_kind": fit.kind, "near_plane": fit.near, "far_plane": fit.far, "background_color": fit.background,
        "display_background": fit.display_background, "disable_scene_contraction": not fit.contraction,
        "proposal_initial_sampler": fit.initial_sampler, "use_appearance_embedding": fit.appearance_embedding,
    }  # fmt: skip
    if config.scene_kind is not None:  # already resolved (a config.yml written by the trainer)
        chosen.pop("scene_kind")
    return replace(config, **{name: value for name, value in chosen.items() if getattr(config, name) is None})


def describe_settings(config: ReconFusionModelConfig, reason: str = "") -> str:
    """The scene settings of a resolved config, on one line."""
    return (
        f"scene kind {config.scene_kind}{f' ({reason})' if reason else ''}: near {config.near_plane:.3g}, far {config.far_plane:.3g}, "
        f"scene contraction {'off' if config.disable_scene_contraction else 'on'}, "
        f"{config.proposal_initial_sampler} initial sampler, background {config.background_color} "
        f"(shown on {list(config.display_background or ())}), appearance embedding "
        f"{'on' if config.use_appearance_embedding else 'off'}, {config.reconstruction_loss} reconstruction loss, "
        f"regularisers: {config.regularisers.describe()}"
    )


def composed(image: Tensor, background: Tuple[float, float, float]) -> Tensor:
    """An (..., 4) RGBA image composed on ``background`` (RGB images pass unchanged)."""
    if image.shape[-1] != 4:
        return image
    alpha = image[..., 3:]
    return image[..., :3] * alpha + torch.tensor(background, dtype=image.dtype, device=image.device) * (1.0 - alpha)


def random_state_kept(device: torch.device | str):
    """Context in which random draws (CPU, and the CUDA device) leave the global random state as it was."""
    device = torch.device(device)
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def resolve_prior(name: str) -> str:
    """The folder or hub id to load for a ``prior`` setting; InputError with the fix when it is missing."""
    if name == BUNDLED_PRIOR:
        from reconfusion.assets import DEFAULT_PRIOR_PATH

        if not Path(DEFAULT_PRIOR_PATH).is_dir():
            raise InputError(
                f"{DEFAULT_PRIOR_PATH}: the bundled prior is not installed; pass a prior with "
                "--pipeline.model.prior FOLDER_OR_HUB_ID (or use the baseline method without a prior)"
            )
        return str(DEFAULT_PRIOR_PATH)
    path = Path(name).expanduser()
    looks_like_path = path.is_absolute() or name.startswith((".", "~")) or len(Path(name).parts) != 2
    if looks_like_path and not path.is_dir():
        raise InputError(f"{name}: prior folder not found; pass --pipeline.model.prior FOLDER_OR_HUB_ID")
    return str(path) if path.is_dir() else name


class PerceptualMetric:
    """LPIPS loaded on first use; a failure is logged once and yields NaN (never fatal)."""

    def __init__(self, backend: metrics.LpipsBackend) -> None:
        self.requested = backend
        self.network: Optional[metrics.LPIPS] = None
        self.failed = False

    @property
    def backend(self) -> str:
        """Name of the LPIPS actually used ("unavailable" when none loaded)."""
        return self.network.backend if self.network is not None else ("unavailable" if self.failed else "not loaded")

    def load(self, device: torch.device) -> Optional[metrics.LPIPS]:
        if self.network is None and not self.failed:
            try:
                with random_state_kept(device):
                    self.network = metrics.load_lpips(self.requested, device)  # building it draws random weights
                CONSOLE.print(f"LPIPS backend: {self.network.backend}")
            except Exception as err:  # noqa: BLE001 - a metric must not stop training
                self.failed = True
                CONSOLE.print(f"[bold red]LPIPS unavailable ({type(err).__name__}: {err}); reporting NaN")
        return None if self.network is None else self.network.to(device)

    def __call__(self, image_a: Tensor, image_b: Tensor) -> Tensor:
        network = self.load(image_a.device)
        if network is None:
            return torch.tensor(float("nan"), device=image_a.device)
        return network(image_a, image_b).mean()


class ReconFusionModel(NerfactoModel):
    """See the module docstring."""

    config: ReconFusionModelConfig

    def populate_modules(self) -> None:
        fit = self.kwargs.get("metadata", {}).get(FIT_METADATA)
        self.config = resolve_scene_settings(self.config, fit)
        self.scene_reason = fit.reason if fit is not None else "no scene information from the dataparser"
        with without_stock_lpips():
            super().populate_modules()
        use_fast_hash_encoding(self)
        self.lpips = PerceptualMetric(self.config.lpips_backend)
        self.ssim = lambda a, b: metrics.ssim(a, b).mean()
        self.guidance: Optional[SampleGuidance] = None
        self.train_step = 0
        self.total_steps = 1
        self.patches: Optional[reg.UnobservedPatches] = None
        self.config.regularisers.check()
        self.hash_levels = self._coarse_to_fine_encoding() if self.config.regularisers.coarse_to_fine else None
        self.sparse_depth = self.kwargs.get("metadata", {}).get(SPARSE_DEPTH_METADATA)
        self.sparse_depth_draws = torch.Generator().manual_seed(0)

    # ------------------------------------------------------------------ sparse-view regularisers

    def _coarse_to_fine_encoding(self) -> HashEncoding:
        """The field's hash encoding, its output multiplied by per-level weights (all 1 until training sets them;
        a fused tcnn network is rebuilt as encoding + MLP so that the encoding's output can be reached)."""
        base = self.field.mlp_base
        if not (isinstance(base.model, torch.nn.Sequential) and isinstance(base.model[0], HashEncoding)):
            encoding = HashEncoding(
                num_levels=base.num_levels, min_res=base.min_res, max_res=base.max_res,
                log2_hashmap_size=base.log2_hashmap_size, features_per_level=base.features_per_level,
                hash_init_scale=base.hash_init_scale, implementation="tcnn",
            )  # fmt: skip
            mlp = MLP(
                in_dim=encoding.get_out_dim(), num_layers=base.num_layers, layer_width=base.layer_width,
                out_dim=base.out_dim, skip_connections=base.skip_connections, activation=base.activation,
                out_activation=base.out_activation, implementation="tcnn",
            )  # fmt: skip
            base.model = torch.nn.Sequential(encoding, mlp)
        encoding = base.model[0]
        encoding.register_buffer("level_weights", torch.ones(encoding.num_levels), persistent=False)
        features = encoding.features_per_level

        def masked(module, inputs, output):
            return output * module.level_weights.to(output).repeat_interleave(features)

        encoding.register_forward_hook(masked)
        return encoding

    def setup_regularisers(self, c2w: Tensor, intrinsics: Tensor, sizes: Tensor) -> None:
        """The observed cameras (OpenGL c2w (N, 4, 4), intrinsics (N, 4), (height, width) (N, 2)), where the
        unobserved patches and the middle of the scene come from."""
        self.patches = reg.UnobservedPatches(c2w, intrinsics, sizes)

    def _linear_range(self) -> bool:
        """Bounded scenes are sampled uniformly in depth, contracted ones in disparity."""
        return bool(self.config.disable_scene_contraction)

    def _scheduled_regularisers(self, step: int) -> None:
        """Hash levels released and the near/far range at ``step`` of training (everything released at the last
        step, as evaluation sees it, whatever the fractions)."""
        config = self.config.regularisers
        if step >= self.total_steps - 1:
            step = self.total_steps
        if self.hash_levels is not None:
            released = reg.progress(step, self.total_steps, config.coarse_to_fine)
            weights = reg.level_mask(self.hash_levels.num_levels, config.coarse_to_fine_start_levels, released)
            self.hash_levels.level_weights.copy_(weights)
        if config.anneal_near_far and self.patches is not None:
            released = reg.progress(step, self.total_steps, config.anneal_near_far)
            near, far = reg.annealed_near_far(
                self.config.near_plane, self.config.far_plane, self.patches.middle_distance, released,
                config.anneal_near_far_start, self._linear_range(),
            )  # fmt: skip
            self.collider.near_plane, self.collider.far_plane = near, far

    def regulariser_losses(self, outputs: Dict) -> Dict[str, Tensor]:
        """The weighted occlusion, depth-smoothness and sparse-depth terms of a training step (those switched on)."""
        config, losses = self.config.regularisers, {}
        if config.occlusion_weight > 0:
            zone = reg.occlusion_zone_end(
                self.config.near_plane, self.config.far_plane, config.occlusion_fraction, self._linear_range()
            )
            starts = outputs["ray_samples_list"][-1].frustums.starts
            losses["occlusion_loss"] = config.occlusion_weight * reg.occlusion_penalty(outputs["weights_list"][-1], starts, zone)
        if config.depth_smoothness_weight > 0 and self.patches is not None:
            with random_state_kept(self.device):  # the same ray batches with and without it
                c2w, intrinsics, nearest = self.patches.sample(config.depth_patches, config.depth_patch_size)
                size = config.depth_patch_size
                depth = self.render_outputs(c2w, intrinsics, size, size, nearest)["expected_depth"]
            smoothness = reg.depth_smoothness(depth, self.collider.near_plane)
            released = reg.progress(self.train_step, self.total_steps, config.depth_smoothness_decay)
            weight = reg.decayed(config.depth_smoothness_start_weight, config.depth_smoothness_weight, released)
            losses["depth_smoothness_loss"] = weight * smoothness
        if config.sparse_depth_weight > 0 and self.sparse_depth is not None:
            with random_state_kept(self.device):
                losses["sparse_depth_loss"] = config.sparse_depth_weight * self._sparse_depth_loss()
        return losses

    def _sparse_depth_loss(self) -> Tensor:
        """DS-NeRF's loss on a batch of the rays to the sparse points (nerfstudio's implementation)."""
        rays, config = self.sparse_depth, self.config.regularisers
        pick = torch.randint(len(rays["depths"]), (config.sparse_depth_rays,), generator=self.sparse_depth_draws)
        bundle = RayBundle(
            origins=rays["origins"][pick].to(self.device), directions=rays["directions"][pick].to(self.device),
            pixel_area=torch.full((len(pick), 1), 1e-6, device=self.device),
            camera_indices=rays["camera_indices"][pick, None].to(self.device),
        )  # fmt: skip
        outputs = self(bundle)
        samples = outputs["ray_samples_list"][-1].frustums
        steps, lengths = (samples.starts + samples.ends) / 2, samples.ends - samples.starts
        depths = rays["depths"][pick, None].to(self.device)
        return ds_nerf_depth_loss(outputs["weights_list"][-1], depths, steps, lengths, config.sparse_depth_sigma)

    # ------------------------------------------------------------------ the prior

    def setup_prior(self, images: List[Tensor], c2w: Tensor, intrinsics: Tensor, total_steps: int = 1) -> None:
        """Load the prior and build the sample loss from the observed views ((3, H, W) images in [0, 1],
        OpenGL c2w (N, 4, 4) and intrinsics (N, 4) in the model's frame). No-op for the baseline. Like the
        sample loss, it leaves the global random state as it found it (building networks draws from it)."""
        if self.config.prior is None:
            CONSOLE.print("No prior (baseline): fitting with the reconstruction loss only")
            return
        with random_state_kept(self.device):
            self._setup_prior(images, c2w, intrinsics, total_steps)

    def _setup_prior(self, images: List[Tensor], c2w: Tensor, intrinsics: Tensor, total_steps: int) -> None:
        from reconfusion.prior import ReconFusionPrior

        source = resolve_prior(self.config.prior)
        label = "the bundled prior " if self.config.prior == BUNDLED_PRIOR else "prior "
        CONSOLE.print(f"Loading {label}{source}")
        half = self.config.prior_half_precision and self.device.type == "cuda"
        try:
            prior = ReconFusionPrior.from_pretrained(source)
        except (OSError, ValueError) as err:
            if isinstance(err, InputError):
                raise
            raise InputError(
                f"{source}: could not load the prior ({err}); pass --pipeline.model.prior with a folder written by "
                "ReconFusionPrior.save_pretrained or a hub id"
            ) from err
        prior = prior.to(self.device, torch.float32)
        prior.eval().requires_grad_(False)
        observations = square_views(
            [image.to(self.device) for image in images], c2w.to(self.device), intrinsics.to(self.device), prior.resolution
        )
        if self.config.prior_adaptation.steps > 0:
            if not prior.config.repairs:
                raise InputError(f"{source}: a {prior.config.preset} prior cannot adapt to the scene; pass a repairing "
                                 "prior (python -m train_prior repair) or --pipeline.model.prior-adaptation.steps 0")  # fmt: skip
            adapt_prior(prior, observations, self.config.prior_adaptation)  # in float32, before any half precision
        prior = prior.to(self.device, torch.float16 if half else torch.float32)
        lpips, settings = self.lpips.load(self.device), self.config.sample_loss
        if lpips is None and settings.lpips_weight > 0:
            CONSOLE.print("[bold yellow]No LPIPS network: the sample loss uses its L1 term only")
            settings = replace(settings, lpips_weight=0.0)
        self.guidance = SampleGuidance(settings, prior, observations, total_steps, lpips)
        CONSOLE.print(
            f"Sample loss: {self.config.sample_loss.mode}, {self.guidance.layout} novel cameras, "
            f"weight {self.guidance.weight:.4g} ({len(observations)} views), prior at {prior.resolution}px"
        )

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes) -> List[TrainingCallback]:
        callbacks = super().get_training_callbacks(training_callback_attributes)
        trainer = training_callback_attributes.trainer
        if self.guidance is not None and trainer is not None:
            self.guidance.total_steps = trainer.config.max_num_iterations

        if trainer is not None:
            self.total_steps = trainer.config.max_num_iterations

        def remember_step(step: int) -> None:
            self.train_step = step
            self._scheduled_regularisers(step)

        location = [TrainingCallbackLocation.BEFORE_TRAIN_ITERATION]
        return callbacks + [TrainingCallback(where_to_run=location, update_every_num_iters=1, func=remember_step)]

    def render_views(
        self, c2w: Tensor, intrinsics: Tensor, height: int, width: int, camera_index: Tensor
    ) -> Tuple[Tensor, Tensor]:
        """Colour (K, 3, height, width) and median distance along the rays (K, 1, height, width) at cameras c2w
        (K, 4, 4) with intrinsics (K, 4) - the guidance's render function. Differentiable unless called under
        torch.no_grad (then rendered in chunks)."""
        outputs = self.render_outputs(c2w, intrinsics, height, width, camera_index)
        return outputs["rgb"], outputs["depth"].detach()

    def render_outputs(
        self, c2w: Tensor, intrinsics: Tensor, height: int, width: int, camera_index: Tensor
    ) -> Dict[str, Tensor]:
        """rgb, depth and expected_depth as (K, C, height, width) images (see :meth:`render_views`)."""
        count = c2w.shape[0]
        cameras = Cameras(
            camera_to_worlds=c2w[:, :3, :].float(),
            fx=intrinsics[:, 0:1].float(), fy=intrinsics[:, 1:2].float(),
            cx=intrinsics[:, 2:3].float(), cy=intrinsics[:, 3:4].float(),
            width=width, height=height, camera_type=CameraType.PERSPECTIVE,
        ).to(self.device)  # fmt: skip
        coords = cameras.get_image_coords(index=(0,)).to(self.device).expand(count, height, width, 2)
        indices = torch.arange(count, device=self.device)[:, None, None, None].expand(count, height, width, 1)
        bundle = cameras.generate_rays(camera_indices=indices, coords=coords).flatten()
        per_ray = camera_index.to(self.device).long()[:, None].expand(count, height * width)
        bundle.camera_indices = per_ray.reshape(-1, 1)
        with self.shown_on_display_background():
            if torch.is_grad_enabled():
                outputs = [self(bundle)]
            else:
                chunk = self.config.eval_num_rays_per_chunk
                outputs = [self(bundle[i : i + chunk]) for i in range(0, len(bundle), chunk)]
        return {
            key: torch.cat([out[key] for out in outputs]).view(count, height, width, -1).permute(0, 3, 1, 2)
            for key in ("rgb", "depth", "expected_depth")
        }

    # ------------------------------------------------------------------ backgrounds

    def shown_on_display_background(self, always: bool = True):
        """Context in which renderings (and blended ground truth) use the display background - only when
        training on random backgrounds (and, with ``always=False``, only outside training)."""
        if self.config.background_color != "random" or (not always and self.training):
            return contextlib.nullcontext()
        colour = torch.tensor(self.config.display_background or (1.0, 1.0, 1.0), dtype=torch.float32)
        return background_color_override_context(colour.to(self.device))

    def get_outputs(self, ray_bundle):
        with self.shown_on_display_background(always=False):
            return super().get_outputs(ray_bundle)

    # ------------------------------------------------------------------ losses and metrics

    def composed_ground_truth(self, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """The batch with RGBA images composed on the display background - except when training on random
        backgrounds, where nerfacto blends each batch on its own random colour."""
        if self.config.background_color == "random":
            return batch
        return {**batch, "image": composed(batch["image"], self.config.display_background or (1.0, 1.0, 1.0))}

    def get_metrics_dict(self, outputs, batch) -> Dict[str, Tensor]:
        batch = self.composed_ground_truth(batch)
        metrics_dict = super().get_metrics_dict(outputs, batch)
        if self.training and self.guidance is not None:
            metrics_dict["sample_t"] = torch.tensor(self.guidance.last_t)
            metrics_dict["sample_coverage"] = torch.tensor(self.guidance.last_coverage)
            metrics_dict["sample_taught"] = torch.tensor(self.guidance.last_taught)
            metrics_dict["sample_agreement"] = torch.tensor(self.guidance.last_agreement)
            metrics_dict["sample_t_min"] = torch.tensor(self.guidance.noise_range(self.train_step)[0])
        return metrics_dict

    def get_image_metrics_and_images(self, outputs, batch) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        image = batch["image"].to(self.device)
        with self.shown_on_display_background():
            metrics_dict, images = super().get_image_metrics_and_images(outputs, self.composed_ground_truth(batch))
        if image.shape[-1] == 4:  # masked metrics: both images multiplied by the object mask
            mask = image[..., 3:]
            pred, gt = (torch.moveaxis(x * mask, -1, 0)[None] for x in (outputs["rgb"], image[..., :3]))
            metrics_dict["psnr_masked"] = float(self.psnr(gt, pred))
            metrics_dict["ssim_masked"] = float(self.ssim(pred, gt))
            metrics_dict["lpips_masked"] = float(self.lpips(pred, gt))
        return metrics_dict, images

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        batch = self.composed_ground_truth(batch)
        loss_dict = super().get_loss_dict(outputs, batch, metrics_dict)
        if self.config.reconstruction_loss == "charbonnier":
            pred, target = self.renderer_rgb.blend_background_for_loss_computation(
                pred_image=outputs["rgb"], pred_accumulation=outputs["accumulation"], gt_image=batch["image"].to(self.device)
            )
            eps = self.config.charbonnier_epsilon
            loss_dict["rgb_loss"] = torch.sqrt((pred - target) ** 2 + eps**2).mean()
        if self.training:
            loss_dict.update(self.regulariser_losses(outputs))
        if self.training and self.guidance is not None:
            loss_dict.update(self.sample_loss())
        return loss_dict

    def sample_loss(self) -> Dict[str, Tensor]:
        """The guidance's loss terms at this step, computed without advancing the global random state: the
        baseline and reconfusion then draw the same ray batches and sample jitter, so the difference between
        their fits is the prior's, not a different random stream's (measured: one seed to another moves a
        sparse-view fit by more than the prior does)."""
        with random_state_kept(self.device):
            return self.guidance.loss(self.train_step, self.render_views)
