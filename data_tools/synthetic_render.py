"""The analytic ray caster behind the procedural scenes (pure numpy, vectorised over rays).

A scene is a handful of textured primitives (spheres/ellipsoids, boxes, cylinders, cones, each with
its own rotation and per-axis scale) plus optional infinite planes (the floor and back wall of the
forward-facing layout), lit by directional lights and an ambient term: Lambertian diffuse plus a
Blinn-Phong highlight, with optional hard shadows cast by the primitives (one shadow ray per light).
:func:`foreground_rgba` turns composited colours and coverage back into un-premultiplied RGBA.

Every primitive is intersected in its own unit frame: a world point ``x`` has local coordinates
``p = R^T (x - centre) / scale``. Directions are mapped the same way without renormalising, so the
ray parameter ``t`` is the same in both frames and world-space normals are ``R (n_local / scale)``.
Textures are functions of 3D object-space coordinates, so they are consistent across views.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

PrimitiveKind = Literal["sphere", "box", "cylinder", "cone"]
TextureKind = Literal["solid", "checker", "stripes", "gradient", "noise", "marble"]
Vec3 = tuple[float, float, float]

T_MIN = 1e-4
"""Smallest accepted ray parameter (world units; scenes span a few units)."""
SHADOW_OFFSET = 2e-3
"""Shadow rays start this far along the surface normal, against self-shadowing acne."""
NOISE_LATTICE = 16
"""Side of the periodic value-noise lattice."""


@dataclass(frozen=True)
class Texture:
    """A procedural 3D texture: colour as a function of object-space coordinates."""

    kind: TextureKind
    """Pattern: one colour, 3D checker, stripes, linear gradient, value noise or noise-warped stripes."""
    colour_a: Vec3
    """First colour (RGB in [0, 1]); the only one for ``solid``."""
    colour_b: Vec3
    """Second colour."""
    frequency: float
    """Pattern cycles per world unit."""
    axis: Vec3
    """Unit direction of stripes, gradients and marble bands."""
    noise_seed: int
    """Seed of the value-noise lattice (noise and marble)."""


@dataclass(frozen=True)
class Material:
    """Surface appearance."""

    texture: Texture
    """Albedo pattern."""
    specular: float
    """Strength of the Blinn-Phong highlight (0 = matte)."""
    shininess: float
    """Blinn-Phong exponent."""


@dataclass(frozen=True)
class Primitive:
    """A unit shape placed by rotation, per-axis scale and centre."""

    kind: PrimitiveKind
    """Unit sphere, cube [-1, 1]^3, cylinder (radius 1, z in [-1, 1]) or cone (base radius 1 at z=-1, apex at z=1)."""
    centre: Vec3
    """World position of the local origin."""
    rotation: tuple[Vec3, Vec3, Vec3]
    """Local-to-world rotation matrix, row-major; its columns are the local axes in world space."""
    scale: Vec3
    """Half-extents along the local axes (an ellipsoid is a sphere with unequal scales)."""
    material: Material
    """Appearance."""


@dataclass(frozen=True)
class Plane:
    """An infinite plane (floor or back wall), textured in its own 2D coordinates."""

    point: Vec3
    """A point on the plane."""
    normal: Vec3
    """Unit normal, facing the cameras."""
    material: Material
    """Appearance."""


@dataclass(frozen=True)
class Light:
    """A directional light."""

    direction: Vec3
    """Unit vector from the surface towards the light."""
    colour: Vec3
    """RGB intensity."""


@dataclass(frozen=True)
class World:
    """Everything the ray caster needs besides the rays."""

    primitives: tuple[Primitive, ...]
    """The objects; they cast shadows."""
    planes: tuple[Plane, ...]
    """Floor / walls; they receive shadows but cast none."""
    lights: tuple[Light, ...]
    """Directional lights."""
    ambient: Vec3
    """Ambient RGB light."""
    background: Vec3
    """Colour of rays that hit nothing."""
    shadows: bool
    """Whether primitives cast hard shadows."""


# ----------------------------------------------------------------------------------- intersection


# Products of (N, 3) arrays use elementwise multiply-adds only, never BLAS or einsum: their results
# would depend on N and the thread count in the last bits (blocking, fused multiply-adds), and the
# images must be the same whatever the chunk size or the machine's thread settings.


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products of (N, 3) arrays, or of an (N, 3) array and one 3-vector."""
    if b.ndim == 1:
        return a[:, 0] * b[0] + a[:, 1] * b[1] + a[:, 2] * b[2]
    return a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1] + a[:, 2] * b[:, 2]


def _matmul(a: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``a @ m`` for a (N, 3) and m (3, K)."""
    return np.stack([_dot(a, m[:, k]) for k in range(m.shape[1])], 1)


def _to_local(prim: Primitive, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rot = np.asarray(prim.rotation, np.float32)
    inv_scale = 1.0 / np.asarray(prim.scale, np.float32)
    return _matmul(origins - np.asarray(prim.centre, np.float32), rot) * inv_scale, _matmul(dirs, rot) * inv_scale


def _roots(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both roots of a t^2 + 2 b t + c = 0 (NaN where there are none)."""
    disc = b * b - a * c
    sqrt_disc = np.sqrt(np.where(disc >= 0, disc, np.nan))
    return (-b - sqrt_disc) / a, (-b + sqrt_disc) / a


def _closest(candidates: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Smallest ``t > T_MIN`` over (t, valid) candidates; inf where none is valid."""
    best = None
    for t, valid in candidates:
        t = np.where(valid & (t > T_MIN), t, np.inf)
        best = t if best is None else np.minimum(best, t)
    return best


def _intersect_local(kind: PrimitiveKind, o: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Ray parameter of the first hit with a unit primitive (inf where the ray misses)."""
    ox, oy, oz, dx, dy, dz = o[:, 0], o[:, 1], o[:, 2], d[:, 0], d[:, 1], d[:, 2]
    if kind == "sphere":
        t0, t1 = _roots(_dot(d, d), _dot(o, d), _dot(o, o) - 1.0)
        return _closest([(t0, np.isfinite(t0)), (t1, np.isfinite(t1))])
    if kind == "box":
        inv = 1.0 / np.where(d == 0, 1e-20, d)
        ta, tb = (-1.0 - o) * inv, (1.0 - o) * inv
        lo, hi = np.minimum(ta, tb), np.maximum(ta, tb)
        near = np.maximum(np.maximum(lo[:, 0], lo[:, 1]), lo[:, 2])
        far = np.minimum(np.minimum(hi[:, 0], hi[:, 1]), hi[:, 2])
        hit = near <= far
        return _closest([(near, hit), (far, hit)])
    caps = []
    for z_cap in (-1.0, 1.0) if kind == "cylinder" else (-1.0,):
        t = (z_cap - oz) / np.where(dz == 0, 1e-20, dz)
        caps.append((t, (ox + t * dx) ** 2 + (oy + t * dy) ** 2 <= 1.0))
    if kind == "cylinder":
        t0, t1 = _roots(dx * dx + dy * dy, ox * dx + oy * dy, ox * ox + oy * oy - 1.0)
    else:
        h = 1.0 - oz
        a = dx * dx + dy * dy - 0.25 * dz * dz
        t0, t1 = _roots(a, ox * dx + oy * dy + 0.25 * h * dz, ox * ox + oy * oy - 0.25 * h * h)
    side = [(t, np.abs(oz + t * dz) <= 1.0) for t in (t0, t1)]
    return _closest(side + caps)


def _normal_local(kind: PrimitiveKind, p: np.ndarray) -> np.ndarray:
    """Outward (unnormalised) normal of a unit primitive at surface points p."""
    if kind == "sphere":
        return p
    if kind == "box":
        axis = np.abs(p).argmax(1)
        normal = np.zeros_like(p)
        normal[np.arange(len(p)), axis] = np.sign(p[np.arange(len(p)), axis])
        return normal
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    radial = np.sqrt(x * x + y * y)
    if kind == "cylinder":
        side = np.stack([x, y, np.zeros_like(z)], 1)
        on_cap = (1.0 - np.abs(z)) < (1.0 - radial)
        return np.where(on_cap[:, None], np.stack([0 * x, 0 * y, np.sign(z)], 1), side)
    side = np.stack([x, y, 0.25 * (1.0 - z)], 1)
    on_base = (z + 1.0) < (0.5 * (1.0 - z) - radial)
    return np.where(on_base[:, None], np.array([0.0, 0.0, -1.0], np.float32), side)


def _intersect_plane(plane: Plane, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    normal = np.asarray(plane.normal, np.float32)
    offset = float(np.dot(plane.point, plane.normal))
    denom = _dot(dirs, normal)
    t = (offset - _dot(origins, normal)) / np.where(np.abs(denom) < 1e-12, 1e-12, denom)
    return _closest([(t, denom < 0)])


def _unit_extremes(kind: str) -> np.ndarray:
    """Points of a unit primitive whose convex hull is (nearly) the shape: corners, rims, apex."""
    if kind == "box":
        return np.array(np.meshgrid([-1.0, 1.0], [-1.0, 1.0], [-1.0, 1.0])).reshape(3, -1).T
    if kind == "sphere":  # a Fibonacci sphere
        k = np.arange(512) + 0.5
        z, phi = 1.0 - 2.0 * k / 512, np.pi * (1.0 + 5**0.5) * k
        return np.stack([np.sqrt(1 - z * z) * np.cos(phi), np.sqrt(1 - z * z) * np.sin(phi), z], 1)
    angle = np.linspace(0.0, 2.0 * np.pi, 64, endpoint=False)
    rim = np.stack([np.cos(angle), np.sin(angle), -np.ones_like(angle)], 1)
    top = rim * [1.0, 1.0, -1.0] if kind == "cylinder" else np.array([[0.0, 0.0, 1.0]])
    return np.concatenate([rim, top])


def extreme_points(prim: Primitive) -> np.ndarray:
    """World points bounding the primitive (the farthest point from anywhere is among them)."""
    return prim.centre + (_unit_extremes(prim.kind) * prim.scale) @ np.asarray(prim.rotation).T  # float64, few points


def _bounding_radius(prim: Primitive) -> float:
    factor = {"sphere": 1.0, "box": 3**0.5, "cylinder": 2**0.5, "cone": 2**0.5}[prim.kind]
    return factor * max(prim.scale) * 1.0001


def _bounding_candidates(prim: Primitive, origins, dirs, o_dot_d, o_dot_o) -> np.ndarray:
    """Indices of the rays (unit ``dirs``) that meet the primitive's bounding sphere ahead of them.

    ``o_dot_d`` and ``o_dot_o`` are the per-ray dot products, computed once for all primitives.
    """
    centre = np.asarray(prim.centre, np.float32)
    b = o_dot_d - _dot(dirs, centre)
    c = o_dot_o - 2.0 * _dot(origins, centre) + (float(centre @ centre) - _bounding_radius(prim) ** 2)
    return np.flatnonzero((b * b >= c) & ((b < 0) | (c < 0)))


def _intersect_primitive(prim: Primitive, origins, dirs, o_dot_d, o_dot_o) -> np.ndarray:
    """World ray parameter of the first hit (inf on a miss), culled by the bounding sphere first."""
    t = np.full(len(origins), np.inf, np.float32)
    idx = _bounding_candidates(prim, origins, dirs, o_dot_d, o_dot_o)
    if idx.size:
        o_local, d_local = _to_local(prim, origins[idx], dirs[idx])
        t[idx] = _intersect_local(prim.kind, o_local, d_local)
    return t


def cast(world: World, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First hit along each ray (unit directions): (t (N,), surface index (N,)); -1 and inf on a miss.

    Surfaces are numbered primitives first, then planes.
    """
    best_t = np.full(len(origins), np.inf, np.float32)
    best_id = np.full(len(origins), -1, np.int64)
    o_dot_d, o_dot_o = _dot(origins, dirs), _dot(origins, origins)
    hits = [_intersect_primitive(p, origins, dirs, o_dot_d, o_dot_o) for p in world.primitives]
    hits += [_intersect_plane(p, origins, dirs) for p in world.planes]
    for index, t in enumerate(hits):
        closer = t < best_t
        best_t = np.where(closer, t, best_t)
        best_id[closer] = index
    return best_t, best_id


def _occluded(primitives: Sequence[Primitive], origins: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Whether rays from ``origins`` towards the (unit) ``direction`` hit any primitive.

    Bounding-sphere test in the plane across the light: ``(a, b)`` are the origins' coordinates
    there, ``w`` along the light; only rays that pass a sphere ahead of them are intersected.
    """
    across = np.linalg.svd(direction[None].astype(np.float64))[2][1:].T.astype(np.float32)  # (3, 2)
    a, b = _dot(origins, across[:, 0]), _dot(origins, across[:, 1])
    w = _dot(origins, direction)
    blocked = np.zeros(len(origins), bool)
    for prim in primitives:
        ca, cb = np.asarray(prim.centre, np.float32) @ across
        radius = _bounding_radius(prim)
        near = np.square(a - ca) + np.square(b - cb) <= radius * radius
        near &= w < float(np.dot(prim.centre, direction)) + radius
        idx = np.flatnonzero(near & ~blocked)
        if idx.size:
            o_local, d_local = _to_local(prim, origins[idx], np.broadcast_to(direction, (idx.size, 3)))
            blocked[idx] = np.isfinite(_intersect_local(prim.kind, o_local, d_local))
    return blocked


# ------------------------------------------------------------------------------------ appearance


def _value_noise(coords: np.ndarray, seed: int) -> np.ndarray:
    """Smooth periodic 3D value noise in [0, 1]: two octaves of trilinear lattice noise."""
    size = NOISE_LATTICE
    lattice = np.random.default_rng(seed).random(size**3, dtype=np.float32)
    total = np.zeros(len(coords), np.float32)
    for octave, weight in ((1.0, 0.65), (2.03, 0.35)):
        q = coords * np.float32(octave)
        base = np.floor(q)
        frac = q - base
        frac = frac * frac * (3.0 - 2.0 * frac)
        low = base.astype(np.int64) % size
        # per axis: (flat index offset, weight) of the lower and upper lattice neighbour
        axes = [
            ((low[:, a] * size ** (2 - a), 1.0 - frac[:, a]), (((low[:, a] + 1) % size) * size ** (2 - a), frac[:, a]))
            for a in range(3)
        ]
        for (ix, wx) in axes[0]:
            for (iy, wy) in axes[1]:
                wxy, ixy = weight * wx * wy, ix + iy
                for (iz, wz) in axes[2]:
                    total += wxy * wz * lattice[ixy + iz]
    return total


def texture_colour(texture: Texture, coords: np.ndarray) -> np.ndarray:
    """Albedo (N, 3) of a texture at object-space coordinates (N, 3)."""
    a, b = np.asarray(texture.colour_a, np.float32), np.asarray(texture.colour_b, np.float32)
    if texture.kind == "solid":
        return np.broadcast_to(a, coords.shape).copy()
    q = coords * texture.frequency
    along = _dot(q, np.asarray(texture.axis, np.float32))
    if texture.kind == "checker":
        cells = np.floor(q)
        mix = np.mod(cells[:, 0] + cells[:, 1] + cells[:, 2], 2.0)
    elif texture.kind == "stripes":
        mix = (along - np.floor(along) < 0.5).astype(np.float32)
    elif texture.kind == "gradient":
        mix = 0.5 + 0.5 * np.sin(np.pi * along)
    elif texture.kind == "noise":
        mix = np.clip(1.6 * (_value_noise(q, texture.noise_seed) - 0.5) + 0.5, 0.0, 1.0)
    else:  # marble
        mix = 0.5 + 0.5 * np.sin(2.0 * np.pi * along + 5.0 * _value_noise(q, texture.noise_seed))
    return a + mix[:, None] * (b - a)


def _surface(world: World, index: int, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, Material]:
    """World normals (unit), texture coordinates and material of surface ``index`` at ``points``."""
    if index < len(world.primitives):
        prim = world.primitives[index]
        rot, scale = np.asarray(prim.rotation, np.float32), np.asarray(prim.scale, np.float32)
        local = _matmul(points - np.asarray(prim.centre, np.float32), rot) / scale
        normals = _matmul(_normal_local(prim.kind, local) / scale, rot.T)
        coords = local * scale  # object space in world units: textures keep their world frequency
        material = prim.material
    else:
        plane = world.planes[index - len(world.primitives)]
        normal = np.asarray(plane.normal, np.float32)
        tangent = np.cross(normal, [0.0, 0.0, 1.0] if abs(normal[2]) < 0.9 else [1.0, 0.0, 0.0])
        tangent /= np.linalg.norm(tangent)
        frame = np.stack([tangent, np.cross(normal, tangent)], 1).astype(np.float32)
        coords = np.concatenate([_matmul(points, frame), np.full((len(points), 1), 0.37, np.float32)], 1)
        normals = np.broadcast_to(normal, points.shape)
        material = plane.material
    normals = normals / np.sqrt(_dot(normals, normals))[:, None]
    return normals, coords, material


def _highlight(material: Material, n_dot_l, n_dot_v, l_dot_v) -> np.ndarray:
    """Blinn-Phong term (n.h)^shininess with h = (l - v) / |l - v|, from dot products only."""
    n_dot_h = (n_dot_l - n_dot_v) / np.sqrt(np.maximum(2.0 - 2.0 * l_dot_v, 1e-8))
    highlight = np.zeros_like(n_dot_l)
    strong = np.flatnonzero(n_dot_h > 0.5)  # below, 0.5^8 * specular < 1/255: skip the power
    highlight[strong] = material.specular * n_dot_h[strong] ** np.float32(material.shininess)
    return highlight


def _shade(world: World, points, normals, view_dirs, albedo, material: Material) -> np.ndarray:
    """Lambert + Blinn-Phong with directional lights, ambient and optional hard shadows.

    Per light only scalars are computed per ray; the light colours are mixed in at the end.
    """
    n_dot_v = _dot(normals, view_dirs)
    facing = np.where(n_dot_v > 0, np.float32(-1.0), np.float32(1.0))  # normals face the camera
    n_dot_v = n_dot_v * facing
    diffuse = np.zeros((len(points), len(world.lights)), np.float32)
    specular = np.zeros_like(diffuse)
    for k, light in enumerate(world.lights):
        direction = np.asarray(light.direction, np.float32)
        n_dot_l = _dot(normals, direction) * facing
        lit = np.flatnonzero(n_dot_l > 0)
        if world.shadows and world.primitives and lit.size:
            starts = points[lit] + (SHADOW_OFFSET * facing[lit])[:, None] * normals[lit]
            lit = lit[~_occluded(world.primitives, starts, direction)]
        diffuse[lit, k] = n_dot_l[lit]
        if material.specular > 0:
            specular[lit, k] = _highlight(material, n_dot_l[lit], n_dot_v[lit], _dot(view_dirs[lit], direction))
    irradiance = np.broadcast_to(np.asarray(world.ambient, np.float32), albedo.shape)
    highlights = np.zeros_like(albedo)
    for k, light in enumerate(world.lights):
        colour = np.asarray(light.colour, np.float32)
        irradiance = irradiance + diffuse[:, k, None] * colour
        highlights += specular[:, k, None] * colour
    return albedo * irradiance + highlights


def render_rays(world: World, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Colours (N, 3) in [0, 1], hit distances t (N,) (inf on a miss) and surface ids (N,) (-1 on a
    miss) of unit-direction rays."""
    origins, dirs = origins.astype(np.float32), dirs.astype(np.float32)
    t, surface = cast(world, origins, dirs)
    rgb = np.broadcast_to(np.asarray(world.background, np.float32), origins.shape).copy()
    for index in np.unique(surface[surface >= 0]):
        idx = np.flatnonzero(surface == index)
        points = origins[idx] + t[idx, None] * dirs[idx]
        normals, coords, material = _surface(world, int(index), points)
        albedo = texture_colour(material.texture, coords)
        rgb[idx] = _shade(world, points, normals, dirs[idx], albedo, material)
    return np.clip(rgb, 0.0, 1.0), t, surface


def foreground_rgba(rgb: np.ndarray, alpha: np.ndarray, background: Vec3) -> np.ndarray:
    """RGBA (..., 4) float32 whose composition on ``background`` gives back ``rgb`` (composited colours).

    Colour channels are the un-premultiplied foreground ``(rgb - (1 - alpha) background) / alpha``,
    clipped to [0, 1], and the background colour where ``alpha`` (coverage in [0, 1]) is 0.
    """
    bg = np.asarray(background, np.float32)
    a = np.asarray(alpha, np.float32)[..., None]
    fg = np.broadcast_to(bg, rgb.shape).copy()
    np.divide(rgb - (1.0 - a) * bg, a, out=fg, where=np.broadcast_to(a > 0, rgb.shape))
    return np.concatenate([np.clip(fg, 0.0, 1.0), a], -1).astype(np.float32)
