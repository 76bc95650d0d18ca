"""The sample loss (RECONFUSION.md section 2) as a renderer-agnostic object.

:class:`SampleGuidance` owns everything about the prior's side of scene fitting: the novel-camera
sampler, the conditioning-view choice, the noise-level schedule, the cached diffusion targets and the
loss. The scene model only supplies a render function (see :data:`RenderFn`), so the same object
serves nerfstudio (nerfstudio_plugin) and the tests.

The three modes differ in one place, :meth:`SampleGuidance.loss`:

- ``annealed-multistep`` (the paper, our default): t ~ U[t_min, t_max], t_max = 1, t_min annealed
  linearly from 1 to ``t_min_final`` over training; the target x_hat is the current rendering
  noised to t and denoised with ``num_steps`` DDIM steps (no gradient through the prior); loss
  ``w (|x - x_hat|_1 + LPIPS(x, x_hat))`` with ``w = lambda_sample / num_views``.
- ``multistep``: the same with t drawn from [t_min_final, t_max] all along.
- ``sds``: score distillation (DreamFusion): the rendering's latent noised to t, one guided noise
  prediction, gradient ``w(t) (eps_hat - eps)`` (w(t) = 1 - alpha_bar_t, averaged over latent
  elements) pushed into the rendering through the VAE encoder; t uniform in [t_min_final, t_max]
  clipped to [0.02, 0.98].

The target of the multistep modes is, by default, the rendering plus the prior's change,
``x + D(z_sampled) - D(E(x))`` (``target="residual"``): what the autoencoder cannot reproduce is never
taught, a prior that changes nothing gives zero loss, and at t = 0 the target is the rendering itself.
``target="sample"`` is the paper's decoded sample ``D(z_sampled)``, kept to measure against.

Our addition beyond the paper, the coverage weight: where the observed views already determine a pixel
of the novel view, the prior has nothing to add and only its errors would be taught. Each pixel's
rendered surface point (from the rendered depth) is projected into the observed views; the smallest
angle between the novel ray and an observed ray through that point, over the views that have it in
frame, sets the pixel's weight: 0 below ``coverage_degrees[0]``, 1 above ``coverage_degrees[1]``,
linear in between (1 where no observed view has the point in frame). The target becomes
``x + weight (x_hat - x)``, so the L1 and LPIPS terms act only where the inputs leave the scene open,
and a view whose mean weight is below ``min_coverage`` teaches nothing at all. The pixels an observed view
shows also check the prior (``check_against_inputs``): a view teaches only if its targets are closer than
its rendering to the colours the observed views photographed there, by two standard errors; a view with too
few such pixels to judge follows the scene's last verdicts, and nothing is taught before the first.
With ``weight_schedule = "fade"`` the loss weight also falls with t_min, to 0 at the end of the anneal.

Novel views cover the whole frame: each is a square window, at a random place, of the nearest observed
view's frame resized so that its short side is the prior's resolution (the observed views the prior
is conditioned on stay centre-cropped squares, as it was trained).

Making it fast: targets are refreshed every ``refresh_every`` steps for ``views_per_refresh`` novel
views at once and reused in between (``refresh_every = 1`` is the paper). When the window rendered
with gradients is the whole view (``patch_size`` None), a refresh renders the new views once, with
gradients, and the same rendering both starts the prior's sampling and takes the loss. ``render_size``
renders novel views smaller than the prior's resolution (resized up for the prior, the targets' change resized
back down), which on a CPU costs less than the prior itself.
"""

from __future__ import annotations


import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from reconfusion.cameras import crop_intrinsics, normalize_cameras, scale_intrinsics
from reconfusion.novel_views import Layout, detect_layout, nearest_views, sample_novel_cameras
from reconfusion.observations import Coverage, Observations, observed_coverage, random_windows
from reconfusion.warping import warp_views

logger = logging.getLogger(__name__)

SampleLossMode = Literal["annealed-multistep", "multistep", "sds"]

CHECK_Z = 2.0
"""A view with enough photographed pixels teaches only if its targets are closer to them than its rendering by at
least this many standard errors (a one-sided test; neighbouring pixels correlate, so it is a lenient one)."""
CHECK_MIN_FRACTION = 0.05
"""Fewer photographed pixels than this fraction of the view: too little to judge the view by."""
CHECK_MEMORY = 5
"""Views too little photographed to judge teach when most of the last this many judged views passed."""

RenderFn = Callable[[Tensor, Tensor, int, int, Tensor], tuple[Tensor, Tensor | None]]
"""``render(c2w (K, 4, 4), intrinsics (K, 4), height, width, camera_index (K,)) -> (rgb, depth)``: the
scene model's colour (K, 3, height, width) and distance along each ray (K, 1, height, width; None when
the model has none, which turns the coverage weight off) at cameras given in the scene's own frame,
intrinsics in pixels of the requested image, ``camera_index`` the nearest observed view (for per-view
embeddings). Differentiable unless called under ``torch.no_grad()``."""


class Prior(Protocol):
    """What the guidance needs from :class:`reconfusion.prior.ReconFusionPrior`."""

    resolution: int

    def sample(self, observed_images, observed_c2w, observed_intrinsics, target_c2w, target_intrinsics, **kw): ...

    def encode_images(self, images): ...

    def condition(self, observed_images, observed_c2w, observed_intrinsics, target_c2w, target_intrinsics, **kw): ...

    def predict_noise(self, noisy_latents, timesteps, conditioning, guidance_scale): ...


@dataclass(frozen=True)
class SampleLossConfig:
    """Settings of the sample loss (shared by the three modes)."""

    mode: SampleLossMode = "annealed-multistep"
    """annealed-multistep (the paper), multistep (t from the full range all along) or sds (score distillation)."""
    lambda_sample: float | None = None
    """Loss weight for one observed view; the weight used is lambda_sample / number of observed views. None:
    :func:`default_sample_weight`. Small for a prior that generates (3e-4), on purpose: with Adam (nerfacto's
    optimizer), a parameter that only the sample loss reaches - space no input
    ray constrains - still moves by full steps whatever the weight, while parameters the photographs also
    constrain barely feel a small one; so the prior fills in what the inputs leave open and leaves alone what
    they decide (measured against 0.3 and 3e-3: README, "Beyond the paper")."""
    weight_schedule: Literal["constant", "fade"] = "fade"
    """constant (the paper) or fade: the weight falls with t_min, from full at the start to 0 when t_min
    reaches t_min_final, so late steps - whose targets change little - leave the fit to the observed views."""
    coverage_degrees: tuple[float, float] | None = (5.0, 25.0)
    """Coverage weight (our addition): a pixel's target moves towards the prior's only where the nearest observed
    ray through its surface point is more than the first angle away (fully beyond the second); None: weight 1
    everywhere (the paper)."""
    min_coverage: float = 0.1
    """A novel view whose mean coverage weight is below this teaches nothing (no sample drawn, no loss): where the
    inputs determine nearly all of a view, its few open pixels would mostly pass on the prior's errors, and Adam
    turns even a tiny gradient into full-size steps for the parameters only they reach. 0: every view."""
    check_against_inputs: bool = False
    """Our addition, off by default (with the bundled prior it did not help: README): a view teaches only if its
    targets are significantly closer than its rendering to what the observed views photographed, over the pixels
    they show (an observed ray within ``coverage_degrees[1]`` of the novel ray, through the rendered surface
    point); views too little photographed to judge follow the scene's recent verdicts. Needs depth and
    ``coverage_degrees``."""
    num_steps: int = 10
    """DDIM steps from t to 0 for each target (multistep modes)."""
    target: Literal["residual", "sample"] = "residual"
    """Multistep modes: residual (the rendering plus the prior's change D(z_sampled) - D(E(rendering)), free
    of the autoencoder's error) or sample (the paper's decoded sample D(z_sampled))."""
    guidance_scale: float | None = None
    """Classifier-free guidance scale of the prior; None: :func:`default_guidance_scale` (3 for a prior that generates,
    the paper's; 1 for one that repairs)."""
    t_max: float = 1.0
    """Upper end of the noise level t (1 = pure noise)."""
    t_min_final: float = 0.0
    """Lower end of t: where the annealed t_min ends, and the fixed lower end of the other modes."""
    anneal_steps: int | None = None
    """Steps over which t_min goes from t_max to t_min_final; None: the whole training run."""
    refresh_every: int = 1
    """Multistep modes: new diffusion targets every this many steps, reused in between (1 = the paper)."""
    views_per_refresh: int = 1
    """Multistep modes: novel views drawn (and denoised in one batch) per refresh; steps cycle through them."""
    render_size: int | None = None
    """Multistep modes: side of the novel views' renderings; None: the prior's resolution. A smaller rendering is
    resized up for the prior, and the targets' change resized back down for the loss, so rendering a view with
    gradients costs (render_size / resolution)^2 of a full one; the prior's finer changes are lost to the loss."""
    patch_size: int | None = None
    """Multistep modes: side of the random window of a cached view rendered with gradients each step
    (>= 24 for LPIPS); None: the whole view (at ``render_size``), rendered once per refresh for both the target
    and the loss. sds always renders whole views."""
    loss_every: int = 1
    """Apply the sample loss on every n-th step only."""
    num_conditioning_views: int = 3
    """Observed views conditioning the prior for a novel view (the nearest ones)."""
    l1_weight: float = 1.0
    """Weight of |x - x_hat|_1 inside the sample loss."""
    lpips_weight: float = 1.0
    """Weight of LPIPS(x, x_hat) inside the sample loss."""
    layout: Layout | Literal["auto"] = "auto"
    """How novel cameras are sampled: perturbed inputs (forward-facing), an ellipse around the focus
    (object-360), or detected from the input cameras (auto)."""
    position_jitter: float = 0.2
    """Forward-facing: novel centres move by this fraction of the input cameras' spread (std)."""
    rotation_jitter_degrees: float = 3.0
    """Forward-facing: novel views turn by at most this angle."""
    seed: int = 0
    """Seed of the camera, noise-level and diffusion-noise draws."""


def prior_setting(prior: Prior, name: str, default):
    """A setting of the prior's PriorConfig, or ``default`` for a prior without it (any object with the Prior methods)."""
    return getattr(getattr(prior, "config", None), name, default)


def default_guidance_scale(prior: Prior) -> float:
    """3, the paper's, for a prior that generates; 1 (no guidance) for one that repairs renderings: conditioned on the
    rendering, guidance only overshoots its repairs (docs/repair_prior/guidance_scale.md measures both)."""
    return 1.0 if prior_setting(prior, "repairs", False) else 3.0


def default_sample_weight(prior: Prior) -> float:
    """3e-4 for a prior that generates (README, "Beyond the paper"); 0.3 for one that repairs renderings, whose targets
    stay near them (chosen on scan24 over 3e-4 to 1, checked on scan37 and a second seed: a small gain, +0.07 to +0.28 dB
    on average; benchmarks/results/sample_loss_weight_repair/)."""
    return 0.3 if prior_setting(prior, "repairs", False) else 3e-4


def t_range(config: SampleLossConfig, step: int, total_steps: int) -> tuple[float, float]:
    """(t_min, t_max) of the noise level at ``step``: annealed linearly for annealed-multistep, fixed otherwise."""
    if config.mode != "annealed-multistep":
        return config.t_min_final, config.t_max
    horizon = max(config.anneal_steps or total_steps, 1)
    fraction = min(max(step / horizon, 0.0), 1.0)
    return config.t_max + (config.t_min_final - config.t_max) * fraction, config.t_max


@dataclass(frozen=True)
class NovelViews:
    """Novel cameras with their conditioning and (multistep modes) their diffusion targets."""

    c2w: Float[Tensor, "K 4 4"]
    """Camera-to-world in the scene model's frame."""
    intrinsics: Float[Tensor, "K 4"]
    """At the prior's resolution (the nearest observed view's)."""
    conditioning: Int[Tensor, "K V"]
    """Indices of the observed views conditioning each novel view, nearest first."""
    t: Float[Tensor, "K"]
    """Noise level each target was drawn at."""
    targets: Float[Tensor, "K 3 S S"] | None = None
    """x_hat, the prior's samples moved by the coverage weight (no gradient), at the renderings' size."""
    coverage: Float[Tensor, "K 1 R R"] | None = None
    """Per-pixel coverage weight the targets were made with."""
    active: Bool[Tensor, "K"] | None = None
    """Which views teach (mean coverage at least ``min_coverage``); the others' targets are their renderings."""
    step: int = 0
    """Training step the targets were made at."""


class SampleGuidance:
    """The sample loss for one scene: ``guidance.loss(step, render)`` -> dict of weighted loss terms."""

    def __init__(
        self,
        config: SampleLossConfig,
        prior: Prior,
        observations: Observations,
        total_steps: int,
        lpips: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> None:
        if config.mode != "sds" and config.lpips_weight > 0 and lpips is None:
            raise ValueError("the multistep sample loss needs an LPIPS network (or lpips_weight = 0)")
        trained_to = prior_setting(prior, "max_noise", 1.0)
        if config.t_max > trained_to:  # a repairing prior never saw noise above its max_noise
            logger.info("sample loss: t_max %.2f lowered to %.2f, the highest noise the prior was trained on",
                        config.t_max, trained_to)  # fmt: skip
            config = replace(config, t_max=trained_to, t_min_final=min(config.t_min_final, trained_to))
        if config.guidance_scale is None:
            config = replace(config, guidance_scale=default_guidance_scale(prior))
        if config.lambda_sample is None:
            config = replace(config, lambda_sample=default_sample_weight(prior))
        if config.render_size is not None and not 1 <= config.render_size <= prior.resolution:
            raise ValueError(f"render_size {config.render_size} must be in [1, the prior's resolution {prior.resolution}]")
        if config.patch_size is not None and config.patch_size > (config.render_size or prior.resolution):
            raise ValueError(f"patch_size {config.patch_size} exceeds the rendering's size "
                             f"{config.render_size or prior.resolution}")  # fmt: skip
        self.config, self.prior, self.observations, self.total_steps, self.lpips = (
            config, prior, observations, total_steps, lpips,
        )  # fmt: skip
        c2w = observations.c2w.detach().cpu().double().numpy()
        normalised, self.scale, self.focus = normalize_cameras(c2w)
        self.normalised_c2w = normalised
        self.layout: Layout = detect_layout(normalised) if config.layout == "auto" else config.layout
        self.weight = config.lambda_sample / len(observations)
        self.rng = np.random.default_rng(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.cache: NovelViews | None = None
        self.last_t = self.last_coverage = self.last_agreement = self.last_taught = float("nan")
        self.verdicts: list[bool] = []
        logger.info("sample loss: %s, %s cameras, weight %.4g", config.mode, self.layout, self.weight)

    def noise_range(self, step: int) -> tuple[float, float]:
        """(t_min, t_max) at ``step`` (see :func:`t_range`)."""
        return t_range(self.config, step, self.total_steps)

    # ------------------------------------------------------------------ cameras

    def to_world(self, c2w_normalised: np.ndarray) -> np.ndarray:
        """Normalised (prior) frame -> the scene model's frame."""
        out = np.array(c2w_normalised, np.float64)
        out[..., :3, 3] = out[..., :3, 3] / self.scale + self.focus
        return out

    def sample_views(self, num: int, step: int) -> NovelViews:
        """``num`` novel cameras, their conditioning views and noise levels (no targets yet); each camera sees
        a square window, at a random place, of its nearest observed view's whole frame."""
        cfg = self.config
        novel = sample_novel_cameras(
            self.normalised_c2w, num, self.rng, self.layout, cfg.position_jitter, cfg.rotation_jitter_degrees
        )
        conditioning = nearest_views(novel, self.normalised_c2w, cfg.num_conditioning_views)
        obs = self.observations
        nearest = torch.as_tensor(conditioning[:, 0], device=obs.c2w.device)
        intrinsics = random_windows(obs.frame_intrinsics[nearest], obs.frame_sizes[nearest], self.prior.resolution, self.rng)
        low, high = self.noise_range(step)
        t = low + (high - low) * torch.rand(num, generator=self.generator, dtype=torch.float64)
        return NovelViews(
            c2w=torch.as_tensor(self.to_world(novel), dtype=torch.float32, device=obs.c2w.device),
            intrinsics=intrinsics,
            conditioning=torch.as_tensor(conditioning, device=obs.c2w.device),
            t=t.float().to(obs.c2w.device),
            step=step,
        )

    def _prior_inputs(self, views: NovelViews) -> tuple[Tensor, ...]:
        """Observed images, cameras (normalised) and target cameras (normalised) for the prior."""
        obs = self.observations
        ids = views.conditioning
        normalised = torch.as_tensor(self.normalised_c2w, dtype=torch.float32, device=obs.c2w.device)
        target = views.c2w.clone()
        target[:, :3, 3] = (target[:, :3, 3] - target.new_tensor(self.focus)) * self.scale
        return obs.images[ids], normalised[ids], obs.intrinsics[ids], target, views.intrinsics

    # ------------------------------------------------------------------ losses

    def loss(self, step: int, render: RenderFn) -> dict[str, Tensor]:
        """The weighted sample-loss terms at ``step`` (empty on steps without a sample loss)."""
        cfg = self.config
        if step % cfg.loss_every != 0:
            return {}
        weight = self.weight_at(step)
        if weight <= 0:
            return {}
        if cfg.mode == "sds":
            return {"sds_loss": weight * self._score_distillation(step, render)}
        stale = self.cache is None or step - self.cache.step >= cfg.refresh_every or step < self.cache.step
        if stale and self.renders_whole_views:
            views = self.sample_views(cfg.views_per_refresh, step)
            rendering, depth = self._render(views, render)
            self.cache = self.make_targets(views, rendering.detach(), depth, step)
            active = self.cache.active
            if not active.any():
                return {}
            return {"sample_loss": weight * self._distance(rendering[active], self.cache.targets[active])}
        if stale:
            self.cache = self.refresh(step, render)
        index = (step // cfg.loss_every) % len(self.cache.t)
        if not self.cache.active[index]:
            return {}
        rendering, target = self._render_cached(index, render)
        return {"sample_loss": weight * self._distance(rendering, target)}

    @property
    def render_size(self) -> int:
        """Side of the novel views' renderings: ``render_size``, by default (and always for sds, which encodes the
        rendering) the prior's resolution."""
        if self.config.mode == "sds":
            return self.prior.resolution
        return self.config.render_size or self.prior.resolution

    @property
    def renders_whole_views(self) -> bool:
        """Whether the rendering with gradients is the whole novel view (so a refresh renders only once)."""
        return (self.config.patch_size or self.render_size) >= self.render_size

    def _distance(self, rendering: Tensor, target: Tensor) -> Tensor:
        """``l1_weight |x - x_hat|_1 + lpips_weight LPIPS(x, x_hat)``, averaged over views."""
        distance = self.config.l1_weight * (rendering - target).abs().mean()
        if self.config.lpips_weight > 0:
            distance = distance + self.config.lpips_weight * self.lpips(rendering, target).mean()
        return distance

    def weight_at(self, step: int) -> float:
        """The loss weight at ``step``: constant, or fading linearly with the annealed t_min."""
        if self.config.weight_schedule == "constant":
            return self.weight
        horizon = max(self.config.anneal_steps or self.total_steps, 1)
        return self.weight * max(0.0, 1.0 - step / horizon)

    def _render(self, views: NovelViews, render: RenderFn) -> tuple[Tensor, Tensor | None]:
        size = self.render_size
        intrinsics = self._rendering_intrinsics(views.intrinsics)
        rgb, depth = render(views.c2w, intrinsics, size, size, views.conditioning[:, 0])
        return rgb.float(), None if depth is None else depth.float()

    def _rendering_intrinsics(self, intrinsics: Tensor) -> Tensor:
        scale = self.render_size / self.prior.resolution
        return intrinsics if scale == 1 else scale_intrinsics(intrinsics, scale, scale)

    @torch.no_grad()
    def refresh(self, step: int, render: RenderFn) -> NovelViews:
        """Draw ``views_per_refresh`` novel views and denoise their current renderings into targets."""
        views = self.sample_views(self.config.views_per_refresh, step)
        return self.make_targets(views, *self._render(views, render), step)

    @torch.no_grad()
    def make_targets(self, views: NovelViews, renderings: Tensor, depth: Tensor | None, step: int) -> NovelViews:
        """The targets for ``renderings`` of ``views`` (at ``render_size``): the prior's samples from them, as
        residuals or as they are, moved towards by the coverage weight of each pixel; no sample is drawn when no
        view is active, and with ``check_against_inputs`` a view whose targets fail the check becomes inactive."""
        size, resolution = renderings.shape[-1], self.prior.resolution
        if size == resolution:
            return self._targets(views, renderings, depth, step)
        upsampled = F.interpolate(renderings, size=(resolution, resolution), mode="bilinear")
        depth = None if depth is None else F.interpolate(depth, size=(resolution, resolution), mode="nearest")
        full = self._targets(views, upsampled, depth, step)
        change = F.interpolate(full.targets - upsampled, size=(size, size), mode="bilinear", antialias=True)
        return replace(full, targets=(renderings + change).clamp(0, 1))

    def _targets(self, views: NovelViews, renderings: Tensor, depth: Tensor | None, step: int) -> NovelViews:
        coverage = self.coverage(views, depth)
        weights = self._weights(coverage, len(views.t))
        active = weights.mean(dim=(1, 2, 3)) >= self.config.min_coverage
        self.last_t, self.last_coverage = float(views.t.mean()), float(weights.mean())
        self.last_taught = float(active.float().mean())
        if not active.any():
            return NovelViews(views.c2w, views.intrinsics, views.conditioning, views.t, renderings, weights, active, step)
        init = renderings.clamp(0, 1)
        latents = self.prior.encode_images(init)  # once, for the sampling, the condition and the round trip
        samples = self.prior.sample(
            *self._prior_inputs(views),
            init_images=init,
            init_latents=latents,
            t_start=views.t,
            num_steps=self.config.num_steps,
            guidance_scale=self.config.guidance_scale,
            generator=self.generator,
            **self.warped_views(views, depth),
        ).float()
        if self.config.target == "residual":
            samples = self._residual_targets(renderings, samples, views.t, latents)
        targets = renderings + weights * (samples - renderings)
        if coverage is not None and self.config.check_against_inputs:
            active &= self._checked(input_agreement(renderings, targets, coverage, self.config.coverage_degrees[1]), active)
        self.last_taught = float(active.float().mean())
        targets = torch.where(active.view(-1, 1, 1, 1), targets, renderings)
        return NovelViews(views.c2w, views.intrinsics, views.conditioning, views.t, targets, weights, active, step)

    def warped_views(self, views: NovelViews, depth: Tensor | None) -> dict[str, Tensor]:
        """The conditioning views warped into ``views`` rendered at ``depth``, for a prior that takes them (none
        without depth: the prior then repairs as if no view showed the pixels)."""
        count = prior_setting(self.prior, "warped_views", 0)
        if not count or depth is None:
            return {}
        ids, obs = views.conditioning[:, :count], self.observations
        images, valid = warp_views(views.c2w, views.intrinsics, depth[:, 0], obs.images[ids], obs.c2w[ids],
                                   obs.intrinsics[ids])  # fmt: skip
        return {"warped_images": images, "warped_valid": valid}

    def _residual_targets(self, renderings: Tensor, samples: Tensor, t: Tensor, latents: Tensor) -> Tensor:
        """``rendering + sample - D(E(rendering))`` (``latents``: E(rendering)); the change is zero where t = 0
        (nothing was sampled)."""
        targets = residual_target(renderings, samples, self.prior.decode_latents(latents).float())
        return torch.where((t > 0).view(-1, 1, 1, 1), targets, renderings.clamp(0, 1))

    def _checked(self, agreement: Agreement, drawn: Tensor) -> Tensor:
        """Which views pass the check: those with enough photographed pixels must bring them significantly closer
        to the photographs; the others follow the scene's recent verdicts (untaught before the first)."""
        judged = agreement.fraction >= CHECK_MIN_FRACTION
        passed = agreement.z > CHECK_Z
        self.verdicts = (self.verdicts + passed[judged & drawn].tolist())[-CHECK_MEMORY:]
        trusted = len(self.verdicts) > 0 and 2 * sum(self.verdicts) > len(self.verdicts)
        if drawn.any():
            self.last_agreement = float(agreement.gain[drawn].mean())
        return torch.where(judged, passed, torch.full_like(passed, trusted))

    def coverage(self, views: NovelViews, depth: Tensor | None) -> Coverage | None:
        """What the observed views show of ``views`` rendered at ``depth``; None without depth or without
        ``coverage_degrees`` (the paper)."""
        if depth is None or self.config.coverage_degrees is None:
            return None
        return observed_coverage(views.c2w, views.intrinsics, depth, self.observations, self.config.check_against_inputs)

    def _weights(self, coverage: Coverage | None, count: int) -> Tensor:
        if coverage is None:
            size = self.prior.resolution
            return torch.ones(count, 1, size, size, device=self.observations.c2w.device)
        return coverage.weights(self.config.coverage_degrees)

    def coverage_weights(self, views: NovelViews, depth: Tensor | None) -> Tensor:
        """(K, 1, R, R) weights in [0, 1]: how far each pixel's surface point is from being seen, by angle,
        in an observed view (see the module docstring). Ones without depth or without ``coverage_degrees``."""
        return self._weights(self.coverage(views, depth), len(views.t))

    def _render_cached(self, index: int, render: RenderFn) -> tuple[Tensor, Tensor]:
        """Rendering (with gradients) and target of cached view ``index``, or of a random window of it."""
        views, size = self.cache, self.render_size
        patch = self.config.patch_size or size
        top, left = (int(v) for v in self.rng.integers(0, size - patch + 1, size=2))
        intrinsics = crop_intrinsics(self._rendering_intrinsics(views.intrinsics[index : index + 1]), left, top)
        rendering, _ = render(views.c2w[index : index + 1], intrinsics, patch, patch, views.conditioning[index : index + 1, 0])
        target = views.targets[index : index + 1, :, top : top + patch, left : left + patch]
        return rendering, target.to(rendering)

    def _score_distillation(self, step: int, render: RenderFn) -> Tensor:
        """DreamFusion's SDS: gradient w(t) (eps_hat - eps) on the rendering's latent, through the encoder."""
        prior = self.prior
        views = self.sample_views(1, step)
        rendering, depth = self._render(views, render)
        latents = prior.encode_images(rendering.clamp(0, 1)).float()
        schedule = prior.scheduler.alphas_cumprod.to(latents.device)
        t = views.t.clamp(0.02, 0.98)
        timesteps = (t * (len(schedule) - 1)).round().long()
        with torch.no_grad():
            noise = torch.randn(latents.shape, generator=self.generator).to(latents)
            alpha_bar = schedule[timesteps].view(-1, 1, 1, 1).float()
            noisy = alpha_bar.sqrt() * latents + (1 - alpha_bar).sqrt() * noise
            repairing = prior_setting(prior, "repairs", False)  # conditioned on the rendering it repairs
            evidence = {"rendering": rendering.detach().clamp(0, 1), "rendering_latents": latents.detach().to(prior.dtype),
                        **self.warped_views(views, depth)} if repairing else {}  # fmt: skip
            condition = prior.condition(*self._prior_inputs(views), with_null=self.config.guidance_scale != 1.0, **evidence)
            eps_hat = prior.predict_noise(noisy.to(prior.dtype), timesteps, condition, self.config.guidance_scale)
            gradient = (1 - alpha_bar) * (eps_hat.float() - noise)
        self.last_t = float(t.mean())
        # d/d latents of 0.5 * mean |latents - (latents - g)|^2 is g / numel: the SDS gradient without the
        # U-Net Jacobian, averaged over latent elements like the multistep loss averages over pixels.
        return 0.5 * F.mse_loss(latents, (latents - gradient).detach())


@dataclass(frozen=True)
class Agreement:
    """Per novel view, how the targets compare with the renderings on the pixels an observed view photographed."""

    gain: Float[Tensor, "K"]
    """Mean over those pixels of |rendering - colour| - |target - colour| (0 without pixels); positive: the
    targets are closer to the photographs."""
    z: Float[Tensor, "K"]
    """``gain`` over its standard error (0 without pixels)."""
    fraction: Float[Tensor, "K"]
    """Fraction of the view's pixels compared."""


def residual_target(renderings: Tensor, samples: Tensor, round_trip: Tensor) -> Tensor:
    """``rendering + sample - D(E(rendering))`` in [0, 1] (``round_trip``: D(E(rendering))): the prior's change
    without what the autoencoder loses of any image."""
    return (renderings + samples - round_trip).clamp(0, 1)


def input_agreement(
    renderings: Float[Tensor, "K 3 R R"], targets: Float[Tensor, "K 3 R R"], coverage: Coverage, max_degrees: float
) -> Agreement:
    """Compare targets and renderings with the observed colours over the pixels an observed ray within
    ``max_degrees`` sees."""
    shown = (coverage.known & (coverage.angle <= math.radians(max_degrees))).float().flatten(1)
    count = shown.sum(dim=1)
    gain = ((renderings - coverage.colour).abs() - (targets - coverage.colour).abs()).mean(dim=1).flatten(1)
    mean = (gain * shown).sum(dim=1) / count.clamp(min=1)
    variance = (((gain - mean[:, None]) ** 2) * shown).sum(dim=1) / (count - 1).clamp(min=1)
    z = torch.where(variance > 0, mean / (variance / count.clamp(min=1)).sqrt().clamp(min=1e-12), mean.sign() * math.inf)
    z = torch.where(count > 0, z, torch.zeros_like(z))
    return Agreement(mean, z.nan_to_num(0.0), count / shown.shape[1])
