"""Procedural scene descriptions: random primitives, materials, lights and cameras from a seed.

:func:`sample_scene` draws a :class:`SceneSpec` (what :mod:`data_tools.synthetic` renders) for either
layout; everything is a deterministic function of the seed.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import Literal

import numpy as np

from data_tools.synthetic_render import Light, Material, Plane, Primitive, Texture, World, extreme_points
from reconfusion.cameras import focal_from_fov

Layout = Literal["object-360", "forward-facing"]
LAYOUTS: tuple[str, ...] = ("object-360", "forward-facing")
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
