"""Render textured meshes into scene folders on the CPU: ``reconfusion data render-meshes``.

Meshes (glTF, GLB, OBJ + MTL) load with trimesh; rays are cast with Embree (``embreex``) through
trimesh's ray module, or its pure-numpy intersector when embreex does not import (slower). No display,
no GPU. Each mesh is normalised (bounding box centred at the origin, bounding sphere radius 1, +y up as
in glTF, assumed for OBJ too). ``object-360`` cameras: azimuths spread evenly with jitter, elevation
uniform in ``ELEVATIONS``, distance uniform in ``RADII`` (the bounding sphere always fits the
``FOV_DEGREES`` view), looking at the origin with +y up; a function of the seed and the file name.
Shading: base colour (bilinear texture times glTF's ``baseColorFactor``; a plain material colour; or
vertex / face colours; an OBJ's ``Kd`` is ignored under a ``map_Kd``, as most renderers do) times
ambient + Lambert (fixed light) + headlight on interpolated normals, two-sided. Textures are first
box-filtered to ``4 x resolution x supersample`` texels a side (a cheap stand-in for mip-mapping).
Output ``OUT/<mesh stem>/``: RGBA PNGs (alpha = fraction of a pixel's samples that hit the mesh, colour
un-premultiplied) declared on white, OpenGL cameras with pixel centres at +0.5 (the rays of
:func:`reconfusion.cameras.pixel_rays`), auto-protocol splits and the mesh's provenance.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote

import numpy as np
import trimesh
from PIL import Image
from rich.progress import Progress

from data_tools.synthetic import sample_rays, scene_splits
from reconfusion.cameras import focal_from_fov
from reconfusion.files import InputError
from reconfusion.novel_views import look_at
from reconfusion.scene import BACKGROUND_KEY, write_scene

logger = logging.getLogger("reconfusion")

Layout = Literal["object-360"]
SUFFIXES = (".gltf", ".glb", ".obj")
FOV_DEGREES = 40.0
RADII = (3.0, 3.8)  # camera distances; the unit bounding sphere fills the 40 degree view at 2.92
ELEVATIONS = (-10.0, 60.0)  # camera elevations in degrees above the y = 0 plane
LIGHT = np.array([0.4, 0.8, 0.45]) / np.linalg.norm([0.4, 0.8, 0.45])
AMBIENT, KEY, HEADLIGHT = 0.3, 0.5, 0.4
BACKGROUND = (1.0, 1.0, 1.0)
GREY = (0.7, 0.7, 0.7)


@dataclass(frozen=True)
class MeshModel:
    """All parts of a mesh in one normalised frame, ready for ray casting.

    Per face F: ``triangles``, ``normals`` (F, 3, 3) corner positions and normals; ``uv`` (F, 3, 2)
    texture coordinates (v up, zeros without texture); ``colour`` (F, 3, 3) base colours in [0, 1],
    multiplied with the texture where ``texture`` (F,) indexes one of ``textures`` (uint8 (H, W, 3));
    -1 there means none. ``intersector`` is trimesh's ray intersector over ``triangles``.
    """

    intersector: object
    triangles: np.ndarray
    normals: np.ndarray
    uv: np.ndarray
    colour: np.ndarray
    texture: np.ndarray
    textures: tuple[np.ndarray, ...]


# ----------------------------------------------------------------------------------------- loading


def referenced_files(path: Path) -> list[Path]:
    """Files a .gltf (buffers, images) or .obj (material libraries, their ``map_Kd`` images) needs."""
    if path.suffix.lower() == ".glb":
        return []  # self-contained
    if path.suffix.lower() == ".gltf":
        meta = json.loads(path.read_text())
        uris = [item.get("uri", "") for key in ("buffers", "images") for item in meta.get(key, [])]
        return [path.parent / unquote(u) for u in uris if u and not u.startswith("data:")]
    files = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("mtllib "):
            mtl = path.parent / line[len("mtllib "):].strip()
            files.append(mtl)
            if mtl.is_file():
                maps = [s.split(None, 1) for s in mtl.read_text(errors="replace").splitlines()]
                names = [m[1].strip() for m in maps if len(m) == 2 and m[0] == "map_Kd"]
                files += [mtl.parent / (n.split()[-1] if n.startswith("-") else n) for n in names]
    return files


def _check_mesh_file(path: Path) -> None:
    if not path.is_file():
        raise InputError(f"{path}: no such mesh file; check the path")
    if path.suffix.lower() not in SUFFIXES:
        raise InputError(f"{path}: not a mesh this command reads; convert it to {', '.join(SUFFIXES)}")
    try:
        missing = [f for f in referenced_files(path) if not f.is_file()]
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot be read ({err}); check the file") from err
    if missing:
        raise InputError(f"{path}: needs {missing[0]}, which is missing; put it beside the mesh")


def _base_colour(visual, faces: np.ndarray, num_vertices: int) -> tuple[np.ndarray, Image.Image | None]:
    """(F, 3, 3) corner colour factors in [0, 1] and the base colour texture (None if untextured)."""
    if visual.kind == "vertex":
        return np.asarray(visual.vertex_colors, np.float64)[faces, :3] / 255.0, None
    if visual.kind == "face":
        return np.repeat(np.asarray(visual.face_colors, np.float64)[:, None, :3] / 255.0, 3, axis=1), None
    material = getattr(visual, "material", None)
    pbr = isinstance(material, trimesh.visual.material.PBRMaterial)
    image = material.baseColorTexture if pbr else getattr(material, "image", None)
    if getattr(visual, "uv", None) is None or len(visual.uv) != num_vertices:
        image = None
    if pbr:
        factor = material.baseColorFactor
    else:  # an OBJ's Kd (main_color) only without a texture
        factor = getattr(material, "main_color", None) if image is None else None
    if factor is not None:
        factor = np.asarray(factor[:3], np.float64) / 255.0
    else:
        factor = GREY if image is None else (1.0, 1.0, 1.0)
    return np.broadcast_to(np.asarray(factor, np.float64), (*faces.shape, 3)), image


def _texture_array(image: Image.Image, max_side: int) -> np.ndarray:
    """uint8 (H, W, 3), box-filtered down so that neither side exceeds ``max_side``."""
    image = image.convert("RGB")
    scale = max_side / max(image.size)
    if scale < 1:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BOX)
    return np.asarray(image, np.uint8)


def _parts(scene: trimesh.Scene, max_side: int):
    """Per part: world corner positions, normals, uvs, colours, texture index; and the textures."""
    textures, index_of, parts = [], {}, []
    for node in scene.graph.nodes_geometry:
        transform, name = scene.graph[node]
        mesh = scene.geometry[name]
        if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
            continue
        faces = np.asarray(mesh.faces)
        colour, image = _base_colour(mesh.visual, faces, len(mesh.vertices))
        if image is not None and id(image) not in index_of:
            index_of[id(image)] = len(textures)
            textures.append(_texture_array(image, max_side))
        uv = np.asarray(mesh.visual.uv, np.float64) if image is not None else np.zeros((len(mesh.vertices), 2))
        normal_matrix = np.linalg.inv(transform[:3, :3]).T
        corners = trimesh.transform_points(mesh.vertices, transform)[faces]
        normals = (np.asarray(mesh.vertex_normals) @ normal_matrix.T)[faces]
        face_texture = np.full(len(faces), index_of[id(image)] if image is not None else -1)
        parts.append((corners, normals, uv[faces], colour, face_texture))
    return parts, tuple(textures)


def load_mesh(path: Path, texture_side: int = 512) -> MeshModel:
    """Load a glTF/GLB/OBJ mesh (all its parts), normalised to a unit bounding sphere at the origin."""
    _check_mesh_file(path)
    try:
        scene = trimesh.load(path, force="scene")
        parts, textures = _parts(scene, texture_side)
    except Exception as err:  # trimesh raises many types for broken files
        raise InputError(f"{path}: cannot be loaded as a mesh ({err}); check the file") from err
    if not parts:
        raise InputError(f"{path}: holds no triangles; export the mesh with its faces")
    corners, normals, uv, colour, texture = (np.concatenate(a) for a in zip(*parts))
    low, high = corners.reshape(-1, 3).min(0), corners.reshape(-1, 3).max(0)
    radius = 0.5 * np.linalg.norm(high - low)
    if not np.isfinite(radius) or radius <= 0:
        raise InputError(f"{path}: the mesh has no extent (all vertices coincide or are not finite); fix it")
    corners = (corners - 0.5 * (low + high)) / radius
    mesh = trimesh.Trimesh(corners.reshape(-1, 3), np.arange(corners.shape[0] * 3).reshape(-1, 3), process=False)
    if not trimesh.ray.has_embree:
        logger.warning("embreex does not import: casting rays with trimesh's pure-numpy intersector (slow)")
    return MeshModel(mesh.ray, corners, normals, uv, colour, texture, textures)


# ------------------------------------------------------------------------------------- rendering


def orbit_cameras(rng: np.random.Generator, num_views: int, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """(V, 4, 4) OpenGL camera-to-world around the origin (y up) and (V, 4) intrinsics fx, fy, cx, cy."""
    step = 2.0 * np.pi / num_views
    azimuth = rng.uniform(0.0, 2.0 * np.pi) + step * (np.arange(num_views) + rng.uniform(-0.3, 0.3, num_views))
    elevation = np.radians(rng.uniform(*ELEVATIONS, num_views))
    radius = rng.uniform(*RADII, num_views)
    eyes = radius[:, None] * np.stack(
        [np.cos(elevation) * np.sin(azimuth), np.sin(elevation), np.cos(elevation) * np.cos(azimuth)], 1
    )
    c2w = np.stack([look_at(eye, np.zeros(3), np.array([0.0, 1.0, 0.0])) for eye in eyes])
    focal = focal_from_fov(np.radians(FOV_DEGREES), resolution)
    return c2w, np.tile([focal, focal, resolution / 2.0, resolution / 2.0], (num_views, 1))


def _barycentric(triangles: np.ndarray, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """(N, 3) barycentric weights of where each ray meets the plane of its triangle (Moller-Trumbore)."""
    edge1, edge2 = triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0]
    p = np.cross(dirs, edge2)
    det = np.einsum("ij,ij->i", edge1, p)
    det = np.where(np.abs(det) > 1e-12, det, 1e-12)
    s = origins - triangles[:, 0]
    u = np.einsum("ij,ij->i", s, p) / det
    v = np.einsum("ij,ij->i", dirs, np.cross(s, edge1)) / det
    return np.clip(np.stack([1.0 - u - v, u, v], 1), 0.0, 1.0)


def sample_texture(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear, wrapping lookup of (N, 2) coordinates (v up, as trimesh stores them): (N, 3) in [0, 1]."""
    height, width = texture.shape[:2]
    x, y = uv[:, 0] * width - 0.5, (1.0 - uv[:, 1]) * height - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.astype(np.int64) % width, y0.astype(np.int64) % height
    x1, y1 = (x0 + 1) % width, (y0 + 1) % height
    top = texture[y0, x0] * (1 - fx) + texture[y0, x1] * fx
    bottom = texture[y1, x0] * (1 - fx) + texture[y1, x1] * fx
    return (top * (1 - fy) + bottom * fy) / 255.0


def _surface_normals(model: MeshModel, tri: np.ndarray, weights: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Unit interpolated vertex normals (the face normal where those vanish), turned towards the rays."""
    normal = (weights * model.normals[tri]).sum(1)
    corners = model.triangles[tri]
    flat = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normal = np.where(np.linalg.norm(normal, axis=1, keepdims=True) > 1e-9, normal, flat)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    normal[np.einsum("ij,ij->i", normal, dirs) > 0] *= -1.0
    return normal


def shade(model: MeshModel, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Colours (N, 3) of rays from ``origins`` along unit ``dirs`` and whether each hit the mesh (N,)."""
    tri = np.asarray(model.intersector.intersects_first(origins, dirs))
    hit = tri >= 0
    rgb = np.zeros((len(dirs), 3))
    tri, o, d = tri[hit], origins[hit], dirs[hit]
    weights = _barycentric(model.triangles[tri], o, d)[:, :, None]
    colour = (weights * model.colour[tri]).sum(1)
    uv = (weights * model.uv[tri]).sum(1)
    for index in np.unique(model.texture[tri]):
        if index >= 0:
            mask = model.texture[tri] == index
            colour[mask] *= sample_texture(model.textures[index], uv[mask])
    normal = _surface_normals(model, tri, weights, d)
    facing = -np.einsum("ij,ij->i", normal, d)
    light = AMBIENT + KEY * np.clip(normal @ LIGHT, 0.0, None) + HEADLIGHT * np.clip(facing, 0.0, None)
    rgb[hit] = np.clip(colour * light[:, None], 0.0, 1.0)
    return rgb, hit


def render_view(model: MeshModel, c2w: np.ndarray, intrinsics: np.ndarray, resolution: int, supersample: int = 1):
    """Float32 RGBA (H, W, 4) of one square view: ``supersample`` x ``supersample`` stratified samples
    per pixel, alpha their hit fraction, colour the mean of the hits (white where nothing is hit)."""
    rows, cols = (a.ravel() for a in np.indices((resolution, resolution)))
    view = np.zeros(rows.size, np.int64)
    total, hits = np.zeros((rows.size, 3)), np.zeros(rows.size)
    offsets = (np.arange(supersample) + 0.5) / supersample
    for dy in offsets:
        for dx in offsets:
            origins, dirs = sample_rays(c2w[None], intrinsics[None], view, rows + dy, cols + dx)
            rgb, hit = shade(model, origins, dirs)
            total += rgb
            hits += hit
    colour = np.divide(total, hits[:, None], out=np.ones_like(total), where=hits[:, None] > 0)
    rgba = np.concatenate([colour, hits[:, None] / supersample**2], 1)
    return rgba.reshape(resolution, resolution, 4).astype(np.float32)


# ---------------------------------------------------------------------------------------- output


def licence_file(mesh: Path) -> Path | None:
    """The licence text beside a mesh (LICENSE*, LICENCE*, COPYING*), if there is one."""
    found = [p for p in sorted(mesh.parent.iterdir()) if p.name.upper().startswith(("LICEN", "COPYING"))]
    return next((p for p in found if p.is_file()), None)


def _provenance(mesh: Path, seed: int, supersample: int) -> dict:
    licence = licence_file(mesh)
    rays = "embree" if trimesh.ray.has_embree else "numpy"
    return {
        "generator": "reconfusion data render-meshes", "renderer": f"trimesh {trimesh.__version__}, {rays} rays",
        "mesh": str(mesh.resolve()), "licence_file": str(licence.resolve()) if licence else None,
        "seed": seed, "layout": "object-360", "fov_degrees": FOV_DEGREES,
        "camera_radius_range": list(RADII), "camera_elevation_range_degrees": list(ELEVATIONS),
        "normalisation": "bounding box centred at the origin, bounding sphere radius 1, +y up",
        "samples_per_pixel": supersample**2,
        "alpha": "coverage: fraction of a pixel's samples that hit the mesh; colour un-premultiplied",
    }  # fmt: skip


def _check_arguments(meshes: list[Path], out: Path, views: int, resolution: int, layout: str, supersample: int,
                     seed: int) -> None:
    if layout != "object-360":
        raise InputError(f"unknown layout {layout!r}; use object-360")
    if not meshes:
        raise InputError("no meshes given; name at least one .gltf, .glb or .obj file")
    for name, value, least in ("--views", views, 1), ("--resolution", resolution, 4), ("--supersample", supersample, 1):
        if value < least:
            raise InputError(f"{name} {value} is too small; use at least {least}")
    if seed < 0:
        raise InputError(f"--seed {seed} is negative; use a seed >= 0")
    stems = [m.stem for m in meshes]
    for mesh in meshes:
        if stems.count(mesh.stem) > 1:
            raise InputError(f"{mesh}: another mesh has the stem {mesh.stem!r}, which names its scene; rename one")
        _check_mesh_file(mesh)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; choose another output folder")


def render_meshes(meshes: list[Path], out: Path, *, num_views: int = 24, resolution: int = 128,
                  layout: Layout = "object-360", seed: int = 0, supersample: int = 1, overwrite: bool = False):
    """Render each mesh into ``out/<mesh stem>/`` (RGBA images, transforms.json, auto-protocol splits);
    returns the scene folders.

    Every input is checked before anything renders; existing non-empty scene folders are an error
    unless ``overwrite``. Logs the speed in views per second (loading and writing included).
    """
    meshes, out = [Path(m) for m in meshes], Path(out)
    _check_arguments(meshes, out, num_views, resolution, layout, supersample, seed)
    paths = [out / m.stem for m in meshes]
    taken = [p for p in paths if p.exists() and (not p.is_dir() or any(p.iterdir()))]
    if taken and not overwrite:
        raise InputError(f"{taken[0]}: scene folder exists and is not empty; choose another folder or pass --overwrite")
    start = time.perf_counter()
    with Progress(transient=True) as progress:
        task = progress.add_task("rendering views", total=len(meshes) * num_views)
        for mesh, path in zip(meshes, paths):
            model = load_mesh(mesh, texture_side=max(64, 4 * resolution * supersample))
            c2w, intrinsics = orbit_cameras(np.random.default_rng([seed, zlib.crc32(mesh.name.encode())]),
                                            num_views, resolution)  # fmt: skip
            images = []
            for pose, k in zip(c2w, intrinsics):
                images.append(render_view(model, pose, k, resolution, supersample))
                progress.advance(task)
            extra = {BACKGROUND_KEY: list(BACKGROUND), "mesh_render": _provenance(mesh, seed, supersample)}
            write_scene(path, images, c2w, intrinsics, splits=scene_splits(c2w), extra=extra, overwrite=overwrite)
    seconds, total = time.perf_counter() - start, len(meshes) * num_views
    logger.info("rendered %d views of %d meshes at %dx%d into %s in %.1f s: %.2f views/s",
                total, len(meshes), resolution, resolution, out, seconds, total / seconds)  # fmt: skip
    return paths
