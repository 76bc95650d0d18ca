"""Sparse-view regularisers that cost no learned weights (FreeNeRF, RegNeRF), for any NeRF with a hash grid.

The baseline and reconfusion share them; each is a switch of :class:`RegularisersConfig`, off when its
weight (or schedule) is None or 0. The NeRF-specific wiring lives in ``nerfstudio_plugin.model``; here are
the schedules and the losses, on plain tensors:

- coarse to fine (FreeNeRF's frequency regularisation, for a hash grid): :func:`level_mask` hides the
  finer levels of the encoding at the start and releases them one after another over a fraction of training;
- occlusion (FreeNeRF): :func:`occlusion_penalty`, the rendering weight of the samples nearest to the
  training cameras - the first stretch of each training ray, measured as FreeNeRF measures it (a fraction
  of the disparity range for scenes with contraction, of the depth range for bounded objects);
- depth smoothness on patches seen from unobserved poses (RegNeRF): :func:`depth_smoothness`, squared
  differences of neighbouring disparities (relative to the near plane, so that the weight does not depend
  on the scene's scale);
- sparse depth (DS-NeRF, with nerfstudio's loss): rays from the training cameras to the sparse 3D points they
  observed end at those points (wired in ``nerfstudio_plugin.model``);
- near/far annealing (RegNeRF): :func:`annealed_near_far`, the sampled range starts around the middle of
  the scene (the training cameras' distance to their focus point) and widens to near/far early in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from reconfusion.cameras import normalize_cameras
from reconfusion.files import InputError
from reconfusion.novel_views import detect_layout, nearest_views, sample_novel_cameras
from reconfusion.observations import random_windows


@dataclass(frozen=True)
class RegularisersConfig:
    """Sparse-view regularisers of the NeRF (all off: nerfacto as it is)."""

    coarse_to_fine: Optional[float] = None
    """Fraction of training over which the hash grid's finer levels are released one by one (FreeNeRF uses 0.9
    of training for its frequencies); None: every level from the start."""
    coarse_to_fine_start_levels: int = 2
    """Levels of the hash grid visible from the first step."""
    occlusion_weight: float = 0.0
    """Weight of the occlusion penalty (FreeNeRF: 0.01); 0: off."""
    occlusion_fraction: float = 10 / 128
    """The stretch of each training ray that is penalised: this fraction of the ray's disparity range (of its
    depth range for scenes without contraction) from the near plane (FreeNeRF: the first 10 of 128 samples)."""
    depth_smoothness_weight: float = 0.0
    """Weight of the depth-smoothness loss on patches rendered from unobserved poses (RegNeRF: 0.1); 0: off."""
    depth_smoothness_start_weight: Optional[float] = None
    """RegNeRF's schedule: the weight falls geometrically from this one to ``depth_smoothness_weight`` over
    ``depth_smoothness_decay`` of training (RegNeRF: from 400 to 0.1 over its first 512 steps), so that the
    geometry is smooth before the photographs' detail is fitted; None: constant."""
    depth_smoothness_decay: float = 0.1
    """Fraction of training over which the depth-smoothness weight decays (with a start weight)."""
    depth_patch_size: int = 8
    """Side of each unobserved patch (RegNeRF: 8)."""
    depth_patches: int = 4
    """Unobserved patches rendered per step (each costs depth_patch_size^2 rays)."""
    sparse_depth_weight: float = 0.0
    """Weight of DS-NeRF's depth loss on rays from the training cameras to the scene's sparse points (COLMAP-posed
    scenes; points that two training views observed); 0: off. Scenes without points ignore it."""
    sparse_depth_rays: int = 256
    """Rays to sparse points rendered per step."""
    sparse_depth_sigma: float = 0.01
    """DS-NeRF's sigma (squared distance scale, in the normalised frame where cameras lie in [-1, 1]^3)."""
    anneal_near_far: Optional[float] = None
    """Fraction of training over which the sampled range widens from around the middle of the scene to near/far
    (RegNeRF); None: off."""
    anneal_near_far_start: float = 0.5
    """Share of the range (around the middle) sampled at the first step (RegNeRF: 0.5)."""

    def check(self) -> None:
        """InputError naming the setting when a schedule's fraction of training is outside (0, 1]."""
        for name in ("coarse_to_fine", "anneal_near_far", "depth_smoothness_decay"):
            fraction = getattr(self, name)
            if fraction is not None and not 0.0 < fraction <= 1.0:
                flag = f"--pipeline.model.regularisers.{name.replace('_', '-')}"
                raise InputError(f"{flag} {fraction}: must be in (0, 1] (a fraction of training)")

    def describe(self) -> str:
        """The regularisers that are on, on one line."""
        parts = []
        if self.coarse_to_fine:
            parts.append(f"coarse-to-fine hash levels from {self.coarse_to_fine_start_levels} over {self.coarse_to_fine:g} of training")
        if self.occlusion_weight > 0:
            parts.append(f"occlusion {self.occlusion_weight:g} (first {self.occlusion_fraction:.3g} of each ray)")
        if self.depth_smoothness_weight > 0:
            start = f"from {self.depth_smoothness_start_weight:g} over {self.depth_smoothness_decay:g} of training to " if self.depth_smoothness_start_weight else ""
            parts.append(f"depth smoothness {start}{self.depth_smoothness_weight:g} ({self.depth_patches} unobserved "
                         f"{self.depth_patch_size}x{self.depth_patch_size} patches a step)")  # fmt: skip
        if self.sparse_depth_weight > 0:
            parts.append(f"sparse depth {self.sparse_depth_weight:g} ({self.sparse_depth_rays} rays a step)")
        if self.anneal_near_far:
            parts.append(f"near/far annealed from {self.anneal_near_far_start:g} of the range over {self.anneal_near_far:g} of training")
        return ", ".join(parts) or "none"


def progress(step: int, total_steps: int, fraction: float) -> float:
    """How far (0 to 1) a schedule that ends at ``fraction`` of ``total_steps`` has come at ``step``."""
    horizon = max(fraction * total_steps, 1.0)
    return min(max(step / horizon, 0.0), 1.0)


def decayed(start: Optional[float], end: float, released: float) -> float:
    """A weight falling geometrically from ``start`` to ``end`` as ``released`` goes from 0 to 1 (``end`` without a start)."""
    if not start:
        return end
    return float(start * (end / start) ** released)


def level_mask(num_levels: int, start_levels: int, released: float) -> Tensor:
    """(num_levels,) weights of the hash levels: the first ``start_levels`` at 1, then each finer level rising
    from 0 to 1 in turn as ``released`` goes from 0 to 1 (all at 1 when it reaches 1)."""
    start = min(max(start_levels, 0), num_levels)
    visible = start + (num_levels - start) * released
    return (visible - torch.arange(num_levels, dtype=torch.float32)).clamp(0.0, 1.0)


def occlusion_zone_end(near: float, far: float, fraction: float, linear: bool) -> float:
    """Distance along a ray up to which samples count as next to the camera (see :class:`RegularisersConfig`)."""
    if linear:
        return near + fraction * (far - near)
    return 1.0 / (1.0 / near - fraction * (1.0 / near - 1.0 / far))


def occlusion_penalty(weights: Tensor, starts: Tensor, zone_end: float) -> Tensor:
    """Mean over rays of the rendering weight (R, S, 1) of the samples starting (R, S, 1) before ``zone_end``."""
    return (weights * (starts < zone_end)).sum(dim=(-2, -1)).mean()


def depth_smoothness(depth: Tensor, near: float) -> Tensor:
    """Mean squared difference of horizontally and vertically neighbouring disparities (near / depth, in
    (0, 1]) over patches (K, 1, P, P). The model passes the current near plane: with near/far annealing, the
    annealed one (larger early on, so the term weighs more while the range is narrow)."""
    disparity = near / depth.clamp(min=near)
    dx = disparity[..., :, 1:] - disparity[..., :, :-1]
    dy = disparity[..., 1:, :] - disparity[..., :-1, :]
    return (dx**2).mean() + (dy**2).mean()


def annealed_near_far(near: float, far: float, middle: float, released: float, start: float, linear: bool) -> tuple[float, float]:
    """(near, far) at ``released`` (0 to 1) of the annealing: ``start`` of the range around ``middle`` at 0, the
    whole range at 1; interpolated in disparity for scenes with contraction, in depth for bounded objects."""
    middle = min(max(middle, near), far)
    share = start + (1.0 - start) * released
    if linear:
        return middle + (near - middle) * share, middle + (far - middle) * share
    inverse = [1.0 / near, 1.0 / far, 1.0 / middle]
    return 1.0 / (inverse[2] + (inverse[0] - inverse[2]) * share), 1.0 / (inverse[2] + (inverse[1] - inverse[2]) * share)


class UnobservedPatches:
    """Small square patches seen from unobserved poses: the novel cameras of the sample loss
    (:func:`reconfusion.novel_views.sample_novel_cameras`), each with its nearest observed view's
    intrinsics and a window of ``size`` pixels at a random place of that view's frame."""

    def __init__(self, c2w: Tensor, intrinsics: Tensor, sizes: Tensor, seed: int = 0) -> None:
        """``c2w`` (N, 4, 4) OpenGL and ``intrinsics`` (N, 4) of the observed views in the model's frame,
        ``sizes`` (N, 2) their (height, width)."""
        self.normalised, self.scale, self.focus = normalize_cameras(c2w.detach().cpu().double().numpy())
        self.layout = detect_layout(self.normalised)
        self.middle_distance = float(np.linalg.norm(self.normalised[:, :3, 3], axis=-1).mean() / self.scale)
        """Mean distance (model frame) from the observed cameras to their focus point: the middle of the scene."""
        self.intrinsics, self.sizes = intrinsics.float().cpu(), sizes.long().cpu()
        self.rng = np.random.default_rng(seed)

    def sample(self, num: int, size: int) -> tuple[Tensor, Tensor, Tensor]:
        """(c2w (num, 4, 4), intrinsics (num, 4) of the windows, index (num,) of the nearest observed view)."""
        novel = sample_novel_cameras(self.normalised, num, self.rng, self.layout)
        nearest = torch.as_tensor(nearest_views(novel, self.normalised, 1)[:, 0])
        intrinsics = random_windows(self.intrinsics[nearest], self.sizes[nearest], size, self.rng)
        world = novel.copy()
        world[:, :3, 3] = world[:, :3, 3] / self.scale + self.focus
        return torch.as_tensor(world, dtype=torch.float32), intrinsics, nearest
