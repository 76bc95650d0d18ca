"""The degraded-rendering corpus: planning (splits, copies, resume) and one real fit end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data_tools.synthetic import generate_scenes
from reconfusion.corpus import FIT_FILE, load_fit, read_corpus, stop_file, write_renders
from reconfusion.files import InputError, write_json
from reconfusion.scene import load_scene
from reconfusion_benchmark.degrade import DegradeConfig, corpus_split, find_scenes, plan_fits, run_degrade


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scenes")
    generate_scenes(root, num_scenes=2, num_views=12, resolution=24, layout="object-360", seed=5)
    return root


def test_corpus_split_keeps_the_scenes_own_training_views_and_holds_out_the_rest(scenes):
    scene = load_scene(scenes / "scene_00005")
    own = scene.splits[3]
    split = corpus_split(scene, 3, max_held_out=100)
    assert split.train_ids == own.train_ids
    assert sorted(split.train_ids + split.test_ids) == list(range(len(scene)))
    assert 2 <= len(corpus_split(scene, 3, max_held_out=4).test_ids) <= 4
    assert len(corpus_split(scene, 5, max_held_out=100).train_ids) == 5  # no split for 5: farthest points


def test_plan_copies_scenes_view_count_first_and_skips_counts_a_scene_cannot_hold(scenes, tmp_path):
    config = DegradeConfig(scenes=(scenes,), out=tmp_path / "corpus", views=(3, 11), max_side=16)
    fits = plan_fits(config)
    assert [(f.scene.name, f.views) for f in fits] == [("scene_00005", 3), ("scene_00006", 3)]
    copy = load_scene(fits[0].scene)
    assert copy.sizes.max() == 16 and sorted(copy.splits) == [3]
    assert not any(f.done for f in fits)
    (fits[0].folder).mkdir(parents=True)
    write_json(fits[0].folder / FIT_FILE, {})
    assert [f.done for f in plan_fits(config)] == [True, False]  # a finished fit is skipped on the next run


def test_two_scenes_with_one_name_are_refused(scenes, tmp_path):
    twin = tmp_path / "elsewhere" / "scene_00005"
    twin.parent.mkdir()
    import shutil

    shutil.copytree(scenes / "scene_00005", twin)
    with pytest.raises(InputError, match="two scenes named 'scene_00005'"):
        find_scenes((scenes, twin.parent))


def test_a_corpus_without_fits_says_how_to_make_one(tmp_path):
    with pytest.raises(InputError, match="reconfusion data degrade"):
        read_corpus(tmp_path)


def test_renders_round_trip(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (2, 5, 7, 3), dtype=np.uint8)
    write_renders(stop_file(tmp_path, 10), [4, 9], rgb, np.full((2, 5, 7), 1.5))
    with np.load(stop_file(tmp_path, 10)) as data:
        assert data["ids"].tolist() == [4, 9] and np.array_equal(data["rgb"], rgb)
        assert data["depth"].dtype == np.float16


@pytest.mark.slow
def test_degrade_fits_renders_every_held_out_view_at_every_stop_and_resumes(scenes, tmp_path):
    config = DegradeConfig(scenes=(scenes / "scene_00005",), out=tmp_path / "corpus", views=(3,), stops=(4, 8),
                           max_held_out=3, jobs=1)  # fmt: skip
    summary = run_degrade(config)
    assert summary["fits_finished"] == 1 and summary["examples"] == 3 * 2
    fit = load_fit(config.out / "fits" / "scene_00005" / "3-views")
    assert fit.stops == (4, 8) and len(fit.held_out_ids) == 3
    assert not set(fit.held_out_ids) & set(fit.train_ids)
    rgb, depth = fit.rendering(8, fit.held_out_ids[0])
    photo = fit.scene.image(fit.held_out_ids[0])
    assert rgb.shape == photo.shape and depth.shape == photo.shape[:2]
    assert np.isfinite(depth).all() and depth.max() > 0
    meta = json.loads((fit.folder / FIT_FILE).read_text())
    assert meta["psnr_at_stop"]["8"] > 10
    stamp = (fit.folder / FIT_FILE).stat().st_mtime_ns
    assert run_degrade(config)["fits_finished"] == 1
    assert (fit.folder / FIT_FILE).stat().st_mtime_ns == stamp  # not fitted again
