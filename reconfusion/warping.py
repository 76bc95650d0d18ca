"""The observed views warped into a target view with the target's rendered depth (NeRFLiX's evidence for repairing a
rendering): each target pixel's surface point is projected into each observed view and that view's colour there is
taken, with its validity (in front of the view and inside its frame). Occlusion is not tested: the observed views'
own depth is unknown.

The repairing prior (``PriorConfig.warped_views``) takes these as a condition; the sample loss warps with the NeRF's
depth, the prior's training data with the corpus's stored depth.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from reconfusion.cameras import pixel_rays, project


def surface_points(
    c2w: Float[Tensor, "K 4 4"], intrinsics: Float[Tensor, "K 4"], depth: Float[Tensor, "K H W"]
) -> tuple[Float[Tensor, "K P 3"], Float[Tensor, "K P 3"]]:
    """(ray origins, surface points) of every pixel of K views rendered at ``depth`` (distance along each ray),
    P = H * W in row-major order."""
    count, height, width = depth.shape
    origins, directions = pixel_rays(c2w.float(), intrinsics.float(), height, width)
    return origins.reshape(count, -1, 3), (origins + directions * depth.float()[..., None]).reshape(count, -1, 3)


def sample_views(
    points: Float[Tensor, "K P 3"],
    images: Float[Tensor, "K V 3 h w"] | Sequence[Float[Tensor, "K 3 h w"]],
    image_c2w: Float[Tensor, "K V 4 4"],
    image_intrinsics: Float[Tensor, "K V 4"],
) -> tuple[Float[Tensor, "K V 3 P"], Float[Tensor, "K V P"]]:
    """(colours, validity) of V views (of any sizes when given as a list) where ``points`` project into them;
    valid: in front of the view, inside its frame and finite. Colours are zero where invalid."""
    views = images.unbind(1) if isinstance(images, Tensor) else list(images)
    if len(views) != image_c2w.shape[1] or len(views) != image_intrinsics.shape[1]:
        raise ValueError(f"{len(views)} observed views but cameras for {image_c2w.shape[1]} and intrinsics for "
                         f"{image_intrinsics.shape[1]}")  # fmt: skip
    colours, valid = [], []
    for index, image in enumerate(views):
        pixels, z = project(points, image_c2w[:, index].float(), image_intrinsics[:, index].float())
        grid = pixels / pixels.new_tensor([image.shape[-1], image.shape[-2]]) * 2 - 1  # align_corners=False
        inside = (z > 0) & (grid.abs() <= 1).all(-1) & torch.isfinite(grid).all(-1)
        grid = torch.nan_to_num(grid, nan=2.0, posinf=2.0, neginf=2.0).clamp(-2, 2)
        sampled = F.grid_sample(image.float(), grid[:, None], align_corners=False, padding_mode="border")[:, :, 0]
        colours.append(sampled * inside[:, None])
        valid.append(inside)
    return torch.stack(colours, 1), torch.stack(valid, 1)


def warp_views(
    c2w: Float[Tensor, "K 4 4"],
    intrinsics: Float[Tensor, "K 4"],
    depth: Float[Tensor, "K H W"],
    images: Float[Tensor, "K V 3 h w"] | Sequence[Float[Tensor, "K 3 h w"]],
    image_c2w: Float[Tensor, "K V 4 4"],
    image_intrinsics: Float[Tensor, "K V 4"],
) -> tuple[Float[Tensor, "K V 3 H W"], Float[Tensor, "K V 1 H W"]]:
    """(colours, validity) of V observed views warped into K target views rendered at ``depth`` (distance along
    each ray; not finite: invalid). The views may differ in size when given as a list. Colours are zero where
    invalid."""
    count, height, width = depth.shape
    _, points = surface_points(c2w, intrinsics, depth)
    colours, valid = sample_views(points, images, image_c2w, image_intrinsics)
    return colours.unflatten(-1, (height, width)), valid.float().unflatten(-1, (height, width))[:, :, None]
