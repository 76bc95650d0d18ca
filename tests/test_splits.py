"""Split protocols: RegNeRF's LLFF split, the fixed DTU ids, blender test views, farthest-point auto."""

import json

import numpy as np
import pytest

from data_tools.importers import SUBSETS_KEY, import_scene
from data_tools.splits import (
    DTU_TRAIN_IDS,
    auto_split,
    blender_split,
    dtu_split,
    farthest_point_sampling,
    llff_split,
    write_splits,
)
from reconfusion.files import InputError
from reconfusion.scene import load_scene, write_scene

# RegNeRF on fern (20 images): tests 0, 8, 16; the other 17 images are indexed by
# round(linspace(0, 16, N)): N=3 -> 0, 8, 16; N=6 -> 0, 3, 6, 10, 13, 16; N=9 -> 0, 2, ..., 16.
FERN_TRAIN_IDS = {3: (1, 10, 19), 6: (1, 4, 7, 12, 15, 19), 9: (1, 3, 5, 7, 10, 12, 14, 17, 19)}
FERN_TEST_IDS = (0, 8, 16)
# pixelNeRF / RegNeRF DTU test views: range(49) minus the 9 training and the 15 excluded views.
DTU_TEST_IDS = (1, 2, 9, 10, 11, 12, 14, 15, 23, 24, 26, 27, 29, 30, 31, 32, 33, 34, 35, 41, 42, 43, 45, 46, 47)


@pytest.mark.parametrize("views", [3, 6, 9])
def test_llff_split_matches_regnerf_on_fern(views):
    split = llff_split(20, views)
    assert split.train_ids == FERN_TRAIN_IDS[views]
    assert split.test_ids == FERN_TEST_IDS


def test_llff_split_rounds_half_to_even_like_regnerf():
    # 7 images: 6 non-test images, linspace(0, 5, 3) = 0, 2.5, 5 -> Python's round gives 0, 2, 5.
    assert llff_split(7, 3).train_ids == (1, 3, 6)
    with pytest.raises(InputError, match="7 training views requested but only 6 non-test images"):
        llff_split(7, 7)


def test_fern_import_then_llff_splits(shared_data, tmp_path):
    out = import_scene("llff", shared_data / "nerf_llff_data" / "fern", tmp_path / "fern")
    paths = write_splits(out, "llff", [3, 6, 9])
    assert [p.name for p in paths] == [f"train_test_split_{n}.json" for n in (3, 6, 9)]
    for views, path in zip((3, 6, 9), paths):
        payload = json.loads(path.read_text())
        assert payload == {"train_ids": list(FERN_TRAIN_IDS[views]), "test_ids": list(FERN_TEST_IDS), "protocol": "llff"}
    assert load_scene(out).split(6).train_ids == FERN_TRAIN_IDS[6]


def test_dtu_split_fixed_ids():
    for views in (3, 6, 9):
        split = dtu_split(49, views)
        assert split.train_ids == DTU_TRAIN_IDS[:views]
        assert split.test_ids == DTU_TEST_IDS
    assert dtu_split(64, 3).train_ids == (25, 22, 28)
    with pytest.raises(InputError, match="needs the 49 standard views but the scene has 30"):
        dtu_split(30, 3)
    with pytest.raises(InputError, match="10 training views requested but only 9 fixed DTU"):
        dtu_split(49, 10)


def test_farthest_point_sampling():
    line = np.arange(11.0)[:, None]
    assert farthest_point_sampling(line, 3, 0) == [0, 10, 5]
    assert farthest_point_sampling(line, 4, 5) == [5, 0, 10, 2]  # ties go to the lowest index
    with pytest.raises(ValueError):
        farthest_point_sampling(line, 12, 0)


def _circle(n):
    angles = 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(angles), np.sin(angles), np.zeros(n)], axis=-1)


def test_auto_split_spreads_views_and_is_nested():
    centres = _circle(24)
    splits = {n: auto_split(centres, n) for n in (3, 6, 9)}
    for n, split in splits.items():
        assert split.test_ids == (0, 8, 16) and len(split.train_ids) == n
        assert not set(split.train_ids) & set(split.test_ids)
    assert set(splits[3].train_ids) <= set(splits[6].train_ids) <= set(splits[9].train_ids)
    # On a circle of 24 views the greedy sample starts at view 1 (all are equally close to the mean),
    # then takes the opposite view 13, then one of the two views 90 degrees from both (7: lower index).
    assert splits[3].train_ids == (1, 7, 13)
    gaps = np.diff(sorted(splits[9].train_ids) + [sorted(splits[9].train_ids)[0] + 24])
    assert gaps.min() >= 2  # no two neighbouring views among 9 of the 21 candidates
    assert auto_split(centres, 3) == splits[3]  # deterministic


def test_blender_split_uses_dataset_test_frames():
    subsets = ["train"] * 6 + ["val"] * 2 + ["test"] * 4
    centres = np.concatenate([_circle(6), np.zeros((6, 3))])
    split = blender_split(subsets, centres, 2)
    assert split.train_ids == (0, 3)  # the first train view and the one opposite it
    assert split.test_ids == (8, 9, 10, 11)
    with pytest.raises(InputError, match="7 training views requested but only 6 dataset train frames"):
        blender_split(subsets, centres, 7)
    with pytest.raises(InputError, match="no dataset test frames"):
        blender_split(["train"] * 12, centres, 2)


def _scene(tmp_path, n=12, extra=None):
    images = [np.full((4, 6, 3), i / n, np.float32) for i in range(n)]
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, :3, 3] = _circle(n)
    return write_scene(tmp_path / "scene", images, c2w, np.tile([5.0, 5.0, 3.0, 2.0], (n, 1)), extra=extra)


def test_write_splits_blender_reads_the_recorded_subsets(tmp_path):
    subsets = ["train"] * 8 + ["test"] * 4
    scene = _scene(tmp_path, extra={SUBSETS_KEY: subsets})
    write_splits(scene / "transforms.json", "blender", [3])  # the file names its scene, as elsewhere
    assert load_scene(scene).split(3).test_ids == (8, 9, 10, 11)


def test_write_splits_errors(tmp_path):
    scene = _scene(tmp_path)
    with pytest.raises(InputError, match=r"transforms.json: no 'reconfusion_subsets' record.*--protocol auto"):
        write_splits(scene, "blender", [3])
    message = r"scene \(12 images, protocol auto\): 11 training views requested but only 10"
    with pytest.raises(InputError, match=message):
        write_splits(scene, "auto", [3, 11])
    assert not list(scene.glob("train_test_split_*.json"))  # nothing written when one count fails
    with pytest.raises(InputError, match="no view counts"):
        write_splits(scene, "auto", [])
    with pytest.raises(InputError, match="scene folder not found"):
        write_splits(tmp_path / "nowhere", "auto", [3])
    assert [p.name for p in write_splits(scene, "auto", [3, 3])] == ["train_test_split_3.json"]
