"""Multiview readers (on fixtures written in each dataset's own layout) and the example sampler."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from reconfusion.cameras import project
from reconfusion.files import InputError, write_image
from reconfusion.scene import write_scene
from data_tools.synthetic import generate_scenes
from train_prior.config import TrainConfig
from train_prior.model_card import manifest_table, training_manifest
from train_prior.datasets import MultiviewDataset, StepSampler, ViewCache, WeightedSource, _crop_and_resize
from train_prior.readers import read_co3d, read_mvimgnet, read_realestate10k, read_scene_folders

POINT = np.array([0.3, -0.2, 4.0])


def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _our_projection(scene, index: int) -> np.ndarray:
    uv, depth = project(
        torch.tensor(POINT[None]), torch.tensor(scene.c2w[index]), torch.tensor(scene.intrinsics[index])
    )
    assert depth.item() > 0
    return uv[0].numpy()


def _opencv_pixel(w2c: np.ndarray, fx, fy, cx, cy) -> np.ndarray:
    x = w2c[:3, :3] @ POINT + w2c[:3, 3]
    return np.array([fx * x[0] / x[2] + cx, fy * x[1] / x[2] + cy])


def _blank_images(folder, names, size=(24, 32)):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        write_image(folder / name, np.zeros((*size, 3), np.float32))


def test_co3d_matches_pytorch3d_projection(tmp_path):
    height, width = 24, 32
    frames, expected = [], []
    for k in range(4):
        rotation, translation = _rotation(0.1 * k), np.array([0.1 * k, 0.0, 0.5])
        focal, principal = np.array([1.8, 1.9]), np.array([0.05, -0.1])
        frames.append({
            "sequence_name": "seq1", "frame_number": k, "frame_timestamp": 0.0,
            "image": {"path": f"chair/seq1/images/frame{k:06d}.png", "size": [height, width]},
            "viewpoint": {"R": rotation.tolist(), "T": translation.tolist(), "focal_length": focal.tolist(),
                          "principal_point": principal.tolist(), "intrinsics_format": "ndc_isotropic"},
        })
        cam = POINT @ rotation + translation  # PyTorch3D row-vector convention, x left, y up, z forward
        ndc = focal * cam[:2] / cam[2] + principal
        half = min(height, width) / 2
        expected.append([width / 2 - ndc[0] * half, height / 2 - ndc[1] * half])
    _blank_images(tmp_path / "chair/seq1/images", [f"frame{k:06d}.png" for k in range(4)])
    (tmp_path / "chair" / "frame_annotations.jgz").write_bytes(gzip.compress(json.dumps(frames).encode()))
    (scene,) = read_co3d(tmp_path)
    for k in range(4):
        np.testing.assert_allclose(_our_projection(scene, k), expected[k], atol=1e-6)


def test_realestate10k_matches_opencv_projection(tmp_path):
    width, height = 32, 24
    lines = ["https://example.invalid/video"]
    w2cs = []
    for k in range(5):
        w2c = np.eye(4)[:3]
        w2c[:, :3], w2c[:, 3] = _rotation(0.05 * k), [0.1 * k, 0.0, 0.0]
        w2cs.append(w2c)
        lines.append(" ".join(map(str, [1000 * k, 0.9, 1.2, 0.5, 0.45, 0, 0, *w2c.ravel()])))
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "abc.txt").write_text("\n".join(lines))
    _blank_images(tmp_path / "frames" / "abc", [f"{1000 * k}.png" for k in range(5)])
    (scene,) = read_realestate10k(tmp_path)
    for k in range(5):
        expected = _opencv_pixel(w2cs[k], 0.9 * width, 1.2 * height, 0.5 * width, 0.45 * height)
        np.testing.assert_allclose(_our_projection(scene, k), expected, atol=1e-6)


def test_mvimgnet_reads_colmap_text_model(tmp_path):
    obj = tmp_path / "cat7" / "obj1"
    sparse = obj / "sparse" / "0"
    sparse.mkdir(parents=True)
    (sparse / "cameras.txt").write_text("1 PINHOLE 32 24 30 31 16 12\n")
    quaternions = [(1, 0, 0, 0), (0.9961947, 0, 0.0871557, 0), (0.9848078, 0, 0.1736482, 0), (0.9659258, 0, 0.258819, 0)]
    (sparse / "images.txt").write_text("".join(f"{k + 1} {' '.join(map(str, q))} 0.1 0.0 0.2 1 im{k}.png\n\n" for k, q in enumerate(quaternions)))
    (sparse / "points3D.txt").write_text("")
    _blank_images(obj / "images", [f"im{k}.png" for k in range(4)])
    (scene,) = read_mvimgnet(tmp_path)
    assert len(scene) == 4
    rotation = _rotation(2 * np.arccos(0.9961947))
    w2c = np.concatenate([rotation, [[0.1], [0.0], [0.2]]], axis=1)
    np.testing.assert_allclose(_our_projection(scene, 1), _opencv_pixel(w2c, 30, 31, 16, 12), atol=1e-4)


def _scene(folder, n, rng):
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, 0, 3] = np.linspace(-1, 1, n)
    c2w[:, 2, 3] = 3.0
    images = [rng.random((40, 48, 3)).astype(np.float32) for _ in range(n)]
    return write_scene(folder, images, c2w, np.tile([40.0, 40.0, 24.0, 20.0], (n, 1)))


def test_scene_folders_skip_small_and_broken_scenes(tmp_path, caplog):
    rng = np.random.default_rng(0)
    _scene(tmp_path / "a", 6, rng)
    _scene(tmp_path / "small", 3, rng)
    broken = _scene(tmp_path / "broken", 5, rng)
    (broken / "images" / "frame_00002.png").unlink()
    scenes = read_scene_folders(tmp_path)
    assert [s.name for s in scenes] == ["a"]
    assert "fewer than 4 views" in caplog.text and "broken scene" in caplog.text


@pytest.mark.parametrize("reader", [read_scene_folders, read_co3d, read_realestate10k, read_mvimgnet])
def test_readers_give_clear_errors(tmp_path, reader):
    with pytest.raises(InputError, match="not found"):
        reader(tmp_path / "missing")
    with pytest.raises(InputError, match=str(tmp_path)):
        reader(tmp_path)


def test_crop_keeps_intrinsics_right():
    image = np.zeros((40, 60, 3), np.float32)
    image[10, 35] = 1.0  # the pixel whose centre is at (u, v) = (35.5, 10.5)
    rng = np.random.default_rng(3)
    crop, intrinsics = _crop_and_resize(image, np.array([50.0, 50.0, 30.0, 20.0]), 20, rng, (1.0, 1.0))
    # The bright pixel sits where a point at the same ray lands with the new intrinsics.
    direction = np.array([(35.5 - 30.0) / 50.0, (10.5 - 20.0) / 50.0])
    u, v = intrinsics[:2] * direction + intrinsics[2:]
    row, col = np.unravel_index(crop.sum(-1).argmax(), crop.shape[:2])
    assert abs(col + 0.5 - u) <= 1.0 and abs(row + 0.5 - v) <= 1.0


def test_view_cache_shrinks_views_keeps_intrinsics_right_and_decodes_once():
    class OnePhoto:
        intrinsics = np.array([[400.0, 400.0, 300.0, 200.0]])
        decoded = 0

        def image(self, view):
            self.decoded += 1
            image = np.zeros((400, 600, 3), np.float32)
            image[100:104, 350:354] = 1.0  # a 4x4 block centred on (u, v) = (352, 102)
            return image

    scene, cache = OnePhoto(), ViewCache(short_side=40, megabytes=40 * 60 * 3 / 2**20)  # room for one view
    image, intrinsics = cache.get(scene, 0)
    assert image.shape == (40, 60, 3) and image.dtype == np.float32
    cache.get(scene, 0)
    assert scene.decoded == 1  # the second time from the cache
    crop, k = _crop_and_resize(image, intrinsics, 20, np.random.default_rng(0), (1.0, 1.0))
    u, v = k[:2] * np.array([(352 - 300) / 400, (102 - 200) / 400]) + k[2:]  # the block's ray, new intrinsics
    row, col = np.unravel_index(crop.sum(-1).argmax(), crop.shape[:2])
    assert abs(col + 0.5 - u) <= 1.0 and abs(row + 0.5 - v) <= 1.0
    other = OnePhoto()
    cache.get(other, 0)  # room for one: the first scene's view is dropped
    cache.get(scene, 0)
    assert scene.decoded == 2 and len(cache.views) == 1 and cache.used == 40 * 60 * 3
    full, same_k = ViewCache(short_side=None, megabytes=0).get(scene, 0)
    assert full.shape == (400, 600, 3) and np.array_equal(same_k, OnePhoto.intrinsics[0])


def test_examples_are_deterministic_and_normalised(tmp_path):
    rng = np.random.default_rng(1)
    scenes = read_scene_folders(_scene(tmp_path / "s", 8, rng).parent)
    dataset = MultiviewDataset([WeightedSource(scenes)], resolution=16, seed=5)
    a, b, c = dataset[7], dataset[7], dataset[8]
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    assert not torch.equal(a["observed_images"], c["observed_images"])
    assert a["observed_images"].shape == (3, 3, 16, 16) and a["target_image"].shape == (3, 16, 16)
    assert a["observed_c2w"][:, :3, 3].abs().max() <= 1.0 + 1e-5
    assert 0 < a["near"] < a["far"]


def test_step_sampler_gives_disjoint_blocks_per_rank_and_resumes():
    take = lambda sampler, n: [i for _, i in zip(range(n), iter(sampler))]  # noqa: E731
    rank0, rank1 = take(StepSampler(2, 0, 2), 6), take(StepSampler(2, 1, 2), 6)
    assert not set(rank0) & set(rank1)
    assert take(StepSampler(2, 0, 2, start_step=1), 4) == rank0[2:]


# ------------------------------------------------------------------ LLFF (with masks) and Strecha readers

from PIL import Image  # noqa: E402

from train_prior.readers import read_llff, read_strecha  # noqa: E402

_OPENCV_TO_OPENGL_AXES = np.diag([1.0, -1.0, -1.0])


def _opencv_c2w(k: int) -> np.ndarray:
    """(3, 4) OpenCV camera-to-world of the k-th fixture camera, looking at POINT from near the origin."""
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = _rotation(0.05 * k), [0.1 * k, -0.05 * k, 0.2]
    return np.linalg.inv(w2c)[:3]


def _write_llff(capture, n=4, hwf=(240.0, 320.0, 300.0), masks=True, size=(24, 32)):
    """An LLFF capture: poses_bounds.npy built from OpenCV cameras, images_10/ (+ masks_10/), a decoy images/."""
    rows = []
    for k in range(n):
        c2w = _opencv_c2w(k)
        llff = np.stack([c2w[:, 1], c2w[:, 0], -c2w[:, 2], c2w[:, 3], hwf], axis=1)  # down, right, back, t, hwf
        rows.append(np.concatenate([llff.ravel(), [1.0, 10.0]]))
    capture.mkdir(parents=True)
    np.save(capture / "poses_bounds.npy", np.array(rows))
    _blank_images(capture / "images", [f"IMG_{k}.png" for k in range(n)], size=(size[0] * 2, size[1] * 2))
    (capture / "images_10").mkdir()
    for k in range(n):
        write_image(capture / "images_10" / f"IMG_{k}.JPG", np.full((*size, 3), [0.8, 0.1, 0.1], np.float32))
    if masks:
        (capture / "masks_10").mkdir()
        mask = np.zeros(size, np.uint8)
        mask[:, : size[1] // 2] = 255
        for k in range(n):
            Image.fromarray(mask).save(capture / "masks_10" / f"IMG_{k}_mask.png")
    return capture


def test_llff_matches_opencv_projection_and_reads_masks(tmp_path):
    _write_llff(tmp_path / "cap")
    (scene,) = read_llff(tmp_path)
    assert scene.name == "cap" and len(scene) == 4
    assert [p.parent.name for p in scene.image_paths] == ["images_10"] * 4  # the most downsampled folder
    assert [p.name for p in scene.mask_paths] == [f"IMG_{k}_mask.png" for k in range(4)]
    np.testing.assert_allclose(scene.intrinsics, np.tile([30.0, 30.0, 16.0, 12.0], (4, 1)))  # focal 300 * 32 / 320
    for k in range(4):
        c2w = _opencv_c2w(k)
        np.testing.assert_allclose(scene.c2w[k, :3], np.c_[c2w[:, :3] @ _OPENCV_TO_OPENGL_AXES, c2w[:, 3]], atol=1e-12)
        w2c = np.linalg.inv(np.vstack([c2w, [0, 0, 0, 1]]))
        np.testing.assert_allclose(_our_projection(scene, k), _opencv_pixel(w2c, 30, 30, 16, 12), atol=1e-9)


def test_masks_compose_views_on_the_background(tmp_path):
    (scene,) = read_llff(_write_llff(tmp_path / "cap").parent)
    view = scene.image(0)
    np.testing.assert_allclose(view[:, :16], np.broadcast_to([0.8, 0.1, 0.1], (24, 16, 3)), atol=0.02)
    np.testing.assert_allclose(view[:, 16:], 1.0)  # masked out: the default white background
    grey = np.full((24, 32), 128, np.uint8)
    Image.fromarray(grey).save(scene.mask_paths[1])
    alpha = 128 / 255  # a grey mask blends the view and the background
    np.testing.assert_allclose(scene.image(1)[0, 0], alpha * np.array([0.8, 0.1, 0.1]) + (1 - alpha), atol=0.02)
    example = MultiviewDataset([WeightedSource([scene])], resolution=16, crop_scale=(1.0, 1.0))[0]
    target = example["target_image"].numpy()
    assert target[:, :, 12:].min() > 0.95 and target[1, :, :4].max() < 0.2  # right half white, left half red


def test_llff_skips_broken_captures_and_counts_them(tmp_path, caplog):
    _write_llff(tmp_path / "good")
    (_write_llff(tmp_path / "junk_poses") / "poses_bounds.npy").write_text("not an array")
    (_write_llff(tmp_path / "no_poses") / "poses_bounds.npy").unlink()
    (_write_llff(tmp_path / "mask_missing") / "masks_10" / "IMG_2_mask.png").unlink()
    scenes = read_llff(tmp_path)
    assert [s.name for s in scenes] == ["good"]
    for reason in ["1 (unreadable poses_bounds.npy)", "1 (missing poses_bounds.npy)", "1 (masks do not match images)"]:
        assert reason in caplog.text


def _write_strecha_camera(path, k_matrix, rotation_c2w, centre, distortion=(0, 0, 0), size=(64, 48)):
    rows = [*k_matrix.tolist(), list(distortion), *rotation_c2w.tolist(), list(centre)]
    lines = [" ".join(f"{v:.17g}" for v in row) + " " for row in rows] + [f"{size[0]} {size[1]}"]
    path.write_text("\n".join(lines) + "\n")


def test_strecha_matches_its_projection_and_rescales_k(tmp_path, caplog):
    scene_dir = tmp_path / "fountain"
    k_matrix = np.array([[60.0, 0.0, 32.2], [0.0, 62.0, 23.8], [0.0, 0.0, 1.0]])
    (scene_dir / "cameras").mkdir(parents=True)
    for k in range(3):
        c2w = _opencv_c2w(k)
        _write_strecha_camera(scene_dir / "cameras" / f"{k:04d}.jpg.camera", k_matrix, c2w[:, :3], c2w[:, 3],
                              distortion=(0.01, 0, 0) if k == 2 else (0, 0, 0))
    _blank_images(scene_dir / "images", [f"{k:04d}.jpg" for k in range(3)], size=(24, 32))  # half the declared 64x48
    (scene,) = read_strecha(tmp_path, min_views=3)
    assert scene.name == "fountain" and len(scene) == 3
    np.testing.assert_allclose(scene.intrinsics, np.tile([30.0, 31.0, 16.1, 11.9], (3, 1)), atol=1e-12)
    for k in range(3):
        c2w = _opencv_c2w(k)
        np.testing.assert_allclose(scene.c2w[k, :3], np.c_[c2w[:, :3] @ _OPENCV_TO_OPENGL_AXES, c2w[:, 3]], atol=1e-12)
        x = k_matrix @ c2w[:, :3].T @ (POINT - c2w[:, 3])  # K R^T (X - C) in the declared 64x48 image
        np.testing.assert_allclose(_our_projection(scene, k), 0.5 * x[:2] / x[2], atol=1e-9)
    assert "ignoring the non-zero distortion or skew of 1 cameras" in caplog.text


def test_strecha_skips_short_camera_files(tmp_path, caplog):
    for name in ["good", "short"]:
        (tmp_path / name / "cameras").mkdir(parents=True)
        _blank_images(tmp_path / name / "images", [f"{k:04d}.jpg" for k in range(4)])
        for k in range(4):
            c2w = _opencv_c2w(k)
            _write_strecha_camera(tmp_path / name / "cameras" / f"{k:04d}.jpg.camera", np.eye(3) * 30, c2w[:, :3], c2w[:, 3])
    camera = tmp_path / "short" / "cameras" / "0001.jpg.camera"
    camera.write_text("\n".join(camera.read_text().splitlines()[:6]) + "\n")
    assert [s.name for s in read_strecha(tmp_path)] == ["good"]
    assert "1 (unreadable .camera file)" in caplog.text


@pytest.mark.parametrize("reader", [read_llff, read_strecha])
def test_photo_readers_give_clear_errors(tmp_path, reader):
    with pytest.raises(InputError, match="not found"):
        reader(tmp_path / "missing")
    with pytest.raises(InputError, match=str(tmp_path)):
        reader(tmp_path)


def _axes_meeting_point(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares point nearest all optical axes (OpenGL: -z), each axis' distance to it, its depth along it."""
    centres, forward = c2w[:, :3, 3], -c2w[:, :3, 2]
    projectors = np.eye(3) - forward[:, :, None] * forward[:, None, :]
    point = np.linalg.solve(projectors.sum(0), (projectors @ centres[:, :, None]).sum(0)[:, 0])
    return point, np.linalg.norm(projectors @ (point - centres)[:, :, None], axis=(1, 2)), ((point - centres) * forward).sum(-1)


def _spacing(c2w: np.ndarray) -> float:
    """Median distance from each camera centre to its nearest neighbour."""
    centres = c2w[:, :3, 3]
    distance = np.linalg.norm(centres[:, None] - centres[None], axis=-1) + np.diag(np.full(len(centres), np.inf))
    return float(np.median(distance.min(1)))


def test_shared_mary_rose_reads_with_masks_and_cameras_meet_on_the_object(shared_data):
    (scene,) = read_llff(shared_data / "train" / "photos" / "maryRose")
    assert len(scene) == 69 and len(scene.mask_paths) == 69
    assert all(m.name == f"{i.stem}_mask.png" for i, m in zip(scene.image_paths, scene.mask_paths))
    point, miss, depth = _axes_meeting_point(scene.c2w)
    assert np.median(miss) < 0.5 * _spacing(scene.c2w) and depth.min() > 0
    uv, _ = project(torch.tensor(point[None]), torch.tensor(scene.c2w), torch.tensor(scene.intrinsics))
    for k in range(0, 69, 7):  # the axes' meeting point lies on the object in the masks
        mask = np.asarray(Image.open(scene.mask_paths[k]))
        assert mask[int(uv[k, 0, 1]), int(uv[k, 0, 0])] > 127


def test_shared_strecha_reads_and_fountain_cameras_meet_in_front(shared_data):
    scenes = read_strecha(shared_data / "train" / "photos" / "strecha")
    assert len(scenes) == 6 and sum(len(s) for s in scenes) == 103
    fountain = next(s for s in scenes if s.name == "fountain-P11")
    assert len(fountain) == 11 and fountain.intrinsics[0, 0] == pytest.approx(689.87)
    point, miss, depth = _axes_meeting_point(fountain.c2w)
    assert miss.max() < 0.5 * _spacing(fountain.c2w) and depth.min() > 0


def test_shared_strecha_cameras_agree_with_feature_matches(shared_data):
    cv2 = pytest.importorskip("cv2")
    scene = next(s for s in read_strecha(shared_data / "train" / "photos" / "strecha") if s.name == "fountain-P11")
    sift, keypoints = cv2.SIFT_create(2000), []
    for k in (4, 5):
        found, descriptors = sift.detectAndCompute(cv2.imread(str(scene.image_paths[k]), cv2.IMREAD_GRAYSCALE), None)
        keypoints.append((np.array([p.pt for p in found]) + 0.5, descriptors))  # OpenCV pixel centres are integers
    pairs = [m for m, n in cv2.BFMatcher().knnMatch(keypoints[0][1], keypoints[1][1], k=2) if m.distance < 0.7 * n.distance]
    uv = [keypoints[0][0][[m.queryIdx for m in pairs]], keypoints[1][0][[m.trainIdx for m in pairs]]]
    # Triangulate each match from view 4's ray at the depth closest to view 5's ray, then reproject into view 5.
    origins, directions = [], []
    for k, pixels in zip((4, 5), uv):
        fx, fy, cx, cy = scene.intrinsics[k]
        rays = np.stack([(pixels[:, 0] - cx) / fx, -(pixels[:, 1] - cy) / fy, -np.ones(len(pixels))], -1)
        origins.append(scene.c2w[k, :3, 3]), directions.append(rays @ scene.c2w[k, :3, :3].T)
    w = origins[0] - origins[1]
    a, b, c = (directions[0] ** 2).sum(-1), (directions[0] * directions[1]).sum(-1), (directions[1] ** 2).sum(-1)
    d, e = (directions[0] * w).sum(-1), (directions[1] * w).sum(-1)
    t = (b * e - c * d) / (a * c - b * b)
    points = origins[0] + t[:, None] * directions[0]
    reprojected, depth = project(torch.tensor(points), torch.tensor(scene.c2w[5]), torch.tensor(scene.intrinsics[5]))
    error = np.linalg.norm(reprojected.numpy() - uv[1], axis=-1)
    assert len(pairs) > 100 and np.median(error) < 1.0 and np.mean(t > 0) > 0.95


def test_datasets_are_given_as_format_path_weight():
    from train_prior.config import TrainConfig, parse_dataset

    config = TrainConfig(datasets=("llff:/data/mary@2", "strecha:/data/strecha"), data=(Path("/data/scenes"),))
    assert [(d.format, str(d.path), d.weight) for d in config.all_datasets()] == [
        ("llff", "/data/mary", 2.0), ("strecha", "/data/strecha", 1.0), ("scenes", "/data/scenes", 1.0)]
    for bad in ("nerf:/data", "llff:", "llff:/data@-1", "llff:/data@x"):
        with pytest.raises(ValueError, match="FORMAT:PATH"):
            parse_dataset(bad)


def test_datasets_flag_parses_on_the_command_line():
    import tyro

    from train_prior.config import TrainConfig

    config = tyro.cli(TrainConfig, args=["--datasets", "llff:/data/mary@2", "scenes:/data/s"])
    assert config.datasets == ("llff:/data/mary@2", "scenes:/data/s")


def test_manifest_names_each_scene_with_its_source_and_licence(tmp_path):
    generate_scenes(tmp_path / "procedural", num_scenes=2, num_views=5, resolution=16, layout="object-360", seed=7)
    capture = _write_llff(tmp_path / "photos" / "cap")
    (capture.parent / "LICENSE.md").write_text("CC BY 4.0")
    config = TrainConfig(datasets=(f"scenes:{tmp_path / 'procedural'}", f"llff:{tmp_path / 'photos'}@0.5"))
    rows = training_manifest(config)
    assert [(r["format"], r["scene"], r["views"]) for r in rows] == [("scenes", "scene_00007", 5), ("scenes", "scene_00008", 5), ("llff", "cap", 4)]
    assert rows[0]["source"] == "reconfusion data synthetic, object-360, seed 7" and rows[0]["licence"].startswith("procedural")
    assert rows[2]["licence"] == str((capture.parent / "LICENSE.md").resolve()) and rows[2]["weight"] == 0.5
    table = manifest_table(rows)
    assert len(table) == 4 and "| 2 | 10 |" in table[2] and "photos/LICENSE.md" in table[3]
