"""Procedural multiview scenes with exact cameras and depth: ``reconfusion data synthetic``.

Two layouts, both in a z-up world:

- ``object-360``: 2-6 textured primitives composed around the origin on a random solid background,
  cameras on a jittered orbit (random radius, elevation band and field of view) looking at the origin
  (the Objaverse-style setting of the paper);
- ``forward-facing``: 2-6 primitives standing on (or floating above) a textured floor in front of a
  textured back wall, cameras on a small jittered grid looking forward at them (like LLFF).

Conventions: OpenGL camera-to-world, intrinsics ``(fx, fy, cx, cy)`` with pixel centres at +0.5 (rays
match :func:`reconfusion.cameras.pixel_rays`), depth = distance along the camera's -z axis
(z-depth, world units) at each pixel centre, **0 where the pixel sees the background** (the nerfstudio
"no depth" value; only object-360 has background pixels). Anti-aliasing is adaptive 2x2 supersampling:
one ray per pixel centre gives depth and colour, and pixels at a surface boundary or colour step get
the mean of the four stratified sub-pixel samples instead (what a 2x render averaged down gives
there); depth stays exact at the pixel centre. Alpha is coverage (the fraction of a pixel's samples
that hit geometry). Object-360 scene folders hold RGBA PNGs (un-premultiplied colour) and declare
the background as ``reconfusion_background`` in transforms.json, so composing on it gives back the
rendered images; forward-facing ones (no background pixels) stay RGB. Everything is a deterministic
function of the seed: the same seed gives the same bytes (on one machine; the renderer avoids BLAS
and einsum, whose last bits depend on array sizes and thread counts).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from jaxtyping import Float
from rich.progress import track

from data_tools.splits import HOLDOUT_EVERY, auto_split
from data_tools.synthetic_render import World, foreground_rgba, render_rays
from data_tools.synthetic_scenes import LAYOUTS, Layout, SceneSpec, sample_scene
from reconfusion.files import InputError
from reconfusion.scene import BACKGROUND_KEY, Split, write_scene

logger = logging.getLogger("reconfusion")

SPLIT_VIEWS = (3, 6, 9)


@dataclass(frozen=True)
class RenderedScene:
    """The rendered views of a scene."""

    images: Float[np.ndarray, "V H W 3"]
    """float32 colours in [0, 1], composited on the world's background."""
    alpha: Float[np.ndarray, "V H W"]
    """float32 coverage in [0, 1]: fraction of a pixel's samples that hit geometry (0 = background)."""
    depth: Float[np.ndarray, "V H W"]
    """float32 z-depth (along the camera's -z) at pixel centres; 0 on background pixels."""
    c2w: Float[np.ndarray, "V 4 4"]
    """OpenGL camera-to-world (float64)."""
    intrinsics: Float[np.ndarray, "V 4"]
    """fx, fy, cx, cy in pixels (float64)."""


# ------------------------------------------------------------------------------------- rendering


def _row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products of (N, 3) arrays, elementwise (bit-identical whatever N)."""
    return a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1] + a[:, 2] * b[:, 2]


def sample_rays(c2w: np.ndarray, intrinsics: np.ndarray, view: np.ndarray, row: np.ndarray, col: np.ndarray):
    """World origins and unit directions (float64) through image points ``(col, row)`` of ``view``.

    Pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``; its centre is ``(j + 0.5, i + 0.5)``. The numpy twin
    of :func:`reconfusion.cameras.pixel_rays` (tests check they agree) for arbitrary sample points.
    """
    fx, fy, cx, cy = intrinsics[view].T
    x, y = (col - cx) / fx, -(row - cy) / fy
    rot = c2w[view, :3, :3]
    dirs = rot[:, :, 0] * x[:, None] + rot[:, :, 1] * y[:, None] - rot[:, :, 2]
    dirs /= np.sqrt(_row_dot(dirs, dirs))[:, None]
    return c2w[view, :3, 3], dirs


def _needs_supersampling(rgb: np.ndarray, surface: np.ndarray, threshold: float) -> np.ndarray:
    """Pixels (V, H, W) next to a different surface or a colour step above ``threshold``."""
    flag = np.zeros(surface.shape, bool)
    for axis in (1, 2):
        step = (np.diff(surface, axis=axis) != 0) | (np.abs(np.diff(rgb, axis=axis)).max(-1) > threshold)
        lower = [slice(None)] * 3
        upper = [slice(None)] * 3
        lower[axis], upper[axis] = slice(None, -1), slice(1, None)
        flag[tuple(lower)] |= step
        flag[tuple(upper)] |= step
    return flag


def render_views(world: World, c2w, intrinsics, size: int, supersample: int, edge_threshold: float = 0.05):
    """Images (V, size, size, 3), alpha and z-depth (V, size, size; 0 = background) of square views.

    One ray per pixel centre gives depth, a first colour and alpha (1 on a hit, 0 on background);
    pixels that border another surface or a colour step above ``edge_threshold`` are re-rendered with
    ``supersample`` x ``supersample`` stratified sub-pixel samples (adaptive anti-aliasing; 1 = none),
    their colour the samples' mean and their alpha the fraction of samples that hit geometry.
    """
    shape = (len(c2w), size, size)
    view, row, col = (a.ravel() for a in np.indices(shape))
    origins, dirs = sample_rays(c2w, intrinsics, view, row + 0.5, col + 0.5)
    rgb, t, surface = render_rays(world, origins, dirs)
    depth = np.where(np.isfinite(t), t * _row_dot(dirs, -c2w[view, :3, 2]), 0.0).astype(np.float32)
    alpha = np.isfinite(t).astype(np.float32)
    if supersample > 1:
        edges = np.flatnonzero(_needs_supersampling(rgb.reshape(*shape, 3), surface.reshape(shape), edge_threshold))
        offsets = (np.arange(supersample) + 0.5) / supersample
        total, hits = np.zeros((edges.size, 3), np.float32), np.zeros(edges.size, np.float32)
        for dy in offsets:
            for dx in offsets:
                sub_o, sub_d = sample_rays(c2w, intrinsics, view[edges], row[edges] + dy, col[edges] + dx)
                sub_rgb, sub_t, _ = render_rays(world, sub_o, sub_d)
                total += sub_rgb
                hits += np.isfinite(sub_t)
        rgb[edges], alpha[edges] = total / supersample**2, hits / supersample**2
    return rgb.reshape(*shape, 3), alpha.reshape(shape), depth.reshape(shape)


def render_scene(spec: SceneSpec, *, supersample: int = 2, max_rays: int = 2**16) -> RenderedScene:
    """Render every view of a spec (adaptive ``supersample`` x ``supersample`` anti-aliasing, 1 = off).

    Views are rendered in chunks of about ``max_rays`` pixels, so memory stays bounded at any size.
    """
    c2w, intrinsics = spec.camera_arrays()
    per_chunk = max(1, max_rays // spec.resolution**2)
    chunks = []
    with np.errstate(all="ignore"):
        for start in range(0, len(c2w), per_chunk):
            chunk = slice(start, start + per_chunk)
            chunks.append(render_views(spec.world, c2w[chunk], intrinsics[chunk], spec.resolution, supersample))
    images, alpha, depth = (np.concatenate(parts) for parts in zip(*chunks))
    return RenderedScene(images, alpha, depth, c2w, intrinsics)


# ---------------------------------------------------------------------------------------- output


def scene_splits(c2w: np.ndarray, views: tuple[int, ...] = SPLIT_VIEWS) -> dict[int, Split]:
    """The ``auto`` protocol of ``reconfusion data splits`` for each N that the view count allows.

    Every 8th view tests; the N training views are a farthest-point sample of the other camera centres.
    """
    available = len(c2w) - len(range(0, len(c2w), HOLDOUT_EVERY))
    return {n: auto_split(c2w[:, :3, 3], n) for n in views if n <= available}


def _check_arguments(out: Path, num_scenes: int, num_views: int, resolution: int, layout: str, seed: int) -> None:
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    for name, value, least in (("--scenes", num_scenes, 1), ("--views", num_views, 1), ("--resolution", resolution, 4)):
        if value < least:
            raise InputError(f"{name} {value} is too small; use at least {least}")
    if seed < 0:
        raise InputError(f"--seed {seed} is negative; use a seed >= 0")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; choose another output folder")


def _scene_files(spec: SceneSpec, views: RenderedScene) -> tuple[list[np.ndarray], dict]:
    """Images to write (RGBA where a scene has background pixels, else RGB) and transforms.json extras."""
    valid = views.depth[views.depth > 0]
    meta = {
        "generator": "reconfusion data synthetic",
        "seed": spec.seed,
        "layout": spec.layout,
        "anti_aliasing": "adaptive: 2x2 sub-pixel samples where a pixel borders another surface or a colour step",
        "depth": "z-depth along the camera's -z axis at pixel centres, world units; 0 = background",
        "near": float(valid.min()) if valid.size else 0.0,
        "far": float(valid.max()) if valid.size else 0.0,
    }
    if not np.any(views.alpha < 1):
        return list(views.images), {"synthetic": meta}
    meta["alpha"] = "coverage: fraction of a pixel's samples that hit geometry; colour un-premultiplied"
    background = spec.world.background
    extra = {BACKGROUND_KEY: [float(c) for c in background], "synthetic": meta}
    return list(foreground_rgba(views.images, views.alpha, background)), extra


def generate_scenes(
    out: Path,
    *,
    num_scenes: int,
    num_views: int,
    resolution: int,
    layout: Layout,
    seed: int,
    overwrite: bool = False,
) -> list[Path]:
    """Render ``num_scenes`` scenes into ``out/scene_{seed + i:05d}`` (scene i is sampled from seed + i).

    Each folder holds images (RGBA with the background colour declared in transforms.json where a
    scene has background pixels, i.e. object-360; RGB otherwise), z-depth maps (.npy, 0 = background),
    transforms.json and the auto protocol's ``train_test_split_{3,6,9}.json`` (those the view count
    allows). Each folder is written atomically; existing non-empty folders are an error unless
    ``overwrite``.
    """
    out = Path(out)
    _check_arguments(out, num_scenes, num_views, resolution, layout, seed)
    paths = [out / f"scene_{seed + i:05d}" for i in range(num_scenes)]
    taken = [p for p in paths if p.exists() and (not p.is_dir() or any(p.iterdir()))]
    if taken and not overwrite:
        raise InputError(f"{taken[0]}: scene folder exists and is not empty; choose another folder or pass --overwrite")
    for index, path in track(list(enumerate(paths)), description="rendering scenes", transient=True):
        spec = sample_scene(seed + index, layout=layout, num_views=num_views, resolution=resolution)
        views = render_scene(spec)
        splits = scene_splits(views.c2w)
        images, extra = _scene_files(spec, views)
        write_scene(path, images, views.c2w, views.intrinsics, splits=splits, depths=list(views.depth),
                    extra=extra, overwrite=overwrite)
        logger.debug("scene %d/%d: %s (splits %s)", index + 1, num_scenes, path, sorted(splits))
    logger.info("%d %s scenes of %d views at %dx%d in %s (splits for %s training views)", num_scenes, layout,
                num_views, resolution, resolution, out, sorted(splits) or "no")
    return paths
