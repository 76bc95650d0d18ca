"""Benchmark importers: llff, blender, nerfstudio / instant-ngp, released reconfusion splits, dtu."""

import json
import logging
import shutil

import numpy as np
import pytest
from PIL import Image

from data_tools.dtu import decompose_projection
from data_tools.importers import BOUNDS_KEY, SUBSETS_KEY, import_scene
from data_tools.splits import write_splits
from reconfusion.cameras import focal_from_fov, opencv_to_opengl, opengl_to_llff
from reconfusion.files import InputError, read_image, write_image
from reconfusion.scene import load_scene


def _rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _images(folder, names, width=40, height=30, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        write_image(folder / name, rng.random((height, width, 3)).astype(np.float32))


def _no_leftovers(parent):
    return not any(p.name.endswith((".partial", ".old")) for p in parent.iterdir())


# ---------------------------------------------------------------------------------------------- llff


@pytest.fixture
def llff_src(tmp_path):
    """5 views, full resolution 80x60 with focal 70, images_2/ at 40x30."""
    rng = np.random.default_rng(0)
    poses = np.zeros((5, 3, 5))
    for i in range(5):
        poses[i, :, :3], poses[i, :, 3] = _rotation(rng), rng.normal(size=3)
        poses[i, :, 4] = [60.0, 80.0, 70.0]
    bounds = np.stack([np.linspace(1, 2, 5), np.linspace(10, 20, 5)], axis=-1)
    src = tmp_path / "llff"
    src.mkdir()
    np.save(src / "poses_bounds.npy", np.concatenate([poses.reshape(5, 15), bounds], axis=1))
    _images(src / "images_2", [f"img{i:02d}.png" for i in range(5)])
    return src, poses, bounds


def test_llff_fixture_round_trip(llff_src, tmp_path):
    src, poses, bounds = llff_src
    out = import_scene("llff", src, tmp_path / "out", downscale=2)
    scene = load_scene(out)
    assert len(scene) == 5 and scene.sizes.tolist() == [[40, 30]] * 5
    np.testing.assert_array_equal(opengl_to_llff(scene.c2w), poses[:, :, :4])
    np.testing.assert_allclose(scene.intrinsics, [[35.0, 35.0, 20.0, 15.0]] * 5)
    meta = json.loads((out / "transforms.json").read_text())
    np.testing.assert_array_equal(meta[BOUNDS_KEY], bounds)
    assert meta["reconfusion_import"]["format"] == "llff"
    np.testing.assert_allclose(scene.image(2), read_image(src / "images_2" / "img02.png"))


def test_llff_masks_become_alpha(llff_src, tmp_path):
    src, _, _ = llff_src
    masks = src / "masks_2"
    masks.mkdir()
    for i in range(5):  # other names than the images': they pair in sorted order
        mask = np.zeros((30, 40, 3), np.float32)
        mask[5:20, 10 + i : 30] = 1.0
        write_image(masks / f"img{i:02d}_mask.png", mask)
    scene = load_scene(import_scene("llff", src, tmp_path / "out", downscale=2))
    assert scene.has_alpha and scene.background == (1.0, 1.0, 1.0)
    rgba = scene.rgba(3)
    assert rgba[10, 20, 3] == 1.0 and rgba[25, 20, 3] == 0.0 and rgba[10, 12, 3] == 0.0
    np.testing.assert_allclose(rgba[..., :3], read_image(src / "images_2" / "img03.png"), atol=1 / 255)
    rgba = np.ones((30, 40, 4), np.float32)  # a mask kept in the alpha channel, over constant colour
    rgba[..., 3] = 0.0
    rgba[:10, :, 3] = 1.0
    write_image(masks / "img04_mask.png", rgba)
    assert load_scene(import_scene("llff", src, tmp_path / "alpha", downscale=2)).rgba(4)[:, 5, 3].tolist() == [1.0] * 10 + [0.0] * 20
    (masks / "img04_mask.png").unlink()
    with pytest.raises(InputError, match=r"masks_2: 4 masks for 5 images"):
        import_scene("llff", src, tmp_path / "out2", downscale=2)
    write_image(masks / "img04_mask.png", np.ones((10, 10, 3), np.float32))
    with pytest.raises(InputError, match=r"img04_mask.png: mask size differs"):
        import_scene("llff", src, tmp_path / "out2", downscale=2)


def test_llff_fern(shared_data, tmp_path):
    src = shared_data / "nerf_llff_data" / "fern"
    out = import_scene("llff", src, tmp_path / "fern")
    scene = load_scene(out)
    assert len(scene) == 20
    assert scene.sizes.tolist() == [[504, 378]] * 20
    array = np.load(src / "poses_bounds.npy")
    poses = array[:, :15].reshape(-1, 3, 5)
    np.testing.assert_allclose(opengl_to_llff(scene.c2w), poses[:, :, :4], atol=1e-12)
    np.testing.assert_allclose(scene.intrinsics[:, 0], poses[:, 2, 4] * 504 / poses[:, 1, 4])
    np.testing.assert_allclose(scene.intrinsics[:, 2:], [[252.0, 189.0]] * 20)
    assert json.loads((out / "transforms.json").read_text())[BOUNDS_KEY] == array[:, 15:].tolist()


def test_llff_bad_inputs(llff_src, tmp_path):
    src, poses, bounds = llff_src
    out = tmp_path / "out"
    with pytest.raises(InputError, match="missing_folder: source folder not found"):
        import_scene("llff", tmp_path / "missing_folder", out)
    (src / "images_4").mkdir()  # empty: not offered
    with pytest.raises(InputError, match=r"images_8: image folder not found; folders present: images_2/ \(--downscale 2\): "):
        import_scene("llff", src, out)
    (src / "images_4").rmdir()
    (src / "images_2" / "img04.png").unlink()
    with pytest.raises(InputError, match=r"images_2: 4 images but .*poses_bounds.npy has 5 pose rows"):
        import_scene("llff", src, out, downscale=2)
    (src / "images_2" / "img04.png").write_bytes(b"not a png at all")
    with pytest.raises(InputError, match=r"img04.png: image does not decode"):
        import_scene("llff", src, out, downscale=2)
    _images(src / "images_2", ["img04.png"])
    array = np.load(src / "poses_bounds.npy")
    array[3, 3] = np.inf
    np.save(src / "poses_bounds.npy", array)
    with pytest.raises(InputError, match=r"poses_bounds.npy: non-finite poses or bounds in rows \[3\]"):
        import_scene("llff", src, out, downscale=2)
    array[3, 3] = 0.0
    array[1, [0, 5, 10]] *= -1  # mirror one rotation column
    np.save(src / "poses_bounds.npy", array)
    with pytest.raises(InputError, match=r"poses_bounds.npy: degenerate camera poses at frames \[1\]"):
        import_scene("llff", src, out, downscale=2)
    (src / "poses_bounds.npy").unlink()
    with pytest.raises(InputError, match="poses_bounds.npy: missing"):
        import_scene("llff", src, out, downscale=2)
    assert not out.exists() and _no_leftovers(tmp_path)


def test_output_folder_rules(llff_src, tmp_path):
    src = llff_src[0]
    out = import_scene("llff", src, tmp_path / "out", downscale=2)
    with pytest.raises(InputError, match="exists and is not empty.*--overwrite"):
        import_scene("llff", src, out, downscale=2)
    import_scene("llff", src, out, downscale=2, overwrite=True)
    with pytest.raises(InputError, match="must not contain or lie inside the source"):
        import_scene("llff", src, src / "inside", downscale=2)
    assert len(load_scene(out)) == 5 and _no_leftovers(tmp_path)


# ------------------------------------------------------------------------------------------- blender


def _blender_src(tmp_path, subsets=(("train", 3), ("test", 2))):
    """Half-transparent RGBA frames of colour (0.8, 0.2, 0.4) and alpha 0.5, no val subset."""
    rng = np.random.default_rng(1)
    src = tmp_path / "blender"
    matrices = {}
    for name, count in subsets:
        (src / name).mkdir(parents=True)
        frames = []
        for i in range(count):
            c2w = np.eye(4)
            c2w[:3, :3], c2w[:3, 3] = _rotation(rng), rng.normal(size=3) * 4
            rgba = np.zeros((16, 24, 4), np.uint8)
            rgba[...] = [204, 51, 102, 128]
            Image.fromarray(rgba, "RGBA").save(src / name / f"r_{i}.png")
            frames.append({"file_path": f"./{name}/r_{i}", "rotation": 0.1, "transform_matrix": c2w.tolist()})
        matrices[name] = [f["transform_matrix"] for f in frames]
        (src / f"transforms_{name}.json").write_text(json.dumps({"camera_angle_x": 0.7, "frames": frames}))
    return src, matrices


@pytest.mark.parametrize("background, value", [("white", 1.0), ("black", 0.0)])
def test_blender_fixture(tmp_path, background, value):
    src, matrices = _blender_src(tmp_path)
    out = import_scene("blender", src, tmp_path / "out", background=background)
    scene = load_scene(out)
    assert len(scene) == 5
    np.testing.assert_array_equal(scene.c2w, np.array(matrices["train"] + matrices["test"]))
    np.testing.assert_allclose(scene.intrinsics, [[focal_from_fov(0.7, 24), focal_from_fov(0.7, 24), 12, 8]] * 5)
    alpha = 128 / 255
    expected = np.array([204, 51, 102]) / 255 * alpha + value * (1 - alpha)
    np.testing.assert_allclose(scene.image(4)[3, 5], expected, atol=1 / 255)
    assert scene.has_alpha and scene.background == (value,) * 3  # alpha kept, background declared
    assert scene.rgba(4)[3, 5, 3] == pytest.approx(alpha)
    meta = json.loads((out / "transforms.json").read_text())
    assert meta[SUBSETS_KEY] == ["train"] * 3 + ["test"] * 2


def test_blender_bad_inputs(tmp_path):
    src, _ = _blender_src(tmp_path)
    (src / "test" / "r_1.png").unlink()
    with pytest.raises(InputError, match=r"transforms_test.json: image './test/r_1' not found"):
        import_scene("blender", src, tmp_path / "out")
    for name in ("train", "test"):
        (src / f"transforms_{name}.json").unlink()
    with pytest.raises(InputError, match="no transforms_train/val/test.json"):
        import_scene("blender", src, tmp_path / "out")


def test_lego_keeps_its_test_views(shared_data, tmp_path):
    src = shared_data / "nerf_synthetic" / "lego"
    out = import_scene("blender", src, tmp_path / "lego")
    scene = load_scene(out)
    original = [json.loads((src / f"transforms_{s}.json").read_text())["frames"] for s in ("train", "test")]
    assert len(scene) == len(original[0]) + len(original[1]) == 300
    np.testing.assert_array_equal(scene.c2w, [f["transform_matrix"] for f in original[0] + original[1]])
    assert scene.sizes.tolist() == [[400, 400]] * 300
    write_splits(out, "blender", [3, 9])
    for views in (3, 9):
        split = load_scene(out).split(views)
        assert split.test_ids == tuple(range(100, 300))
        assert len(split.train_ids) == views and max(split.train_ids) < 100


# ----------------------------------------------------------------------------------------------- dtu


def _dtu_src(tmp_path, count=4):
    """Known cameras in an 'original' world; scale_mat maps the normalised world onto it (IDR)."""
    rng = np.random.default_rng(2)
    scale_mat = np.diag([300.0, 300.0, 300.0, 1.0])
    scale_mat[:3, 3] = [10.0, -20.0, 600.0]
    cameras, expected_k, expected_c2w = {}, [], []
    for i in range(count):
        k = np.array([[50.0 + i, 0.0, 20.5], [0.0, 52.0, 14.0 + i], [0.0, 0.0, 1.0]])
        rotation, centre = _rotation(rng), scale_mat[:3, 3] + rng.normal(size=3) * 500
        w2c = np.hstack([rotation, -rotation @ centre[:, None]])
        world_mat = np.vstack([(-3.0 if i % 2 else 0.01) * k @ w2c, [0, 0, 0, 1]])  # any scale, sign too
        cameras[f"world_mat_{i}"], cameras[f"scale_mat_{i}"] = world_mat, scale_mat
        c2w_cv = np.eye(4)
        c2w_cv[:3, :3], c2w_cv[:3, 3] = rotation.T, (centre - scale_mat[:3, 3]) / 300.0
        expected_k.append([k[0, 0], k[1, 1], k[0, 2], k[1, 2]])
        expected_c2w.append(opencv_to_opengl(c2w_cv))
    src = tmp_path / "dtu"
    _images(src / "image", [f"{i:06d}.png" for i in range(count)])
    np.savez(src / "cameras.npz", **cameras)
    return src, np.array(expected_k), np.array(expected_c2w)


def test_dtu_round_trip(tmp_path):
    src, expected_k, expected_c2w = _dtu_src(tmp_path)
    scene = load_scene(import_scene("dtu", src, tmp_path / "out"))
    assert len(scene) == 4 and scene.sizes.tolist() == [[40, 30]] * 4
    np.testing.assert_allclose(scene.intrinsics, expected_k, atol=1e-8)
    np.testing.assert_allclose(scene.c2w, expected_c2w, atol=1e-9)


def test_dtu_masks_become_alpha(tmp_path):
    src, _, _ = _dtu_src(tmp_path)
    (src / "mask").mkdir()
    for i in range(4):
        mask = np.zeros((30, 40, 3), np.uint8)
        mask[5 + i : 20, 10:30] = 255
        write_image(src / "mask" / f"{i:03d}.png", mask)
    scene = load_scene(import_scene("dtu", src, tmp_path / "out"))
    assert scene.has_alpha and scene.background == (1.0, 1.0, 1.0)
    alpha = scene.rgba(2)[..., 3]
    assert alpha[7:20, 10:30].min() == 1.0 and alpha[:7].max() == 0.0 and alpha[:, :10].max() == 0.0
    np.testing.assert_allclose(scene.rgba(2)[..., :3], read_image(src / "image" / "000002.png"))
    (src / "mask" / "003.png").unlink()
    with pytest.raises(InputError, match="3 masks for 4 images"):
        import_scene("dtu", src, tmp_path / "out2")


@pytest.mark.parametrize("scan", ["scan24", "scan37"])
def test_shared_dtu_scans(shared_data, tmp_path, scan):
    src = shared_data / "dtu" / scan
    out = import_scene("dtu", src, tmp_path / scan)
    write_splits(out, "dtu", [3, 6, 9])
    scene = load_scene(out)
    assert len(scene) == 49 and scene.sizes.tolist() == [[400, 300]] * 49 and scene.has_alpha
    assert scene.split(3).train_ids == (25, 22, 28) and scene.split(9).train_ids == (25, 22, 28, 40, 44, 48, 0, 8, 13)
    excluded = set(range(3, 8)) | set(range(16, 22)) | set(range(36, 40))
    assert set(scene.split(3).test_ids) == set(range(49)) - excluded - {25, 22, 28, 40, 44, 48, 0, 8, 13}
    for index in (0, 25, 48):  # masks aligned with images: the source's whitened pixels lie outside the mask
        rgba = scene.rgba(index)
        white, inside = rgba[..., :3].min(-1) > 0.98, rgba[..., 3] > 0.5
        assert (white & ~inside).sum() > 0.85 * white.sum() and (white & inside).sum() < 0.1 * inside.sum()
        assert 0.02 < inside.mean() < 0.9


def test_shared_juicebox_capture(shared_data, tmp_path):
    out = import_scene("llff", shared_data / "captures" / "juicebox", tmp_path / "juicebox", downscale=4)
    write_splits(out, "auto", [3, 6, 9])
    scene = load_scene(out)
    assert len(scene) == 64 and scene.sizes.tolist() == [[480, 270]] * 64 and not scene.has_alpha
    assert scene.bounds is not None and scene.bounds.shape == (64, 2) and np.all(scene.bounds[:, 0] < scene.bounds[:, 1])
    for views in (3, 6, 9):
        split = scene.split(views)
        assert len(split.train_ids) == views and not set(split.train_ids) & set(split.test_ids)
        assert split.test_ids == tuple(range(0, 64, 8))  # every 8th image tests


def test_decompose_projection_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(3)
    k = np.array([[800.0, 0.5, 300.0], [0.0, 780.0, 200.0], [0.0, 0.0, 1.0]])
    rotation, t = _rotation(rng), rng.normal(size=3)
    projection = 2.0 * k @ np.hstack([rotation, t[:, None]])
    ours_k, c2w = decompose_projection(projection)
    cv_k, cv_r, cv_c = cv2.decomposeProjectionMatrix(projection)[:3]
    np.testing.assert_allclose(ours_k, cv_k / cv_k[2, 2], atol=1e-8)
    np.testing.assert_allclose(c2w[:3, :3], cv_r.T, atol=1e-10)
    np.testing.assert_allclose(c2w[:3, 3], (cv_c[:3] / cv_c[3])[:, 0], atol=1e-9)
    with pytest.raises(ValueError, match="singular"):
        decompose_projection(np.zeros((3, 4)))


def test_dtu_bad_inputs(tmp_path):
    src, _, _ = _dtu_src(tmp_path)
    cameras = dict(np.load(src / "cameras.npz"))
    del cameras["world_mat_3"]
    np.savez(src / "cameras.npz", **cameras)
    with pytest.raises(InputError, match=r"cameras.npz: holds 3 world_mat_i but the image folder has 4 images"):
        import_scene("dtu", src, tmp_path / "out")
    cameras["world_mat_3"] = np.full((4, 4), np.nan)
    np.savez(src / "cameras.npz", **cameras)
    with pytest.raises(InputError, match="cameras.npz: world_mat_3 is not finite"):
        import_scene("dtu", src, tmp_path / "out")
    (src / "cameras.npz").unlink()
    with pytest.raises(InputError, match="cameras.npz: missing"):
        import_scene("dtu", src, tmp_path / "out")


# -------------------------------------------------------------------------------- nerfstudio, reconfusion


def _ngp_src(tmp_path):
    """instant-ngp style: camera_angle_x only, file paths without extension, one absolute, unsorted."""
    rng = np.random.default_rng(4)
    src = tmp_path / "ngp"
    _images(src / "images", [f"{i:04d}.jpg" for i in range(4)], width=32, height=24)
    frames = []
    for i in (2, 0, 3, 1):
        c2w = np.eye(4)
        c2w[:3, :3], c2w[:3, 3] = _rotation(rng), rng.normal(size=3)
        path = str(src / "images" / f"{i:04d}") if i == 3 else f"./images/{i:04d}"
        frames.append({"file_path": path, "transform_matrix": c2w.tolist(), "sharpness": 30.0})
    meta = {"camera_angle_x": 0.9, "aabb_scale": 4, "frames": frames, "test_filenames": ["images/0002.jpg"]}
    (src / "transforms.json").write_text(json.dumps(meta))
    (src / "train_test_split_2.json").write_text(json.dumps({"train_ids": [0, 3], "test_ids": [1]}))
    by_index = {int(f["file_path"][-4:]): f["transform_matrix"] for f in frames}
    return src, np.array([by_index[i] for i in range(4)])


def test_nerfstudio_instant_ngp_fixture(tmp_path):
    src, c2w = _ngp_src(tmp_path)
    out = import_scene("nerfstudio", src, tmp_path / "out")
    scene = load_scene(out)
    assert len(scene) == 4 and scene.sizes.tolist() == [[32, 24]] * 4
    np.testing.assert_array_equal(scene.c2w, c2w)
    focal = focal_from_fov(0.9, 32)
    np.testing.assert_allclose(scene.intrinsics, [[focal, focal, 16, 12]] * 4)
    assert scene.split(2).train_ids == (0, 3) and scene.split(2).test_ids == (1,)
    assert (out / "images" / "frame_00003.jpg").read_bytes() == (src / "images" / "0003.jpg").read_bytes()
    meta = json.loads((out / "transforms.json").read_text())
    assert meta[SUBSETS_KEY] == ["train", "train", "test", "train"]  # no train_filenames: the rest train


def test_nerfstudio_mask_paths_are_dropped_with_a_warning(tmp_path, caplog):
    src, _ = _ngp_src(tmp_path)
    meta = json.loads((src / "transforms.json").read_text())
    meta["frames"][0]["mask_path"] = "masks/0002.png"
    (src / "transforms.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="reconfusion"):
        out = import_scene("nerfstudio", src, tmp_path / "out")
    assert "transforms.json: mask_path dropped" in caplog.text
    assert all("mask_path" not in f for f in json.loads((out / "transforms.json").read_text())["frames"])


def test_nerfstudio_bad_inputs(tmp_path):
    src, _ = _ngp_src(tmp_path)
    meta = json.loads((src / "transforms.json").read_text())
    meta["frames"][1]["transform_matrix"][0][3] = float("nan")
    (src / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"transforms.json: non-finite camera poses"):
        import_scene("nerfstudio", src, tmp_path / "out")
    meta["frames"][1]["transform_matrix"][0][3] = 0.0
    meta["camera_model"] = "OPENCV_FISHEYE"
    (src / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="OPENCV_FISHEYE is not supported.*undistort"):
        import_scene("nerfstudio", src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _reconfusion_src(tmp_path, train_ids, test_ids):
    src = tmp_path / "released"
    _images(src / "images", [f"{i:03d}.png" for i in range(5)])
    frames = [{"file_path": f"images/{i:03d}.png", "transform_matrix": np.eye(4).tolist()} for i in range(5)]
    meta = {"fl_x": 30.0, "fl_y": 30.0, "cx": 20.0, "cy": 15.0, "w": 40, "h": 30, "frames": frames}
    (src / "transforms.json").write_text(json.dumps(meta))
    (src / "train_test_split_2.json").write_text(json.dumps({"train_ids": train_ids, "test_ids": test_ids}))
    return src


def test_reconfusion_copies_a_valid_folder_unchanged(tmp_path):
    src = _reconfusion_src(tmp_path, [0, 2], [1, 3, 4])
    out = import_scene("reconfusion", src, tmp_path / "out")
    for path in src.rglob("*"):
        if path.is_file():
            assert (out / path.relative_to(src)).read_bytes() == path.read_bytes()
    assert load_scene(out).split(2).test_ids == (1, 3, 4)


@pytest.mark.parametrize(
    "train_ids, test_ids, message",
    [
        ([0, 7], [1], r"train_test_split_2.json: train_ids \[7\] out of range for 5 images"),
        ([0, 2], [2, 3], r"train_test_split_2.json: ids \[2\] are in both train_ids and test_ids"),
    ],
)
def test_reconfusion_rejects_bad_split_ids(tmp_path, train_ids, test_ids, message):
    src = _reconfusion_src(tmp_path, train_ids, test_ids)
    with pytest.raises(InputError, match=message):
        import_scene("reconfusion", src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_reconfusion_needs_split_files(tmp_path):
    src = _reconfusion_src(tmp_path, [0], [1])
    (src / "train_test_split_2.json").unlink()
    with pytest.raises(InputError, match="no train_test_split_N.json"):
        import_scene("reconfusion", src, tmp_path / "out")
    shutil.rmtree(src / "images")
    with pytest.raises(InputError, match="listed images are missing"):
        import_scene("reconfusion", src, tmp_path / "out")


# ------------------------------------------------------------------------------------------- strecha


def _strecha_camera(path, c2w_opencv, k, size):
    rows = [k[0], k[1], k[2], [0, 0, 0], *c2w_opencv[:3, :3], c2w_opencv[:3, 3], size]
    path.write_text("".join(" ".join(repr(float(v)) for v in row) + "\n" for row in rows))


def test_strecha_cameras_project_like_openmvg(tmp_path):
    rng = np.random.default_rng(3)
    src = tmp_path / "strecha"
    (src / "cameras").mkdir(parents=True)
    k = np.array([[60.0, 0.0, 40.5], [0.0, 61.0, 30.25], [0.0, 0.0, 1.0]])
    poses = []
    for i in range(3):
        c2w = np.eye(4)
        c2w[:3, :3], c2w[:3, 3] = _rotation(rng), rng.normal(size=3)
        poses.append(c2w)
        _strecha_camera(src / "cameras" / f"{i:04d}.jpg.camera", c2w, k, (160, 120))  # cameras for 2x larger photos
    _images(src / "images", [f"{i:04d}.jpg" for i in range(3)], width=80, height=60)
    scene = load_scene(import_scene("strecha", src, tmp_path / "out"))
    point = rng.normal(size=3) + poses[1][:3, 3] + 3 * poses[1][:3, 2]  # in front of camera 1
    expected = k @ poses[1][:3, :3].T @ (point - poses[1][:3, 3])  # x ~ K R^T (X - C), at 160x120
    local = np.linalg.inv(scene.c2w[1]) @ np.append(point, 1.0)  # OpenGL camera: x right, y up, z back
    fx, fy, cx, cy = scene.intrinsics[1]
    pixel = [cx + fx * local[0] / -local[2], cy - fy * local[1] / -local[2]]
    np.testing.assert_allclose(pixel, expected[:2] / expected[2] / 2.0, atol=1e-6)
    (src / "cameras" / "0002.jpg.camera").unlink()
    with pytest.raises(InputError, match=r"0002.jpg.camera: camera file missing"):
        import_scene("strecha", src, tmp_path / "out2")
