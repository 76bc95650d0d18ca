"""The procedural scene generator: exact cameras and depth, determinism, scene folders, variety."""

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from data_tools.splits import auto_split
from data_tools.synthetic import LAYOUTS, generate_scenes, render_scene, sample_rays
from data_tools.synthetic_scenes import SceneSpec, look_at, sample_scene
from data_tools.synthetic_render import Material, Primitive, Texture, World, foreground_rgba
from reconfusion.cameras import pixel_rays, project, scale_intrinsics
from reconfusion.cli import main
from reconfusion.files import InputError, composite
from reconfusion.scene import BACKGROUND_KEY, load_scene

REPO = Path(__file__).resolve().parents[1]


def _render(seed: int, layout: str, views: int = 6, resolution: int = 24, **kwargs):
    return render_scene(sample_scene(seed, layout=layout, num_views=views, resolution=resolution), **kwargs)


def _one_primitive_spec(prim: Primitive, eye, resolution: int = 31) -> SceneSpec:
    world = World((prim,), (), (), (0.5, 0.5, 0.5), (0.0, 0.0, 0.0), shadows=False)
    c2w = look_at(np.asarray(eye, float), np.zeros(3))
    focal = 1.2 * resolution
    intrinsics = ((focal, focal, resolution / 2, resolution / 2),)
    return SceneSpec(0, "object-360", resolution, world, (tuple(c2w.ravel()),), intrinsics)


def _texture() -> Material:
    return Material(Texture("solid", (1.0, 0.0, 0.0), (0.0, 0.0, 0.0), 1.0, (1.0, 0.0, 0.0), 0), 0.0, 8.0)


def _surface_points(rendered, view: int) -> tuple[np.ndarray, np.ndarray]:
    """Back-project the depth map of one view: world points and their (row, column) pixels."""
    c2w, intr = torch.from_numpy(rendered.c2w[view]), torch.from_numpy(rendered.intrinsics[view])
    size = rendered.depth.shape[-1]
    origins, dirs = pixel_rays(c2w, intr, size, size)
    rows, cols = np.nonzero(rendered.depth[view] > 0)
    depth = torch.from_numpy(rendered.depth[view][rows, cols]).double()
    d = dirs[rows, cols]
    along = (d * -c2w[:3, 2]).sum(-1)
    return (origins[rows, cols] + d * (depth / along)[:, None]).numpy(), np.stack([rows, cols], 1)


def _project(points: np.ndarray, rendered, view: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates and depths of world points in one view, by reconfusion.cameras.project."""
    c2w, intrinsics = torch.from_numpy(rendered.c2w[view]), torch.from_numpy(rendered.intrinsics[view])
    uv, depth = project(torch.from_numpy(points), c2w, intrinsics)
    return uv.numpy(), depth.numpy()


def test_rays_match_the_camera_module():
    c2w, intrinsics = sample_scene(3, layout="object-360", num_views=3, resolution=12).camera_arrays()
    for factor in (1, 2):  # pixel centres, and the 2x2 sub-pixel samples of the anti-aliasing
        view, row, col = (a.ravel() for a in np.indices((3, 12 * factor, 12 * factor)))
        origins, dirs = sample_rays(c2w, intrinsics, view, (row + 0.5) / factor, (col + 0.5) / factor)
        intr = scale_intrinsics(torch.from_numpy(intrinsics), factor, factor)
        ref_o, ref_d = pixel_rays(torch.from_numpy(c2w), intr, 12 * factor, 12 * factor)
        np.testing.assert_allclose(origins, ref_o.reshape(-1, 3).numpy(), atol=1e-12)
        np.testing.assert_allclose(dirs, ref_d.reshape(-1, 3).numpy(), atol=1e-12)


def test_analytic_sphere_and_box_depth():
    sphere = Primitive("sphere", (0.0, 0.0, 0.0), ((1, 0, 0), (0, 1, 0), (0, 0, 1)), (1.0, 1.0, 1.0), _texture())
    rendered = render_scene(_one_primitive_spec(sphere, (4.0, 0.0, 0.0)))
    assert rendered.depth[0, 15, 15] == pytest.approx(3.0, abs=1e-5)  # the centre pixel looks at the origin
    points, _ = _surface_points(rendered, 0)
    np.testing.assert_allclose(np.linalg.norm(points, axis=1), 1.0, atol=1e-4)
    assert rendered.depth[0, 0, 0] == 0.0 and np.all(rendered.images[0, 0, 0] == 0.0)  # background
    angle = 0.4
    rot = ((np.cos(angle), -np.sin(angle), 0.0), (np.sin(angle), np.cos(angle), 0.0), (0.0, 0.0, 1.0))
    box = Primitive("box", (0.1, -0.2, 0.0), rot, (0.5, 0.8, 0.3), _texture())
    rendered = render_scene(_one_primitive_spec(box, (3.0, 1.0, 1.5)))
    points, _ = _surface_points(rendered, 0)
    local = (points - box.centre) @ np.asarray(rot) / box.scale
    np.testing.assert_allclose(np.abs(local).max(1), 1.0, atol=1e-3)
    assert len(points) > 50


@pytest.mark.parametrize("layout", LAYOUTS)
def test_depth_projects_back_to_its_pixel(layout):
    rendered = _render(5, layout, views=3)
    points, pixels = _surface_points(rendered, 1)
    uv, depth = _project(points, rendered, 1)
    np.testing.assert_allclose(uv, pixels[:, ::-1] + 0.5, atol=1e-4)
    np.testing.assert_allclose(depth, rendered.depth[1][pixels[:, 0], pixels[:, 1]], rtol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_depth_maps_agree_across_views(layout):
    """A surface point seen in view 0 lands, in view 1, where view 1's depth map has the same depth."""
    rendered = _render(2, layout, views=8, resolution=48)
    points, _ = _surface_points(rendered, 0)
    other = 1  # the neighbouring view (45 degrees away on the orbit); a wrong convention agrees < 20%
    uv, depth = _project(points, rendered, other)
    inside = (depth > 0) & (uv >= 0).all(1) & (uv < 48).all(1)
    cols, rows = uv[inside].astype(int).T
    agree = np.abs(rendered.depth[other][rows, cols] - depth[inside]) < 0.03 * depth[inside]
    assert inside.sum() > 100
    assert agree.mean() > 0.7, agree.mean()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_deterministic_per_seed(layout):
    a, b, c = _render(11, layout), _render(11, layout, max_rays=100), _render(12, layout)
    for field in ("images", "alpha", "depth", "c2w", "intrinsics"):  # bit-identical, whatever the chunking
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert not np.array_equal(a.images, c.images)
    assert a.images.dtype == np.float32 and a.images.shape == (6, 24, 24, 3) and a.depth.shape == (6, 24, 24)
    assert a.alpha.dtype == np.float32 and a.alpha.shape == (6, 24, 24)
    assert a.c2w.shape == (6, 4, 4) and a.intrinsics.shape == (6, 4)
    assert 0.0 <= a.images.min() and a.images.max() <= 1.0


def test_same_seed_gives_identical_files(tmp_path):
    def files(folder):
        return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    kwargs = dict(num_scenes=1, num_views=4, resolution=16, layout="forward-facing")
    first = generate_scenes(tmp_path / "a", seed=7, **kwargs)[0]
    second = generate_scenes(tmp_path / "b", seed=7, **kwargs)[0]
    third = generate_scenes(tmp_path / "c", seed=8, **kwargs)[0]
    assert files(first) == files(second) and len(files(first)) == 4 + 4 + 2  # images, depths, transforms, 3-view split
    frame = Path("images/frame_00000.png")
    assert files(first)[frame] != files(third)[frame]


def test_scene_folder_loads_with_splits_and_depth(tmp_path):
    (path,) = generate_scenes(tmp_path, num_scenes=1, num_views=12, resolution=16, layout="object-360", seed=3)
    assert path.name == "scene_00003"
    scene = load_scene(path)
    rendered = _render(3, "object-360", views=12, resolution=16)
    assert len(scene) == 12 and sorted(scene.splits) == [3, 6, 9]
    np.testing.assert_allclose(scene.c2w, rendered.c2w)
    np.testing.assert_allclose(scene.intrinsics, rendered.intrinsics)
    np.testing.assert_allclose(scene.image(5), rendered.images[5], atol=0.5 / 255 + 1e-6)
    np.testing.assert_array_equal(np.load(scene.depth_paths[5]), rendered.depth[5])
    for n, split in scene.splits.items():
        assert split.test_ids == (0, 8) and len(split.train_ids) == n
        assert split == auto_split(scene.c2w[:, :3, 3], n)  # what `reconfusion data splits --protocol auto` writes
    assert set(scene.splits[3].train_ids) < set(scene.splits[6].train_ids) < set(scene.splits[9].train_ids)
    meta = json.loads((path / "transforms.json").read_text())["synthetic"]
    assert meta["seed"] == 3 and meta["layout"] == "object-360" and 0 < meta["near"] < meta["far"]


def _near(mask: np.ndarray) -> np.ndarray:
    """Pixels (V, H, W) with a ``mask`` pixel in their 3x3 neighbourhood."""
    padded = np.pad(mask, ((0, 0), (1, 1), (1, 1)))
    size = mask.shape[1]
    return np.any([padded[:, i : i + size, j : j + size] for i in range(3) for j in range(3)], axis=0)


def test_alpha_is_coverage():
    spec = sample_scene(1, layout="object-360", num_views=4, resolution=32)
    plain, smooth = render_scene(spec, supersample=1), render_scene(spec, supersample=2)
    np.testing.assert_array_equal(plain.alpha, (plain.depth > 0).astype(np.float32))  # one sample: hit or miss
    assert set(np.unique(smooth.alpha)) <= {0.0, 0.25, 0.5, 0.75, 1.0}
    assert np.any((smooth.alpha > 0) & (smooth.alpha < 1))  # anti-aliased silhouettes
    hit = smooth.depth > 0
    np.testing.assert_array_equal(smooth.alpha[~_near(hit)], 0.0)  # background, not supersampled
    np.testing.assert_array_equal(smooth.alpha[~_near(~hit)], 1.0)  # inside the object
    rgba = foreground_rgba(smooth.images, smooth.alpha, spec.world.background)
    np.testing.assert_allclose(composite(rgba, spec.world.background), smooth.images, atol=1e-6)
    assert np.all(render_scene(sample_scene(1, layout="forward-facing", num_views=2, resolution=16)).alpha == 1.0)


def test_object_360_scene_is_written_with_alpha(tmp_path):
    (path,) = generate_scenes(tmp_path, num_scenes=1, num_views=4, resolution=32, layout="object-360", seed=1)
    spec = sample_scene(1, layout="object-360", num_views=4, resolution=32)
    rendered = render_scene(spec)
    scene = load_scene(path)
    assert scene.has_alpha and scene.background == spec.world.background
    assert json.loads((path / "transforms.json").read_text())[BACKGROUND_KEY] == list(spec.world.background)
    hit = rendered.depth > 0
    for i in range(len(scene)):
        rgba = scene.rgba(i)
        assert rgba.shape == (32, 32, 4)
        np.testing.assert_allclose(scene.image(i), rendered.images[i], atol=1.5 / 255)
        np.testing.assert_allclose(rgba[..., 3], rendered.alpha[i], atol=0.5 / 255 + 1e-6)
        assert np.all(rgba[..., 3][~_near(hit)[i]] == 0.0) and np.all(rgba[..., 3][~_near(~hit)[i]] == 1.0)
        assert np.any(rgba[..., 3] == 0.0) and np.any(rgba[..., 3] == 1.0)


def test_forward_facing_scene_is_written_without_alpha(tmp_path):
    (path,) = generate_scenes(tmp_path, num_scenes=1, num_views=4, resolution=16, layout="forward-facing", seed=1)
    scene = load_scene(path)
    assert not scene.has_alpha and scene.background is None and scene.rgba(0).shape == (16, 16, 4)
    assert BACKGROUND_KEY not in json.loads((path / "transforms.json").read_text())


def test_object_360_cameras_frame_the_object():
    for seed in range(4):
        rendered = _render(seed, "object-360", views=8, resolution=32)
        mask = rendered.depth > 0
        fraction = mask.mean((1, 2))
        assert np.all(fraction > 0.05) and np.all(fraction < 0.85), (seed, fraction)
        assert not mask[:, [0, -1], :].any() and not mask[:, :, [0, -1]].any()  # nothing cut off
        rows, cols = np.nonzero(mask.any(0))
        assert abs(rows.mean() - 15.5) < 8 and abs(cols.mean() - 15.5) < 8
        centres = rendered.c2w[:, :3, 3]
        forward = -rendered.c2w[:, :3, 2]
        np.testing.assert_allclose((forward * -centres).sum(1) / np.linalg.norm(centres, axis=1), 1.0, atol=0.01)


def test_forward_facing_cameras_look_forward_at_a_wall():
    rendered = _render(4, "forward-facing", views=9, resolution=16)
    assert np.all(rendered.depth > 0)  # floor and wall fill every pixel
    forward = -rendered.c2w[:, :3, 2]
    assert np.all(forward[:, 1] > 0.9)
    spread = np.ptp(rendered.c2w[:, :3, 3], axis=0)
    assert spread[0] > 0.2 and spread[1] < 0.2


def test_scenes_are_varied():
    specs = [sample_scene(seed, layout=layout, num_views=4, resolution=16) for seed in range(8) for layout in LAYOUTS]
    kinds = {p.kind for s in specs for p in s.world.primitives}
    textures = {p.material.texture.kind for s in specs for p in s.world.primitives}
    counts = {len(s.world.primitives) for s in specs}
    focals = {round(s.intrinsics[0][0], 3) for s in specs}
    assert kinds == {"sphere", "box", "cylinder", "cone"} and len(textures) >= 5 and len(counts) >= 3
    assert len(focals) == len(specs)
    means = np.array([render_scene(s, supersample=1).images.mean((0, 1, 2)) for s in specs])
    assert np.all(np.std(means, axis=0) > 0.05)
    backgrounds = np.array([s.world.background for s in specs[::2]])
    assert np.all(np.std(backgrounds, axis=0) > 0.1)


def test_supersampling_changes_colour_not_depth():
    spec = sample_scene(6, layout="object-360", num_views=2, resolution=16)
    plain, smooth = render_scene(spec, supersample=1), render_scene(spec, supersample=2)
    np.testing.assert_array_equal(plain.depth, smooth.depth)
    difference = np.abs(plain.images - smooth.images)
    assert 0 < difference.mean() < 0.05


def test_cli_writes_scenes_and_refuses_to_overwrite(tmp_path):
    argv = ["data", "synthetic", str(tmp_path), "--scenes", "2", "--views", "10", "--resolution", "32"]
    main(argv)
    scenes = sorted(tmp_path.iterdir())
    assert [p.name for p in scenes] == ["scene_00000", "scene_00001"]
    assert sorted(load_scene(scenes[1]).splits) == [3, 6]  # 10 views: 8 non-test views, no 9-view split
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    main(argv + ["--overwrite", "--layout", "forward-facing"])
    assert json.loads((scenes[0] / "transforms.json").read_text())["synthetic"]["layout"] == "forward-facing"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_views=0), "--views"),
        (dict(resolution=2), "--resolution"),
        (dict(layout="spiral"), "layout"),
        (dict(seed=-1), "--seed"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    arguments = dict(num_scenes=1, num_views=4, resolution=16, layout="object-360", seed=0) | kwargs
    with pytest.raises(InputError, match=message):
        generate_scenes(tmp_path / "out", **arguments)
    assert not (tmp_path / "out").exists()


def test_benchmark_script_runs(tmp_path, capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_synthetic", REPO / "benchmarks" / "bench_synthetic.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_synthetic", bench)  # dataclasses look their module up
    spec.loader.exec_module(bench)
    cfg = bench.BenchConfig(resolution=16, views=2, scenes=1, contact_sheet=tmp_path / "sheet.png",
                            sheet_scenes=2, sheet_views=2, sheet_resolution=16)
    bench.main(cfg)
    assert "views/s" in capsys.readouterr().out
    assert (tmp_path / "sheet.png").is_file()


def test_spec_is_frozen():
    spec = sample_scene(0, layout="object-360", num_views=2, resolution=8)
    with pytest.raises(AttributeError):
        spec.seed = 1  # type: ignore[misc]
    assert replace(spec, seed=1).seed == 1
