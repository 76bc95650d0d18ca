"""COLMAP posing (data_tools.colmap): bad input fails early and clearly; fern poses match LLFF's."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pycolmap = pytest.importorskip("pycolmap")

from data_tools.colmap import _camera_arrays, _depth_bounds, original_names, pose_images  # noqa: E402
from reconfusion.cameras import llff_to_opengl, similarity_alignment  # noqa: E402
from reconfusion.files import InputError, read_json, write_image  # noqa: E402
from reconfusion.scene import load_scene  # noqa: E402

FERN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nerf_llff_data" / "fern"


def _photos(folder: Path, count: int, size: tuple[int, int] = (48, 32), flat: bool = False) -> Path:
    """``count`` small PNG photos (random texture, or one flat colour) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        width, height = size
        image = np.full((height, width, 3), 0.5) if flat else rng.random((height, width, 3))
        write_image(folder / f"photo_{i:02d}.png", image)
    return folder


def test_missing_folder(tmp_path):
    with pytest.raises(InputError, match="not found"):
        pose_images(tmp_path / "nope", tmp_path / "out")


def test_folder_without_images(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "notes.txt").write_text("not a photo")
    with pytest.raises(InputError, match="no images"):
        pose_images(tmp_path / "photos", tmp_path / "out")


@pytest.mark.parametrize("out", [".", "..", "scene"])
def test_output_folder_never_holds_the_photos(tmp_path, out):
    photos = _photos(tmp_path / "photos", 3)
    with pytest.raises(InputError, match="must not contain or lie inside"):
        pose_images(photos, photos / out, overwrite=True)
    assert sorted(p.name for p in photos.iterdir()) == [f"photo_{i:02d}.png" for i in range(3)]


def test_too_few_photos(tmp_path):
    photos = _photos(tmp_path / "photos", 2)
    with pytest.raises(InputError, match="COLMAP needs at least 3 photos"):
        pose_images(photos, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_hidden_files_are_not_photos(tmp_path):
    photos = _photos(tmp_path / "photos", 2)
    (photos / "._photo_02.png").write_bytes(b"macOS metadata, not an image")
    with pytest.raises(InputError, match="2 photo\\(s\\) found"):
        pose_images(photos, tmp_path / "out")


def test_undecodable_image_is_named(tmp_path):
    photos = _photos(tmp_path / "photos", 3)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(InputError, match="broken.jpg"):
        pose_images(photos, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_photos_of_different_sizes(tmp_path):
    photos = _photos(tmp_path / "photos", 3)
    write_image(photos / "photo_99.png", np.zeros((20, 20, 3)))
    with pytest.raises(InputError, match="photo_99.png.*one camera"):
        pose_images(photos, tmp_path / "out")


def test_bad_options_fail_before_colmap_runs(tmp_path):
    photos = _photos(tmp_path / "photos", 3)
    with pytest.raises(InputError, match="FULL_OPENCV"):
        pose_images(photos, tmp_path / "out", camera_model="FULL_OPENCV")
    with pytest.raises(InputError, match="min_registered"):
        pose_images(photos, tmp_path / "out", min_registered=2)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("user data")
    with pytest.raises(InputError, match="--overwrite"):
        pose_images(photos, tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "user data"
    if not pycolmap.has_cuda:
        with pytest.raises(InputError, match="without CUDA"):
            pose_images(photos, tmp_path / "other", device="cuda")


def test_too_few_registered_keeps_terminal_clean(tmp_path, capfd, caplog):
    photos = _photos(tmp_path / "photos", 3, size=(64, 48), flat=True)  # no features at all
    with caplog.at_level(logging.INFO, logger="reconfusion"), pytest.raises(InputError) as err:
        pose_images(photos, tmp_path / "out", device="cpu")
    message = str(err.value)
    assert "registered only 0 of 3" in message and "--matcher sequential" in message and "overlap" in message
    assert not (tmp_path / "out").exists()
    log = tmp_path / "out.colmap.log"
    assert log.is_file() and "feature" in log.read_text().lower()
    terminal = capfd.readouterr()
    assert "feature_extraction" not in terminal.out + terminal.err  # pycolmap's glog lines went to the log file
    assert str(log) in caplog.text


@pytest.mark.parametrize(
    ("model", "params", "intrinsics", "distortion"),
    [
        ("SIMPLE_PINHOLE", [100, 20, 10], [100, 100, 20, 10], [0, 0, 0, 0]),
        ("PINHOLE", [100, 90, 20, 10], [100, 90, 20, 10], [0, 0, 0, 0]),
        ("SIMPLE_RADIAL", [100, 20, 10, 0.1], [100, 100, 20, 10], [0.1, 0, 0, 0]),
        ("RADIAL", [100, 20, 10, 0.1, -0.2], [100, 100, 20, 10], [0.1, -0.2, 0, 0]),
        ("OPENCV", [100, 90, 20, 10, 0.1, -0.2, 0.01, 0.02], [100, 90, 20, 10], [0.1, -0.2, 0.01, 0.02]),
    ],
)
def test_camera_models_map_to_pinhole_and_opencv_distortion(model, params, intrinsics, distortion):
    camera = SimpleNamespace(model=SimpleNamespace(name=model), params=np.array(params, float))
    got_intrinsics, got_distortion = _camera_arrays(camera)
    np.testing.assert_allclose(got_intrinsics, intrinsics)
    np.testing.assert_allclose(got_distortion, distortion)


def _llff_opengl(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """fern's LLFF poses as OpenGL (N, 4, 4), and (N, 3) [h, w, f] at full resolution."""
    poses_bounds = np.load(root / "poses_bounds.npy")
    poses = poses_bounds[:, :15].reshape(-1, 3, 5)
    return llff_to_opengl(poses[:, :, :4]), poses[:, :, 4]


def _reconstruction(depths, track_lengths, errors):
    """A duck-typed pycolmap reconstruction: one identity-posed image seeing a point at each depth."""
    points = {i: SimpleNamespace(xyz=np.array([0.0, 0.0, d]), track=SimpleNamespace(length=lambda n=n: n), error=e)
              for i, (d, n, e) in enumerate(zip(depths, track_lengths, errors))}
    observations = [SimpleNamespace(point3D_id=i, has_point3D=lambda: True) for i in points]
    pose = SimpleNamespace(rotation=SimpleNamespace(matrix=lambda: np.eye(3)), translation=np.zeros(3))
    return SimpleNamespace(points3D=points), SimpleNamespace(points2D=observations, cam_from_world=lambda: pose)


def test_depth_bounds_ignore_spurious_two_view_points():
    depths = np.r_[np.linspace(2.0, 4.0, 20), 40.0, 0.1]  # a far and a near outlier, each seen by 2 photos
    recon, image = _reconstruction(depths, [5] * 20 + [2, 2], [0.5] * 22)
    near, far = _depth_bounds(recon, image)
    assert 2.0 <= near < 2.01 and 3.99 < far <= 4.0
    recon, image = _reconstruction(depths, [5] * 20 + [5, 5], [0.5] * 20 + [3.0, 3.0])  # far off their rays
    assert 2.0 <= _depth_bounds(recon, image)[0] and _depth_bounds(recon, image)[1] <= 4.0
    recon, image = _reconstruction(depths, [2] * 22, [0.5] * 22)  # too few reliable points: all of them count
    near, far = _depth_bounds(recon, image)
    assert near < 0.2 and far > 30.0
    recon, image = _reconstruction(depths[:9], [5] * 9, [0.5] * 9)
    assert _depth_bounds(recon, image) is None


@pytest.mark.slow
@pytest.mark.skipif(not (FERN / "images_8").is_dir(), reason="fern test data (../shared/data) absent")
def test_fern_poses_match_llff(tmp_path, capfd, caplog):
    with caplog.at_level(logging.INFO, logger="reconfusion"):
        result = pose_images(FERN / "images_8", tmp_path / "fern", device="cpu")
    photos = sorted(p.name for p in (FERN / "images_8").iterdir())
    assert result.total == len(photos) == 20 and result.registered >= 18
    assert 0.0 < result.mean_reprojection_error < 2.0
    assert result.log_path == tmp_path / "fern" / "colmap.log" and result.log_path.stat().st_size > 0
    assert f"registered {result.registered}/20" in caplog.text
    terminal = "".join(capfd.readouterr())
    assert "feature_extraction" not in terminal
    assert "COLMAP mapping (photos registered)" in terminal and f"{result.registered + 2}/22" in terminal  # the bar

    scene = load_scene(result.scene_dir)
    assert len(scene) == result.registered
    made_by = read_json(result.scene_dir / "transforms.json")["reconfusion_import"]  # the benchmark's data command
    assert made_by == {"format": "colmap", "source": str((FERN / "images_8").resolve()), "matcher": "exhaustive",
                       "camera_model": "OPENCV"}  # fmt: skip
    names = original_names(result.scene_dir)
    llff_index = [photos.index(names[p.relative_to(scene.root).as_posix()]) for p in scene.image_paths]
    assert llff_index == sorted(llff_index)  # frames keep the photos' order, so split ids stay meaningful
    llff_c2w, hwf = _llff_opengl(FERN)

    scale, rotation, translation = similarity_alignment(scene.c2w[:, :3, 3], llff_c2w[llff_index, :3, 3])
    aligned = scale * scene.c2w[:, :3, 3] @ rotation.T + translation
    centres = llff_c2w[:, :3, 3]
    extent = np.linalg.norm(centres[:, None] - centres[None], axis=-1).max()
    errors = np.linalg.norm(aligned - llff_c2w[llff_index, :3, 3], axis=-1)
    assert errors.max() < 0.02 * extent, (errors / extent).round(4)

    # Orientations agree too (catches an OpenCV/OpenGL axis mix-up that centres alone would not).
    relative = np.swapaxes(llff_c2w[llff_index, :3, :3], -1, -2) @ rotation @ scene.c2w[:, :3, :3]
    angles = np.degrees(np.arccos(np.clip((np.trace(relative, axis1=-2, axis2=-1) - 1) / 2, -1, 1)))
    assert angles.max() < 2.0, angles.round(2)
    # Focal length agrees with LLFF's (given at full resolution).
    llff_focal = hwf[0, 2] * scene.sizes[0, 0] / hwf[0, 1]
    np.testing.assert_allclose(scene.intrinsics[:, :2], llff_focal, rtol=0.08)  # OPENCV fits fx != fy
    # Depth bounds like LLFF's: scaled into LLFF's units, they match poses_bounds.npy's near/far.
    llff_bounds = np.load(FERN / "poses_bounds.npy")[llff_index, 15:]
    assert scene.bounds is not None and scene.bounds.shape == (len(scene), 2)
    np.testing.assert_allclose(scale * scene.bounds, llff_bounds, rtol=0.2)  # measured: 0.93-1.10


# ------------------------------------------------------------------ reconfusion data import colmap


def _colmap_capture(folder: Path, binary: bool) -> tuple[np.ndarray, np.ndarray]:
    """A capture with a COLMAP model (OPENCV camera, 4 photos of 48x32 around the origin, 20 points seen by all)
    in sparse/0 (text, or binary converted by pycolmap), images/ and images_2/. Returns OpenGL c2w and K."""
    from reconfusion.novel_views import look_at

    width, height, k = 48, 32, np.array([40.0, 42.0, 24.5, 15.5])
    angles = np.radians([0.0, 30.0, 60.0, 90.0])
    c2w = np.stack([look_at(np.array([3 * np.sin(a), 0.5, 3 * np.cos(a)]), np.zeros(3), np.array([0.0, 1.0, 0.0]))
                    for a in angles])  # fmt: skip
    points = np.random.default_rng(1).uniform(-0.5, 0.5, (20, 3))
    model = folder / "sparse" / "0"
    model.mkdir(parents=True)
    (model / "cameras.txt").write_text(f"1 OPENCV {width} {height} {' '.join(map(str, k))} 0.01 -0.002 0.001 0.0005\n")
    image_lines, tracks = [], {i: [] for i in range(len(points))}
    for index, pose in enumerate(c2w):
        w2c = np.linalg.inv(pose @ np.diag([1.0, -1.0, -1.0, 1.0]))  # OpenGL c2w -> OpenCV world-to-camera
        x, y, z, w = pycolmap.Rotation3d(w2c[:3, :3]).quat
        name = f"photo_{index:02d}.png"
        image_lines.append(f"{index + 1} {w} {x} {y} {z} {' '.join(map(str, w2c[:3, 3]))} 1 {name}")
        local = points @ w2c[:3, :3].T + w2c[:3, 3]
        pixels = local[:, :2] / local[:, 2:] * k[:2] + k[2:]
        image_lines.append(" ".join(f"{u} {v} {p + 1}" for p, (u, v) in enumerate(pixels)))
        for p in range(len(points)):
            tracks[p].append(f"{index + 1} {p}")
        write_image(folder / "images" / name, np.random.default_rng(index).random((height, width, 3)))
        write_image(folder / "images_2" / name, np.random.default_rng(index).random((height // 2, width // 2, 3)))
    (model / "images.txt").write_text("\n".join(image_lines) + "\n")
    (model / "points3D.txt").write_text("".join(f"{p + 1} {' '.join(map(str, xyz))} 128 128 128 0.5 {' '.join(tracks[p])}\n"
                                                for p, xyz in enumerate(points)))  # fmt: skip
    if binary:
        reconstruction = pycolmap.Reconstruction(str(model))
        for part in ("cameras", "images", "points3D"):
            (model / f"{part}.txt").unlink()
        reconstruction.write_binary(str(model))
    return c2w, k


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("downscale", [1, 2])
def test_import_colmap_model(tmp_path, binary, downscale):
    from data_tools.importers import import_scene

    c2w, k = _colmap_capture(tmp_path / "capture", binary)
    out = import_scene("colmap", tmp_path / "capture", tmp_path / "scene", downscale=downscale)
    scene = load_scene(out)
    assert len(scene) == 4
    np.testing.assert_allclose(scene.c2w, c2w, atol=1e-6)
    np.testing.assert_allclose(scene.intrinsics, np.tile(k / downscale, (4, 1)), atol=1e-6)
    np.testing.assert_allclose(scene.distortion[0], [0.01, -0.002, 0.001, 0.0005], atol=1e-9)
    assert tuple(scene.sizes[0]) == (48 // downscale, 32 // downscale)
    assert scene.bounds is not None and (scene.bounds[:, 0] > 2.0).all() and (scene.bounds[:, 1] < 4.0).all()
    source = read_json(out / "transforms.json")["reconfusion_import"]
    assert source["format"] == "colmap" and source["model"] == "sparse/0" and source["downscale"] == downscale


def test_import_colmap_bad_captures(tmp_path):
    from data_tools.importers import import_scene

    with pytest.raises(InputError, match="no COLMAP model"):
        import_scene("colmap", _photos(tmp_path / "photos", 3), tmp_path / "out")
    _colmap_capture(tmp_path / "capture", binary=False)
    with pytest.raises(InputError, match=r"images_4: photo folder not found; folders present: images, images_2"):
        import_scene("colmap", tmp_path / "capture", tmp_path / "out", downscale=4)
    (tmp_path / "capture" / "images_2" / "photo_03.png").unlink()
    with pytest.raises(InputError, match=r"1 of the model's 4 photos are missing \(e.g. photo_03.png\)"):
        import_scene("colmap", tmp_path / "capture", tmp_path / "out", downscale=2)
    (tmp_path / "capture" / "sparse" / "0" / "points3D.txt").unlink()
    with pytest.raises(InputError, match=r"incomplete COLMAP model, points3D.bin \(or .txt\) missing"):
        import_scene("colmap", tmp_path / "capture", tmp_path / "out")


def test_sparse_points_become_depth_rays_that_train(tmp_path):
    pytest.importorskip("nerfstudio")
    import torch
    from nerfstudio.data.scene_box import SceneBox

    from data_tools.importers import import_scene
    from data_tools.splits import write_splits
    from nerfstudio_plugin import methods
    from nerfstudio_plugin.dataparser import SPARSE_DEPTH_METADATA, ReconFusionDataParserConfig
    from reconfusion.regularisers import RegularisersConfig

    _colmap_capture(tmp_path / "capture", binary=True)
    scene_dir = import_scene("colmap", tmp_path / "capture", tmp_path / "scene")
    scene = load_scene(scene_dir)
    assert scene.points is not None and len(scene.points.xyz) == 20 and len(scene.points.observations) == 80
    write_splits(scene_dir, protocol="auto", views=(2,))
    outputs = ReconFusionDataParserConfig(data=scene_dir, num_views=2).setup().get_dataparser_outputs("train")
    rays = outputs.metadata[SPARSE_DEPTH_METADATA]
    assert len(rays["depths"]) == 40  # 20 points, each seen by both training views
    ends = rays["origins"] + rays["directions"] * rays["depths"][:, None]
    normalised = outputs.dataparser_scale * (torch.as_tensor(scene.points.xyz, dtype=torch.float32) + outputs.dataparser_transform[:, 3])
    assert torch.cdist(ends, normalised).min(dim=1).values.max() < 1e-4  # every ray ends at a point

    config = methods.cpu_config("test", None).pipeline.model
    config.regularisers = RegularisersConfig(sparse_depth_weight=1.0, sparse_depth_rays=32)
    model = config.setup(scene_box=outputs.scene_box, num_train_data=2, metadata=outputs.metadata)
    model.train()
    loss = model.regulariser_losses({})["sparse_depth_loss"]
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.field.parameters())
    assert "sparse depth 1" in config.regularisers.describe()
