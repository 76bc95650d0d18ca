"""``reconfusion fit``: from a scene folder (or photos) to metrics, renders and an orbit video."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from data_tools.synthetic import generate_scenes
from reconfusion.cli import main
from reconfusion.files import write_json
from reconfusion.scene import load_scene
from reconfusion_benchmark.fit import write_orbit_path


def test_orbit_path_circles_the_training_cameras_at_their_distance(tmp_path):
    scene = generate_scenes(tmp_path, num_scenes=1, num_views=16, resolution=32, layout="object-360", seed=4)[0]
    transforms = tmp_path / "dataparser_transforms.json"
    transforms.write_text(json.dumps({"transform": np.eye(4)[:3].tolist(), "scale": 0.5}))
    path = json.loads(write_orbit_path(scene, 3, transforms, tmp_path / "orbit.json", frames=12).read_text())
    poses = np.array([c["camera_to_world"] for c in path["camera_path"]]).reshape(-1, 4, 4)
    assert len(poses) == 12 and (path["render_width"], path["render_height"]) == (32, 32)
    from reconfusion.scene import load_scene

    loaded = load_scene(scene)
    train = 0.5 * loaded.c2w[list(loaded.split(3).train_ids), :3, 3]
    distance = np.linalg.norm(train - train.mean(0), axis=-1).mean()
    assert np.linalg.norm(poses[:, :3, 3] - poses[:, :3, 3].mean(0), axis=-1).min() > 0.5 * distance
    looking = -poses[:, :3, 2]  # each camera looks towards the middle of the orbit
    towards = poses[:, :3, 3].mean(0) - poses[:, :3, 3]
    assert (np.sum(looking * towards, -1) / np.linalg.norm(towards, axis=-1) > 0.9).all()


def test_fit_rejects_a_missing_folder_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", str(tmp_path / "nothing here"), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(tmp_path / "nothing here") in err


def test_fit_never_reuses_the_poses_of_other_photos(tmp_path, capsys):
    scene = generate_scenes(tmp_path / "data", num_scenes=1, num_views=4, resolution=16, layout="object-360", seed=6)[0]
    (tmp_path / "out").mkdir()
    shutil.copytree(scene, tmp_path / "out" / "scene")  # as if `reconfusion fit photos_a/` had posed it
    write_json(tmp_path / "out" / "scene" / "colmap_image_names.json", {"source": str(tmp_path / "photos_a")})
    (tmp_path / "photos_b").mkdir()
    with pytest.raises(SystemExit):
        main(["fit", str(tmp_path / "photos_b"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "photos_a" in err and "--out" in err


@pytest.mark.slow
def test_fit_a_scene_folder_end_to_end(tmp_path):
    scene = generate_scenes(tmp_path / "data", num_scenes=1, num_views=12, resolution=32, layout="object-360", seed=6)[0]
    out = tmp_path / "fit"
    main(["fit", str(scene), "--views", "3", "--out", str(out), "--preset", "cpu", "--iterations", "20",
          "--video-frames", "6", "--max-side", "24"])  # fmt: skip
    metrics = json.loads((out / "eval.json").read_text())["results"]
    assert 0 < metrics["psnr"] < 60
    import av

    with av.open(str(out / "orbit.mp4")) as container:
        frames = [frame for frame in container.decode(video=0)]
    assert len(frames) == 6 and (frames[0].width, frames[0].height) == (24, 24)  # fitted on the 24 px copy
    assert load_scene(out / "scenes" / scene.name).sizes.tolist() == [[24, 24]] * 12
    renders = list((out / "test_renders").glob("*.png"))
    assert renders and all(Image.open(p).height == 24 for p in renders)
