"""``reconfusion data render-meshes``: textured meshes rendered into scene folders on the CPU."""

from __future__ import annotations

import dataclasses
import json
from itertools import product
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from data_tools.mesh_render import AMBIENT, HEADLIGHT, KEY, load_mesh, orbit_cameras, render_meshes, render_view
from data_tools.mesh_render import sample_texture
from reconfusion.cli import main
from reconfusion.files import InputError
from reconfusion.scene import load_scene
from reconfusion.scene_fit import project_points

SIZE = 32
CORNERS = np.array(list(product((-1.0, 1.0), repeat=3)))
FACES = [  # (axis, sign) of each cube face and its corners (indices into CORNERS), counter-clockwise from outside
    ((0, 1), (4, 6, 7, 5)), ((0, -1), (0, 1, 3, 2)), ((1, 1), (2, 3, 7, 6)),
    ((1, -1), (0, 4, 5, 1)), ((2, 1), (1, 5, 7, 3)), ((2, -1), (0, 2, 6, 4)),
]  # fmt: skip


def _write_cube(folder: Path, *, texture: bool = True, kd: str = "1 1 1") -> Path:
    """A cube [-1, 1]^3 as OBJ + MTL (+ a 16x16 PNG, left half red and right half green), each face
    mapped to the whole texture."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["mtllib cube.mtl", "usemtl paint"] + [f"v {x} {y} {z}" for x, y, z in CORNERS]
    lines += ["vt 0 0", "vt 1 0", "vt 1 1", "vt 0 1"]
    for _, quad in FACES:
        a, b, c, d = (i + 1 for i in quad)
        lines += [f"f {a}/1 {b}/2 {c}/3", f"f {a}/1 {c}/3 {d}/4"]
    (folder / "cube.obj").write_text("\n".join(lines) + "\n")
    (folder / "cube.mtl").write_text(f"newmtl paint\nKd {kd}\n" + ("map_Kd cube texture.png\n" if texture else ""))
    if texture:
        pixels = np.zeros((16, 16, 3), np.uint8)
        pixels[:, :8, 0] = pixels[:, 8:, 1] = 255
        Image.fromarray(pixels).save(folder / "cube texture.png")  # a space in the name, as fuze's
    return folder / "cube.obj"


def _hit_colours(scene_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Colours of fully covered pixels (P, 3) of all views, and the alpha maps (V, H, W)."""
    scene = load_scene(scene_dir)
    rgba = np.stack([scene.rgba(i) for i in range(len(scene))])
    return rgba[..., :3][rgba[..., 3] == 1], rgba[..., 3]


def _textured(rgb: np.ndarray) -> bool:
    """Whether colours vary more than one colour under this renderer's white light can: shading
    scales a colour by a factor in [AMBIENT, AMBIENT + KEY + HEADLIGHT], keeping its chromaticity."""
    chroma = rgb / np.maximum(rgb.sum(1, keepdims=True), 1e-6)
    luma = rgb.mean(1)
    spread = np.percentile(luma, 97) / max(np.percentile(luma, 3), 1e-6)
    return bool(chroma.std(0).max() > 0.03 or spread > (AMBIENT + KEY + HEADLIGHT) / AMBIENT)


def test_textured_cube_scene(tmp_path):
    mesh = _write_cube(tmp_path / "src")
    [scene_dir] = render_meshes([mesh], tmp_path / "out", num_views=3, resolution=SIZE, seed=3)
    assert scene_dir == tmp_path / "out" / "cube"
    scene = load_scene(scene_dir)
    assert len(scene) == 3 and scene.has_alpha and scene.background == (1.0, 1.0, 1.0)
    meta = json.loads((scene_dir / "transforms.json").read_text())["mesh_render"]
    assert meta["seed"] == 3 and meta["mesh"] == str(mesh.resolve()) and meta["licence_file"] is None
    rgb, alpha = _hit_colours(scene_dir)
    assert 0.05 < alpha.mean() < 0.8
    assert set(np.unique(alpha)) <= {0.0, 1.0}  # one sample per pixel
    red = (rgb[:, 0] > 2 * rgb[:, 1] + 0.05) & (rgb[:, 0] > 2 * rgb[:, 2] + 0.05)
    green = (rgb[:, 1] > 2 * rgb[:, 0] + 0.05) & (rgb[:, 1] > 2 * rgb[:, 2] + 0.05)
    assert red.sum() > 20 and green.sum() > 20 and _textured(rgb)
    for view in range(3):
        ys, xs = np.nonzero(alpha[view])
        centroid = np.array([xs.mean(), ys.mean()]) + 0.5
        origin, _ = project_points(np.zeros((1, 3)), scene.c2w[view], scene.intrinsics[view])
        assert np.allclose(origin[0], SIZE / 2, atol=1e-6)
        assert np.linalg.norm(centroid - SIZE / 2) < 2.5


def test_cameras_match_pixels(tmp_path):
    """Cube corners (vertices; in the normalised frame at +-1/sqrt(3)) and face centres land where the
    renderer drew the cube: the alpha mask's bounding box is the projected corners' one, and the
    centres of faces turned towards a camera project onto covered pixels."""
    [scene_dir] = render_meshes([_write_cube(tmp_path / "src")], tmp_path / "out", num_views=4, resolution=SIZE)
    scene = load_scene(scene_dir)
    corners = CORNERS / np.sqrt(3.0)
    for view in range(len(scene)):
        alpha = scene.rgba(view)[..., 3]
        pixels, depth = project_points(corners, scene.c2w[view], scene.intrinsics[view])
        assert np.all(depth > 0)
        ys, xs = np.nonzero(alpha)
        assert np.allclose([xs.min(), ys.min()], np.floor(pixels.min(0)), atol=1)
        assert np.allclose([xs.max(), ys.max()], np.floor(pixels.max(0)), atol=1)
        eye = scene.c2w[view, :3, 3]
        for (axis, sign), _ in FACES:
            centre = np.zeros(3)
            centre[axis] = sign / np.sqrt(3.0)
            towards = eye - centre
            if np.dot(towards / np.linalg.norm(towards), centre / np.linalg.norm(centre)) > 0.5:  # faces the camera
                [(x, y)], _ = project_points(centre[None], scene.c2w[view], scene.intrinsics[view])
                assert alpha[int(y), int(x)] == 1


def test_plain_material_supersampling_and_seed(tmp_path):
    mesh = _write_cube(tmp_path / "src", texture=False, kd="0.1 0.2 0.9")
    [first] = render_meshes([mesh], tmp_path / "a", num_views=2, resolution=SIZE, supersample=2)
    rgb, alpha = _hit_colours(first)
    assert np.all(rgb[:, 2] > rgb[:, 0]) and not _textured(rgb)
    assert np.any((alpha > 0) & (alpha < 1))  # coverage on the edges
    [again] = render_meshes([mesh], tmp_path / "b", num_views=2, resolution=SIZE, supersample=2)
    for name in ("frame_00000.png", "frame_00001.png"):
        assert (first / "images" / name).read_bytes() == (again / "images" / name).read_bytes()


def test_errors(tmp_path):
    mesh = _write_cube(tmp_path / "src")
    (tmp_path / "src" / "cube texture.png").unlink()
    with pytest.raises(InputError, match="cube texture.png, which is missing"):
        render_meshes([mesh], tmp_path / "out", num_views=2, resolution=SIZE)
    with pytest.raises(InputError, match="no such mesh file"):
        render_meshes([tmp_path / "nope.obj"], tmp_path / "out")
    (tmp_path / "mesh.ply").write_text("ply\n")
    with pytest.raises(InputError, match="convert it to"):
        render_meshes([tmp_path / "mesh.ply"], tmp_path / "out")
    (tmp_path / "broken.gltf").write_text("{not json")
    with pytest.raises(InputError, match="broken.gltf: cannot be read"):
        load_mesh(tmp_path / "broken.gltf")
    with pytest.raises(InputError, match="use object-360"):
        render_meshes([mesh], tmp_path / "out", layout="forward-facing")
    with pytest.raises(InputError, match="seed -1 is negative"):
        render_meshes([mesh], tmp_path / "out", seed=-1)


def test_command_line(tmp_path, capsys, caplog):
    mesh = _write_cube(tmp_path / "src")
    args = ["data", "render-meshes", str(mesh), str(tmp_path / "out"), "--views", "2", "--resolution", "16"]
    with caplog.at_level("INFO", logger="reconfusion"):
        main(args)
    assert "views/s" in caplog.text and len(load_scene(tmp_path / "out" / "cube")) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(args)  # the folder exists now
    assert exit_info.value.code == 2 and "pass --overwrite" in capsys.readouterr().err
    main(args + ["--overwrite", "--seed", "1"])
    with pytest.raises(SystemExit):
        main(["data", "render-meshes", str(mesh)])
    assert "MESH [MESH ...] OUT" in capsys.readouterr().err


def test_shared_meshes(shared_data, tmp_path):
    meshes = shared_data / "train" / "meshes"
    paths = [meshes / "Avocado" / "Avocado.gltf", meshes / "cow" / "cow.obj"]
    scenes = render_meshes(paths, tmp_path, num_views=2, resolution=SIZE)
    for scene_dir, licence in zip(scenes, ("LICENSE.md", "LICENSE")):
        rgb, alpha = _hit_colours(scene_dir)
        assert alpha.reshape(2, -1).mean(1).min() > 0.03 and len(rgb) > 30
        assert _textured(rgb), scene_dir.name
        meta = json.loads((scene_dir / "transforms.json").read_text())["mesh_render"]
        assert Path(meta["licence_file"]).name == licence


def test_texture_lookup_matches_trimesh():
    """At texel centres the bilinear lookup returns the texel trimesh's own lookup picks (v up)."""
    texture = np.random.default_rng(0).integers(0, 256, size=(4, 6, 3), dtype=np.uint8)
    rows, cols = (a.ravel() for a in np.indices(texture.shape[:2]))
    uv = np.stack([(cols + 0.5) / 6, 1.0 - (rows + 0.5) / 4], 1)
    expected = trimesh.visual.color.uv_to_color(uv, Image.fromarray(texture))[:, :3] / 255.0
    assert np.allclose(sample_texture(texture, uv), expected)
    assert np.allclose(sample_texture(texture, uv + 1.0), expected)  # wraps


def test_numpy_rays_match_embree(tmp_path):
    """trimesh's pure-numpy intersector (the fallback without embreex) draws the same pixels."""
    model = load_mesh(_write_cube(tmp_path / "src"))
    numpy_rays = trimesh.ray.ray_triangle.RayMeshIntersector(model.intersector.mesh)
    fallback = dataclasses.replace(model, intersector=numpy_rays)
    c2w, intrinsics = orbit_cameras(np.random.default_rng(0), 2, 16)
    for pose, k in zip(c2w, intrinsics):
        assert np.allclose(render_view(model, pose, k, 16), render_view(fallback, pose, k, 16), atol=1e-5)
