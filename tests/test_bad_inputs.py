"""Bad user input gets an InputError naming the file and the fix, never a traceback, and loses nothing."""

import errno
import json
import tempfile

import numpy as np
import pytest
from PIL import Image

from data_tools.colmap import pose_images
from data_tools.importers import import_scene
from data_tools.splits import write_splits
from reconfusion.cli import main
from reconfusion.files import InputError, atomic_directory, read_json, read_rgba, write_image, write_json
from reconfusion.scene import load_scene, write_scene


def _scene(tmp_path, n=10):
    images = [np.full((6, 8, 3), i / n, np.float32) for i in range(n)]
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, 0, 3] = np.cos(np.arange(n))
    c2w[:, 1, 3] = np.sin(np.arange(n))
    return write_scene(tmp_path / "scene", images, c2w, np.tile([9.0, 9.0, 4.0, 3.0], (n, 1)))


def _edit(scene, fn, name="transforms.json"):
    meta = json.loads((scene / name).read_text())
    meta = fn(meta) or meta
    (scene / name).write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m["frames"].__setitem__(0, 5), "'frames' must be a list of objects"),
        (lambda m: m.update(frames={"a": 1}), "'frames' must be a list of objects"),
        (lambda m: m["frames"][0].update(w="abc"), "must be numbers"),
        (lambda m: m["frames"][0].update(k1="x"), "must be numbers"),
        (lambda m: m["frames"][0].update(fl_x=0.0), r"invalid intrinsics at frames \[0\]"),
        (lambda m: m["frames"][1].update(fl_y=-3.0), r"invalid intrinsics at frames \[1\]"),
    ],
)
def test_bad_transforms_fields(tmp_path, edit, message):
    scene = _scene(tmp_path)
    _edit(scene, edit)
    with pytest.raises(InputError, match=f"transforms.json: .*{message}"):
        load_scene(scene)


def test_write_scene_rejects_infinite_focal(tmp_path):
    with pytest.raises(InputError, match="invalid intrinsics"):
        write_scene(tmp_path / "s", [np.zeros((4, 4, 3), np.float32)], np.eye(4)[None], [[np.inf, 1.0, 2.0, 2.0]])
    assert not (tmp_path / "s").exists()


def test_split_ids_not_a_list(tmp_path):
    scene = _scene(tmp_path)
    (scene / "train_test_split_3.json").write_text('{"train_ids": 5, "test_ids": [0]}')
    with pytest.raises(InputError, match="train_test_split_3.json: train_ids must be a list"):
        load_scene(scene)


def test_write_splits_keeps_other_splits_unless_overwrite(tmp_path):
    scene = _scene(tmp_path)
    released = '{"train_ids": [1, 2, 3], "test_ids": [0]}'
    (scene / "train_test_split_3.json").write_text(released)
    with pytest.raises(InputError, match="train_test_split_3.json: exists with other ids.*--overwrite"):
        write_splits(scene, "auto", [3])
    assert (scene / "train_test_split_3.json").read_text() == released
    (scene / "train_test_split_3.json").write_text('{"train_ids": [1, 2, 30], "test_ids": [0]}')  # out of range
    with pytest.raises(InputError, match="out of range.*data splits .* --views 3 --overwrite"):
        write_splits(scene, "auto", [3])
    write_splits(scene, "auto", [3], overwrite=True)
    write_splits(scene, "auto", [3])  # the same ids again: not a conflict
    assert load_scene(scene).split(3).test_ids == (0, 8)


def test_write_splits_given_transforms_json(tmp_path):
    scene = _scene(tmp_path)
    paths = write_splits(scene / "transforms.json", "auto", [3])
    assert paths[0].parent == scene.resolve() and len(load_scene(scene).split(3).train_ids) == 3


def test_llff_poses_bounds_of_strings(tmp_path):
    (tmp_path / "llff" / "images_8").mkdir(parents=True)
    np.save(tmp_path / "llff" / "poses_bounds.npy", np.full((2, 17), "1.0"))
    with pytest.raises(InputError, match="poses_bounds.npy: holds <U3 values, not numbers"):
        import_scene("llff", tmp_path / "llff", tmp_path / "out")


def _blender(tmp_path, **meta):
    src = tmp_path / "blender"
    write_image(src / "train" / "r_0.png", np.zeros((4, 4, 3), np.float32))
    frames = [{"file_path": "./train/r_0", "transform_matrix": np.eye(4).tolist()}]
    (src / "transforms_train.json").write_text(json.dumps({"camera_angle_x": 0.7, "frames": frames, **meta}))
    return src


@pytest.mark.parametrize(
    "meta, message",
    [
        ({"camera_angle_x": "wide"}, "camera_angle_x 'wide' is not a field of view"),
        ({"camera_angle_x": 0}, "camera_angle_x 0 is not a field of view"),
        ({"camera_angle_y": "x"}, "camera_angle_y 'x' is not a field of view"),
        ({"frames": ["r_0.png"]}, "'frames' must be a list of objects"),
    ],
)
def test_blender_bad_transforms(tmp_path, meta, message):
    with pytest.raises(InputError, match=f"transforms_train.json: {message}"):
        import_scene("blender", _blender(tmp_path, **meta), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_dtu_world_mat_of_strings(tmp_path):
    src = tmp_path / "dtu"
    write_image(src / "image" / "000.png", np.zeros((4, 4, 3), np.float32))
    np.savez(src / "cameras.npz", world_mat_0=np.array("abc"))
    with pytest.raises(InputError, match="cameras.npz: world_mat_0 must hold numbers"):
        import_scene("dtu", src, tmp_path / "out")


def test_output_path_is_or_lies_under_a_file(tmp_path):
    (tmp_path / "afile").write_text("keep me")
    for out, overwrite in ((tmp_path / "afile", True), (tmp_path / "afile" / "sub", False)):
        with pytest.raises(InputError, match="choose another output"):
            with atomic_directory(out, overwrite=overwrite):
                pass
        with pytest.raises(InputError, match="afile is a file, not a folder"):
            pose_images(tmp_path, out, overwrite=overwrite)
    assert (tmp_path / "afile").read_text() == "keep me"


def test_a_folder_we_cannot_write_to_is_named(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    with pytest.raises(InputError, match=f"{tmp_path}: cannot write here \\(Read-only file system\\)"):
        write_json(tmp_path / "split.json", {})
    with pytest.raises(InputError, match=f"{tmp_path}: cannot write here"):
        with atomic_directory(tmp_path / "scene"):
            pass


def test_json_that_is_not_utf8_is_named(tmp_path):
    (tmp_path / "transforms.json").write_text('{"frames": []}', encoding="utf-16")
    with pytest.raises(InputError, match="transforms.json: not UTF-8 text .*save it again as UTF-8"):
        read_json(tmp_path / "transforms.json")


def test_cli_exits_with_the_message(tmp_path, capsys):
    deep = tmp_path.joinpath(*[f"a_rather_long_folder_name_{i}" for i in range(8)])
    deep.mkdir(parents=True)
    scene = _scene(deep)
    _edit(scene, lambda m: m["frames"].__setitem__(0, 5))
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "splits", str(scene)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "'frames' must be a list of objects" in error
    assert error.startswith(f"reconfusion: error: {scene / 'transforms.json'}: ") and error.count("\n") == 1


def test_log_lines_in_a_file_keep_long_paths_whole(tmp_path):
    import subprocess
    import sys

    path = "/".join(f"a_rather_long_folder_name_{i}" for i in range(8))
    code = ("import logging; from reconfusion.cli import log_handler; "
            "logging.basicConfig(level=logging.INFO, handlers=[log_handler()]); "
            f"logging.getLogger('reconfusion').info('wrote %s', {path!r})")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    # not a terminal: one plain line on stdout, however long
    assert f"INFO wrote {path}\n" in done.stdout and done.stdout.count("\n") == 1 and not done.stderr


def test_plugin_errors_are_one_line_under_ns_commands(tmp_path):
    import subprocess
    import sys

    code = ("from nerfstudio_plugin import errors; errors.install(); from reconfusion.files import InputError; "
            f"raise InputError('{tmp_path}/scene: scene folder not found;\\n create it')")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr == f"-c: error: {tmp_path}/scene: scene folder not found; create it\n"
    other = subprocess.run([sys.executable, "-c", "from nerfstudio_plugin import errors; errors.install(); 1 / 0"],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert other.returncode == 1 and "Traceback" in other.stderr  # other errors keep their traceback


def test_an_image_over_pillows_pixel_limit_is_named_with_the_fix(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    write_image(path, np.zeros((40, 40, 3), np.float32))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 40 x 40 is then over twice the limit, as 200 MP is
    with pytest.raises(InputError, match=r"huge.png: too large to read safely .*downscale it"):
        read_rgba(path)


def test_a_run_stopped_by_bad_input_leaves_no_folder(tmp_path):
    from nerfstudio_plugin.trainer import remove_unstarted_run

    out = tmp_path / "outputs"
    run = out / "scene" / "reconfusion-cpu" / "2026-12-07_130724"
    run.mkdir(parents=True)
    (run / "config.yml").write_text("x")
    (out / "other").mkdir()
    remove_unstarted_run(run, out)
    assert sorted(p.name for p in out.iterdir()) == ["other"]  # the run and the folders it left empty are gone
    started = out / "scene" / "reconfusion-cpu" / "2026-12-07_130725"
    (started / "nerfstudio_models").mkdir(parents=True)
    (started / "config.yml").write_text("x")
    remove_unstarted_run(started, out)
    assert (started / "config.yml").is_file()  # a run that got further is kept


def test_the_plugin_silences_only_the_warnings_nobody_can_act_on():
    import subprocess
    import sys

    code = ("import warnings; from nerfstudio_plugin import errors; errors.install(); "
            "warnings.warn('`torch.cuda.amp.GradScaler(args...)` is deprecated', FutureWarning); "
            "warnings.warn('This DataLoader will create 4 worker processes in total.', UserWarning); "
            "warnings.warn('something else', UserWarning)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "something else" in done.stderr and "GradScaler" not in done.stderr and "DataLoader" not in done.stderr


def test_images_are_found_whatever_the_case_of_their_suffix(tmp_path):
    from data_tools.import_common import list_images

    for name in ("b.Jpg", "a.PNG", "c.jpeg", "._d.JPG", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "folder.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.PNG", "b.Jpg", "c.jpeg"]
