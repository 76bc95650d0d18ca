"""The observed views as the prior sees them, and what they already show of a novel view.

:func:`square_views` turns the input images into the prior's square views. :func:`observed_coverage`
projects each pixel's rendered surface point of a novel view into the observed views and keeps, per
pixel, the smallest angle between the novel ray and an observed ray through that point (over the views
that have it in frame) and the colour that nearest view shows there. The sample loss uses the angle to
weight the prior's change (small angle: the inputs already decide the pixel) and the colour to check
the change against what was photographed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from reconfusion.cameras import crop_intrinsics, project, scale_intrinsics
from reconfusion.warping import sample_views, surface_points


@dataclass(frozen=True)
class Observations:
    """The observed views as the prior sees them: square, at its resolution."""

    images: Float[Tensor, "N 3 R R"]
    """Centre-cropped to square and resized to the prior's resolution, in [0, 1]."""
    c2w: Float[Tensor, "N 4 4"]
    """Camera-to-world in the scene model's frame (OpenGL)."""
    intrinsics: Float[Tensor, "N 4"]
    """fx, fy, cx, cy in pixels of ``images``."""
    frame_intrinsics: Float[Tensor, "N 4"]
    """fx, fy, cx, cy of the whole frame resized so that its short side is the prior's resolution."""
    frame_sizes: Int[Tensor, "N 2"]
    """(height, width) of those resized whole frames."""

    def __len__(self) -> int:
        return self.images.shape[0]


def random_windows(
    intrinsics: Float[Tensor, "N 4"], frame_sizes: Int[Tensor, "N 2"], size: int, rng: np.random.Generator
) -> Float[Tensor, "N 4"]:
    """Intrinsics of a ``size`` x ``size`` window at a random place (one ``rng`` draw per frame) in each frame of
    (height, width) ``frame_sizes``; a frame smaller than the window keeps its top-left corner."""
    slack = (frame_sizes - size).clamp(min=0).cpu().numpy()
    top_left = np.floor(rng.random((len(frame_sizes), 2)) * (slack + 1))
    shift = torch.zeros_like(intrinsics)
    shift[:, 2:] = torch.as_tensor(top_left[:, ::-1].copy(), dtype=intrinsics.dtype)  # cx -= left, cy -= top
    return intrinsics - shift.to(intrinsics.device)


def square_views(
    images: list[Float[Tensor, "3 H W"]], c2w: Float[Tensor, "N 4 4"], intrinsics: Float[Tensor, "N 4"], resolution: int
) -> Observations:
    """Centre-crop each view to a square and resize it to ``resolution`` (intrinsics follow); also the
    geometry of each whole frame at that scale, where novel views are placed."""
    squared, new_intrinsics, frames, sizes = [], [], [], []
    for image, k in zip(images, intrinsics):
        height, width = image.shape[-2:]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        crop = image[None, :3, top : top + side, left : left + side].float()
        squared.append(F.interpolate(crop, size=(resolution, resolution), mode="bilinear", antialias=True)[0])
        scale = resolution / side
        frames.append(scale_intrinsics(k.float(), scale, scale))
        sizes.append([max(resolution, round(height * scale)), max(resolution, round(width * scale))])
        new_intrinsics.append(crop_intrinsics(frames[-1], left * scale, top * scale))
    return Observations(
        torch.stack(squared).clamp(0, 1), c2w.float(), torch.stack(new_intrinsics), torch.stack(frames),
        torch.tensor(sizes, device=c2w.device),
    )  # fmt: skip


@dataclass(frozen=True)
class Coverage:
    """What the observed views show of each pixel of K novel views of side R."""

    angle: Float[Tensor, "K 1 R R"]
    """Smallest angle (radians) between the novel ray and an observed ray through the pixel's surface point,
    over the observed views that have the point in frame; inf where none has."""
    colour: Float[Tensor, "K 3 R R"] | None = None
    """The colour the nearest of those views shows at the point (its square image; zero where unknown); None
    when not asked for."""
    known: Bool[Tensor, "K 1 R R"] | None = None
    """Where ``colour`` is known: the point lies inside the nearest view's square image."""

    def weights(self, degrees: tuple[float, float]) -> Float[Tensor, "K 1 R R"]:
        """0 below the first angle, 1 above the second (and where no view sees the point), linear between."""
        low, high = (math.radians(a) for a in degrees)
        return ((self.angle - low) / max(high - low, 1e-6)).clamp(0, 1)


@torch.no_grad()
def observed_coverage(
    c2w: Float[Tensor, "K 4 4"],
    intrinsics: Float[Tensor, "K 4"],
    depth: Float[Tensor, "K 1 R R"],
    obs: Observations,
    colours: bool = True,
) -> Coverage:
    """The :class:`Coverage` of novel views rendered at ``depth`` (distance along each ray); the colours only
    with ``colours``."""
    count, size = depth.shape[0], depth.shape[-1]
    origins, points = surface_points(c2w, intrinsics, depth[:, 0])  # (K, R*R, 3)
    to_novel = F.normalize(origins - points, dim=-1)
    angle = torch.full(points.shape[:2], torch.inf, device=points.device)
    colour = torch.zeros(count, 3, size * size, device=points.device)
    known = torch.zeros(points.shape[:2], dtype=torch.bool, device=points.device)
    if colours:  # each square image where the points project into it
        each = lambda x: x[None].expand(count, *x.shape)  # noqa: E731
        squares, inside = sample_views(points, each(obs.images), each(obs.c2w), each(obs.intrinsics))
    for index, (height, width) in enumerate(obs.frame_sizes.tolist()):
        pixels, z = project(points, obs.c2w[index], obs.frame_intrinsics[index])
        in_frame = (z > 0) & (pixels[..., 0] >= 0) & (pixels[..., 0] <= width)
        in_frame &= (pixels[..., 1] >= 0) & (pixels[..., 1] <= height)
        to_observed = F.normalize(obs.c2w[index, :3, 3] - points, dim=-1)
        this_angle = torch.arccos((to_novel * to_observed).sum(-1).clamp(-1.0, 1.0))
        nearer = in_frame & (this_angle < angle)
        angle = torch.where(nearer, this_angle, angle)
        if colours:
            colour = torch.where(nearer[:, None], squares[:, index], colour)
            known = torch.where(nearer, inside[:, index], known)
    shape = (count, -1, size, size)
    if not colours:
        return Coverage(angle.view(shape))
    return Coverage(angle.view(shape), (colour * known[:, None]).view(shape), known.view(shape))
