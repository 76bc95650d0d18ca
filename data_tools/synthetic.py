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

import colorsys
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from jaxtyping import Float
from rich.progress import track

from data_tools.splits import HOLDOUT_EVERY, auto_split
from data_tools.synthetic_render import Light, Material, Plane, Primitive, Texture, World, extreme_points
from data_tools.synthetic_render import foreground_rgba, render_rays
from reconfusion.cameras import focal_from_fov
from reconfusion.files import InputError
from reconfusion.scene import BACKGROUND_KEY, Split, write_scene

logger = logging.getLogger("reconfusion")

Layout = Literal["object-360", "forward-facing"]
LAYOUTS: tuple[str, ...] = ("object-360", "forward-facing")
SPLIT_VIEWS = (3, 6, 9)
TEXTURES = ("solid", "checker", "stripes", "gradient", "noise", "marble")
KINDS = ("sphere", "box", "cylinder", "cone")


@dataclass(frozen=True)
class SceneSpec:
    """Everything that defines a procedural scene; sampled from a seed by :func:`sample_scene`."""

    seed: int
    """The seed it was sampled from."""
    layout: Layout
    """Camera/content arrangement."""
    resolution: int
    """Square image side in pixels."""
    world: World
    """Primitives, planes, lights, background."""
    c2w: tuple[tuple[float, ...], ...]
    """Per view, the OpenGL camera-to-world matrix flattened row-major (16 floats)."""
    intrinsics: tuple[tuple[float, float, float, float], ...]
    """Per view, fx, fy, cx, cy in pixels."""

    def camera_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(V, 4, 4) camera-to-world and (V, 4) intrinsics as float64 arrays."""
        return np.array(self.c2w, np.float64).reshape(-1, 4, 4), np.array(self.intrinsics, np.float64)


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


# -------------------------------------------------------------------------------------- sampling


def _colour(rng: np.random.Generator, saturation=(0.15, 0.95), value=(0.25, 1.0)) -> tuple[float, float, float]:
    hsv = rng.uniform(0.0, 1.0), rng.uniform(*saturation), rng.uniform(*value)
    return tuple(float(c) for c in colorsys.hsv_to_rgb(*hsv))


def _unit(rng: np.random.Generator) -> tuple[float, float, float]:
    v = rng.normal(size=3)
    return tuple(float(c) for c in v / np.linalg.norm(v))


def _material(rng: np.random.Generator, frequency=(1.5, 7.0)) -> Material:
    kind = TEXTURES[rng.choice(len(TEXTURES), p=[0.2, 0.2, 0.15, 0.15, 0.15, 0.15])]
    colour_a = _colour(rng)
    if rng.uniform() < 0.5:  # a second colour of the same hue family, lighter or darker
        colour_b = tuple(float(np.clip(c * rng.uniform(0.3, 1.6), 0.0, 1.0)) for c in colour_a)
    else:
        colour_b = _colour(rng)
    texture = Texture(
        kind=kind,
        colour_a=colour_a,
        colour_b=colour_b,
        frequency=float(rng.uniform(*frequency)),
        axis=_unit(rng),
        noise_seed=int(rng.integers(2**31)),
    )
    specular = 0.0 if rng.uniform() < 0.5 else float(rng.uniform(0.1, 0.5))
    return Material(texture=texture, specular=specular, shininess=float(rng.uniform(8.0, 64.0)))


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """Identity, a turn about z, or a uniformly random rotation."""
    mode = rng.uniform()
    if mode < 0.2:
        return np.eye(3)
    if mode < 0.5:
        a = rng.uniform(0.0, 2.0 * np.pi)
        return np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _scale(rng: np.random.Generator, kind: str, size: float) -> np.ndarray:
    if kind == "sphere" and rng.uniform() < 0.5:
        return np.full(3, size)
    if kind in ("cylinder", "cone"):
        radius = size * rng.uniform(0.5, 1.0)
        return np.array([radius, radius, size * rng.uniform(0.6, 1.5)])
    return size * rng.uniform(0.5, 1.2, size=3)


def _primitive(rng: np.random.Generator, centre: np.ndarray, size: float) -> Primitive:
    kind = KINDS[rng.choice(len(KINDS), p=[0.3, 0.3, 0.25, 0.15])]
    return Primitive(
        kind=kind,
        centre=tuple(float(c) for c in centre),
        rotation=tuple(tuple(float(v) for v in row) for row in _rotation(rng)),
        scale=tuple(float(s) for s in _scale(rng, kind, size)),
        material=_material(rng),
    )


def _moved(prim: Primitive, shift: np.ndarray) -> Primitive:
    centre = tuple(float(c) for c in np.add(prim.centre, shift))
    return Primitive(prim.kind, centre, prim.rotation, prim.scale, prim.material)


def _object_composition(rng: np.random.Generator) -> tuple[tuple[Primitive, ...], float]:
    """2-6 primitives clustered around the origin; returns them and their bounding radius."""
    count = int(rng.integers(2, 7))
    prims = [_primitive(rng, rng.normal(scale=0.05, size=3), rng.uniform(0.3, 0.5))]
    for _ in range(count - 1):
        centre = np.asarray(_unit(rng)) * rng.uniform(0.2, 0.55)
        prims.append(_primitive(rng, centre, rng.uniform(0.12, 0.35)))
    points = np.concatenate([extreme_points(p) for p in prims])
    shift = -0.5 * (points.min(0) + points.max(0))
    prims = [_moved(p, shift) for p in prims]
    bound = float(np.linalg.norm(points + shift, axis=1).max())
    return tuple(prims), bound


def _tabletop(rng: np.random.Generator) -> tuple[tuple[Primitive, ...], tuple[Plane, ...]]:
    """2-6 primitives on a floor (z = 0) in front of a back wall (y = wall)."""
    prims = []
    for _ in range(int(rng.integers(2, 7))):
        prim = _primitive(rng, np.zeros(3), rng.uniform(0.2, 0.5))
        lift = -extreme_points(prim)[:, 2].min() + (rng.uniform(0.05, 0.5) if rng.uniform() < 0.2 else 0.0)
        prims.append(_moved(prim, [rng.uniform(-1.1, 1.1), rng.uniform(-0.7, 0.7), lift]))
    wall = float(rng.uniform(1.3, 2.3))
    planes = (
        Plane(point=(0.0, 0.0, 0.0), normal=(0.0, 0.0, 1.0), material=_material(rng, frequency=(1.0, 4.0))),
        Plane(point=(0.0, wall, 0.0), normal=(0.0, -1.0, 0.0), material=_material(rng, frequency=(1.0, 4.0))),
    )
    return tuple(prims), planes


def _lights(rng: np.random.Generator, layout: str) -> tuple[tuple[Light, ...], tuple[float, float, float]]:
    """A key light, a weaker fill light from another side (70% of scenes) and ambient light."""
    key_azimuth = rng.uniform(0.0, 2.0 * np.pi)
    if layout == "forward-facing":  # from the cameras' side, so shadows fall on floor and wall
        key_azimuth = rng.uniform(np.radians(200), np.radians(340))
    azimuths = [key_azimuth, key_azimuth + rng.uniform(np.radians(90), np.radians(270))]
    strengths = [rng.uniform(0.7, 1.05), rng.uniform(0.2, 0.45) if rng.uniform() < 0.7 else 0.0]
    lights = []
    for azimuth, strength in zip(azimuths, strengths):
        elevation = rng.uniform(np.radians(20), np.radians(75))
        direction = (np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation))
        tint = strength * rng.uniform(0.9, 1.1, size=3)
        if strength > 0:
            lights.append(Light(tuple(float(c) for c in direction), tuple(float(c) for c in tint)))
    ambient = rng.uniform(0.25, 0.5) * rng.uniform(0.9, 1.1, size=3)
    return tuple(lights), tuple(float(c) for c in ambient)


def _background(rng: np.random.Generator) -> tuple[float, float, float]:
    mode = rng.uniform()
    if mode < 0.25:  # near white, as in many object renders
        return tuple(float(v) for v in rng.uniform(0.85, 1.0) * rng.uniform(0.97, 1.0, size=3))
    if mode < 0.4:
        return _colour(rng, saturation=(0.0, 0.3), value=(0.02, 0.2))
    return _colour(rng, saturation=(0.05, 0.8), value=(0.3, 1.0))


# --------------------------------------------------------------------------------------- cameras


def look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """OpenGL camera-to-world (4, 4) of a camera at ``eye`` looking at ``target`` (``up`` stays up)."""
    forward = np.asarray(target, np.float64) - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, np.cross(right, forward), -forward, eye
    return c2w


def _orbit(rng: np.random.Generator, num_views: int, bound: float) -> tuple[np.ndarray, float]:
    """Cameras on a jittered orbit around the origin; the bounding sphere spans 80-100% of the fov."""
    fov = rng.uniform(np.radians(30), np.radians(55))
    radius = bound / np.sin(rng.uniform(0.8, 1.0) * fov / 2)
    low = rng.uniform(np.radians(-10), np.radians(30))
    high = min(low + rng.uniform(np.radians(10), np.radians(50)), np.radians(80))
    step = 2.0 * np.pi / num_views
    azimuth = rng.uniform(0.0, 2.0 * np.pi) + step * (np.arange(num_views) + rng.uniform(-0.3, 0.3, num_views))
    elevation = rng.uniform(low, high, num_views)
    dist = radius * rng.uniform(1.0, 1.08, num_views)
    eyes = dist[:, None] * np.stack(
        [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)], 1
    )
    targets = rng.normal(scale=0.03 * bound, size=(num_views, 3))
    return np.stack([look_at(e, t) for e, t in zip(eyes, targets)]), fov


def _grid(rng: np.random.Generator, num_views: int) -> tuple[np.ndarray, float]:
    """Cameras on a jittered grid in front of the table (y < 0), looking roughly forward (+y)."""
    fov = rng.uniform(np.radians(40), np.radians(60))
    distance, height = rng.uniform(2.0, 3.0), rng.uniform(0.5, 1.3)
    width, tall = rng.uniform(0.5, 1.2), rng.uniform(0.2, 0.6)
    cols = int(np.ceil(np.sqrt(num_views * width / tall)))
    rows = int(np.ceil(num_views / cols))
    cells = np.stack(np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij"), -1).reshape(-1, 2)[:num_views]
    jitter = rng.uniform(-0.25, 0.25, size=(num_views, 2))
    u = (cells[:, 1] + 0.5 + jitter[:, 1]) / cols - 0.5
    v = (cells[:, 0] + 0.5 + jitter[:, 0]) / rows - 0.5
    eyes = np.stack([width * u, -distance + rng.uniform(-0.05, 0.05, num_views), height - tall * v], 1)
    target = np.array([rng.uniform(-0.15, 0.15), rng.uniform(-0.1, 0.4), rng.uniform(0.2, 0.45)])
    targets = target + rng.normal(scale=0.04, size=(num_views, 3))
    return np.stack([look_at(e, t) for e, t in zip(eyes, targets)]), fov


def sample_scene(seed: int, *, layout: Layout, num_views: int, resolution: int) -> SceneSpec:
    """Sample a scene (content, lights, cameras) from a seed; the same arguments give the same spec."""
    rng = np.random.default_rng([seed, LAYOUTS.index(layout)])
    if layout == "object-360":
        prims, bound = _object_composition(rng)
        planes, background = (), _background(rng)
        c2w, fov = _orbit(rng, num_views, bound)
    else:
        prims, planes = _tabletop(rng)
        background = _colour(rng)
        c2w, fov = _grid(rng, num_views)
    lights, ambient = _lights(rng, layout)
    world = World(prims, planes, lights, ambient, background, shadows=bool(rng.uniform() < 0.8))
    focal = focal_from_fov(fov, resolution)
    intrinsics = tuple((float(focal), float(focal), resolution / 2.0, resolution / 2.0) for _ in range(num_views))
    c2w_flat = tuple(tuple(float(v) for v in m.ravel()) for m in c2w)
    return SceneSpec(seed, layout, resolution, world, c2w_flat, intrinsics)


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
