"""The scene format: writer, reader and the errors bad scenes get."""

import json

import numpy as np
import pytest
from PIL import Image

from reconfusion.files import InputError, atomic_directory, read_rgba
from reconfusion.scene import Split, load_scene, write_scene


def _cameras(n: int) -> tuple[np.ndarray, np.ndarray]:
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, 0, 3] = np.arange(n)
    intrinsics = np.tile([20.0, 21.0, 8.0, 6.0], (n, 1))
    return c2w, intrinsics


def _write(tmp_path, n=4, **kwargs):
    rng = np.random.default_rng(0)
    images = [rng.random((12, 16, 3)).astype(np.float32) for _ in range(n)]
    c2w, intrinsics = _cameras(n)
    return write_scene(tmp_path / "scene", images, c2w, intrinsics, **kwargs), images, c2w


def test_round_trip(tmp_path):
    depths = [np.full((12, 16), 2.0, np.float32)] * 4
    out, images, c2w = _write(tmp_path, splits={2: Split((0, 2), (1, 3))}, depths=depths)
    scene = load_scene(out)
    assert len(scene) == 4
    np.testing.assert_allclose(scene.c2w, c2w)
    np.testing.assert_allclose(scene.intrinsics[1], [20.0, 21.0, 8.0, 6.0])
    assert scene.sizes.tolist() == [[16, 12]] * 4
    assert scene.split(2) == Split((0, 2), (1, 3))
    np.testing.assert_allclose(scene.image(3), images[3], atol=1 / 255)
    assert np.load(scene.depth_paths[0]).shape == (12, 16)
    with pytest.raises(InputError, match="data splits"):
        scene.split(9)


def test_frames_sorted_by_file_name(tmp_path):
    out, _, c2w = _write(tmp_path)
    meta = json.loads((out / "transforms.json").read_text())
    meta["frames"] = meta["frames"][::-1]
    (out / "transforms.json").write_text(json.dumps(meta))
    np.testing.assert_allclose(load_scene(out).c2w, c2w)


def _edit(out, fn):
    meta = json.loads((out / "transforms.json").read_text())
    fn(meta)
    (out / "transforms.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m["frames"][1].update(file_path="images/nope.png"), "missing"),
        (lambda m: m["frames"][2]["transform_matrix"][0].__setitem__(3, float("nan")), "non-finite"),
        (lambda m: m["frames"][0]["transform_matrix"][0].__setitem__(0, 3.0), "degenerate"),
        (lambda m: m["frames"][0].update(w=99), "99x12"),
        (lambda m: m.update(frames=[]), "no frames"),
    ],
)
def test_bad_transforms(tmp_path, edit, message):
    out, _, _ = _write(tmp_path)
    _edit(out, edit)
    with pytest.raises(InputError, match=message):
        load_scene(out)


def test_undecodable_image_is_named(tmp_path):
    out, _, _ = _write(tmp_path)
    (out / "images" / "frame_00001.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="frame_00001.png"):
        load_scene(out)


@pytest.mark.parametrize(
    "split, message",
    [
        ({"train_ids": [0, 7], "test_ids": [1]}, "out of range"),
        ({"train_ids": [0, 1], "test_ids": [1, 2]}, "both"),
        ({"train_ids": [], "test_ids": [1]}, "empty"),
        ({"train_ids": [0, 0], "test_ids": [1]}, "repeated"),
        ({"train": [0]}, "train_ids"),
    ],
)
def test_bad_split_files(tmp_path, split, message):
    out, _, _ = _write(tmp_path)
    (out / "train_test_split_2.json").write_text(json.dumps(split))
    with pytest.raises(InputError, match=message) as err:
        load_scene(out)
    assert "train_test_split_2.json" in str(err.value)


def test_missing_folder_and_transforms(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_scene(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="transforms.json"):
        load_scene(tmp_path / "empty")


def test_atomic_directory_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "out") as tmp:
            (tmp / "half.txt").write_text("x")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path):
    out, _, _ = _write(tmp_path)
    with pytest.raises(InputError, match="overwrite"):
        _write(tmp_path)
    _write(tmp_path, overwrite=True)
    assert len(load_scene(out)) == 4


@pytest.mark.parametrize("mode", ["P", "LA", "I;16", "CMYK"])
def test_images_nerfstudio_would_misread_are_written_as_8_bit_png(tmp_path, mode):
    rng = np.random.default_rng(1)
    rgb = Image.fromarray((rng.random((12, 16, 3)) * 255).astype(np.uint8))
    photo = {"P": rgb.convert("P"), "LA": rgb.convert("LA"), "CMYK": rgb.convert("CMYK"),
             "I;16": Image.fromarray((rng.random((12, 16)) * 65535).astype(np.uint16))}[mode]  # fmt: skip
    path = tmp_path / f"photo.{'jpg' if mode == 'CMYK' else 'png'}"
    photo.save(path)
    c2w, intrinsics = _cameras(1)
    scene = load_scene(write_scene(tmp_path / "scene", [path], c2w, intrinsics))
    written = np.array(Image.open(scene.image_paths[0]), dtype=np.uint8)  # as nerfstudio reads it
    assert written.shape == (12, 16, 4 if mode == "LA" else 3)
    np.testing.assert_allclose(written / 255.0, read_rgba(path)[..., : written.shape[2]], atol=0.5 / 255 + 1e-6)
    if mode == "I;16":
        np.testing.assert_allclose(read_rgba(path)[..., 0], np.asarray(photo) / 65535.0, atol=1e-6)  # not clipped


def test_images_nerfstudio_reads_are_copied_unchanged(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.zeros((12, 16), np.uint8)).save(path)
    c2w, intrinsics = _cameras(1)
    scene = load_scene(write_scene(tmp_path / "scene", [path], c2w, intrinsics))
    assert scene.image_paths[0].read_bytes() == path.read_bytes()


def test_sparse_points_of_some_frames_keep_what_those_frames_saw_renumbered():
    from reconfusion.scene import SparsePoints

    xyz = np.arange(12, dtype=np.float64).reshape(4, 3)
    observations = np.array([[0, 0], [1, 0], [2, 1], [3, 2], [1, 3], [3, 3]])  # (frame, point)
    arc = SparsePoints(xyz, observations).of_frames([3, 1])
    np.testing.assert_array_equal(arc.xyz, xyz[[0, 2, 3]])  # point 1 was seen by frame 2 alone: dropped
    assert sorted(map(tuple, arc.observations.tolist())) == [(0, 1), (0, 2), (1, 0), (1, 2)]  # frame 3 -> 0, 1 -> 1
    assert arc.seen_by([0, 1]).tolist() == [2]
