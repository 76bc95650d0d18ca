"""Multiview readers (on fixtures written in each dataset's own layout) and the example sampler."""

import gzip
import json

import numpy as np
import pytest
import torch

from reconfusion.cameras import project
from reconfusion.files import InputError, write_image
from reconfusion.scene import write_scene
from train_prior.datasets import MultiviewDataset, StepSampler, WeightedSource, _crop_and_resize
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
