"""The degraded-rendering corpus: planning (splits, copies, resume) and one real fit end to end."""

from __future__ import annotations

import itertools
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

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


def test_the_arc_of_an_orbit_is_the_densest_run_of_views_within_the_angle():
    from reconfusion.novel_views import forward_facing_arc, look_at

    angles = np.radians([0, 10, 20, 90, 100, 180, 270, 340])
    c2w = np.stack([look_at(np.array([np.sin(a), 0.3, np.cos(a)]) * 4, np.zeros(3), np.array([0.0, 1.0, 0.0]))
                    for a in angles])  # fmt: skip
    assert forward_facing_arc(c2w, 15).tolist() == [0, 1, 2]  # around 10 degrees: 0, 10, 20
    assert forward_facing_arc(c2w, 25).tolist() == [0, 1, 2, 7]  # around 0: 340 ... 20
    assert forward_facing_arc(c2w, 1).tolist() == [0]


def test_arcs_of_360_degree_scenes_are_planned_as_forward_facing_scenes_of_their_own(scenes, tmp_path):
    from reconfusion.novel_views import detect_layout
    from reconfusion_benchmark.degrade import source_of

    config = DegradeConfig(scenes=(scenes,), out=tmp_path / "corpus", views=(3,), max_side=16, arc_degrees=40)
    fits = plan_fits(config)
    arcs = [f for f in fits if f.scene.name.endswith("-arc")]
    assert [f.scene.name for f in arcs] == ["scene_00005-arc", "scene_00006-arc"]
    for fit in arcs:
        arc, whole = load_scene(fit.scene), load_scene(fit.scene.parent / fit.scene.name.removesuffix("-arc"))
        frames = json.loads((fit.scene / "transforms.json").read_text())["reconfusion_arc"]["frames"]
        assert detect_layout(arc.c2w) == "forward-facing" and 5 <= len(arc) < len(whole)
        np.testing.assert_allclose(arc.c2w, whole.c2w[frames], atol=1e-6)
        np.testing.assert_allclose(arc.image(0), whole.image(frames[0]), atol=1 / 255)
        assert len(arc.split(3).train_ids) == 3 and len(arc.split(3).test_ids) == len(arc) - 3
        assert source_of(fit.scene) == source_of(whole.root) + ", forward-facing arc"
    assert plan_fits(config) == fits  # made once
    assert plan_fits(replace(config, arcs_only=True)) == arcs
    with pytest.raises(InputError, match="--arc-degrees"):
        plan_fits(replace(config, arc_degrees=60))
    stale = tmp_path / "corpus" / "fits" / "scene_00005-arc" / "3-views"
    stale.mkdir(parents=True)
    write_json(stale / FIT_FILE, {})
    plan_fits(replace(config, arc_degrees=44))
    assert not stale.exists()  # a rewritten arc's old fits are of other frames: they are made again


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


def test_renders_round_trip_whatever_the_sizes(tmp_path):
    from reconfusion.corpus import read_renders

    rgb = np.random.default_rng(0).integers(0, 255, (2, 5, 7, 3), dtype=np.uint8)
    write_renders(stop_file(tmp_path, 10), [4, 9], rgb, np.full((2, 5, 7), 1.5))
    back = read_renders(stop_file(tmp_path, 10))
    assert back["ids"].tolist() == [4, 9] and all(np.array_equal(a, b) for a, b in zip(back["rgb"], rgb))
    assert back["depth"][0].dtype == np.float16
    mixed = [rgb[0], rgb[1].transpose(1, 0, 2)]  # a portrait view among landscape ones (a COLMAP capture)
    write_renders(stop_file(tmp_path, 20), [4, 9], mixed, [np.ones((5, 7)), np.ones((7, 5))])
    back = read_renders(stop_file(tmp_path, 20))
    assert [a.shape for a in back["rgb"]] == [(5, 7, 3), (7, 5, 3)] and back["depth"][1].shape == (7, 5)


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
    left = fit.folder.parent / ".6-views.killed.partial"
    left.mkdir()
    assert run_degrade(replace(config, views=(3, 6)))["fits_finished"] == 2
    assert not left.exists()  # a killed run's half-written fit is cleared before its fit runs again
    assert (fit.folder / FIT_FILE).stat().st_mtime_ns == stamp  # not fitted again


def test_degraded_examples_pair_the_rendering_with_its_photograph_and_the_nearest_training_views(scenes, tmp_path):
    from train_prior.datasets import DegradedDataset, Mixture, MultiviewDataset, WeightedSource

    corpus = fake_corpus(scenes, tmp_path)
    dataset = DegradedDataset(read_corpus(corpus), resolution=16, seed=3)
    item, again = dataset[7], dataset[7]
    assert all(torch.equal(item[k], again[k]) for k in item)  # a function of (seed, index)
    assert item["rendering"].shape == item["target_image"].shape == (3, 16, 16)
    assert item["observed_images"].shape == (3, 3, 16, 16)
    described = dataset.describe(7)
    fit = load_fit(corpus / "fits" / described["scene"] / "3-views")
    assert described["view"] in fit.held_out_ids and described["stop"] in fit.stops
    # the fake renderings are the photographs darkened by half: the crop is shared
    assert float((item["rendering"] - item["target_image"] * 0.5).abs().mean()) < 0.01
    scenes_only = MultiviewDataset([WeightedSource([fit.scene])], resolution=16, synthetic_renderings=True)
    mixed = Mixture([dataset, scenes_only], [1.0, 1.0], seed=0)
    assert {tuple(mixed[i]) == tuple(item) for i in range(8)} == {True}
    assert not torch.equal(scenes_only[0]["rendering"], scenes_only[0]["target_image"])


def test_degraded_examples_carry_the_nearest_views_warped_with_the_stored_depth_and_scene_examples_show_none(scenes, tmp_path):
    from train_prior.datasets import DegradedDataset, Mixture, MultiviewDataset, WeightedSource

    fits = read_corpus(fake_corpus(scenes, tmp_path))
    dataset = DegradedDataset(fits, resolution=16, seed=3, warped_views=2)
    item = dataset[7]
    assert item["warped_images"].shape == (2, 3, 16, 16) and item["warped_valid"].shape == (2, 1, 16, 16)
    assert 0 <= float(item["warped_valid"].min()) and float(item["warped_valid"].max()) <= 1
    plain = DegradedDataset(fits, resolution=16, seed=3)[7]
    assert all(torch.equal(item[k], plain[k]) for k in plain)  # the same example, warps added
    scenes_only = MultiviewDataset([WeightedSource([fits[0].scene])], resolution=16, synthetic_renderings=True,
                                   warped_views=2)  # fmt: skip
    assert not scenes_only[0]["warped_valid"].any()  # no depth to warp with
    mixed = Mixture([dataset, scenes_only], [1.0, 1.0], seed=0)
    batch = torch.utils.data.default_collate([mixed[i] for i in range(6)])
    assert batch["warped_images"].shape == (6, 2, 3, 16, 16)


def test_held_out_scenes_are_never_drawn_and_repair_examples_are_recoloured(scenes, tmp_path):
    from train_prior.__main__ import make_dataset
    from train_prior.config import TrainConfig
    from train_prior.datasets import Recoloured

    corpus = fake_corpus(scenes, tmp_path, arc_degrees=40)
    assert {fit.scene.root.name for fit in read_corpus(corpus)} >= {"scene_00006", "scene_00006-arc"}
    config = TrainConfig(preset="repair", resolution=16, datasets=(f"degraded:{corpus}", f"scenes:{scenes}"),
                         holdout_scenes=("scene_00006",), recolour=False)  # fmt: skip
    dataset = make_dataset(config)
    scene_examples, corpus_examples = dataset.datasets
    assert {corpus_examples.describe(i)["scene"] for i in range(40)} <= {"scene_00005", "scene_00005-arc"}
    from train_prior.monitoring import held_out_corpus_scenes, validation_tags

    assert held_out_corpus_scenes(corpus, ("scene_00006",)) == ("scene_00006", "scene_00006-arc")  # validated on
    tags = validation_tags(replace(config, datasets=(f"degraded:{corpus}", f"degraded:{tmp_path / 'arcs'}")))
    assert tags[corpus] == (f"validation/{corpus.name}/gain_db", f"validation/{corpus.name}/lpips_change")
    assert tags[tmp_path / "arcs"] == ("validation/arcs/gain_db", "validation/arcs/lpips_change")
    reordered = validation_tags(replace(config, datasets=(f"degraded:{tmp_path / 'arcs'}", f"degraded:{corpus}")))
    assert reordered == tags  # a corpus keeps its curve whatever the order of --datasets
    assert [s.root.name for s in scene_examples.sources[0].scenes] == ["scene_00005"]
    assert isinstance(make_dataset(replace(config, recolour=True)), Recoloured)


def test_recolouring_maps_the_channels_of_every_image_of_an_example_alike():
    from train_prior.datasets import Recoloured

    def flat(values, shape=(4, 4)):
        return torch.tensor(values, dtype=torch.float32)[..., None, None].expand(*torch.tensor(values).shape, *shape)

    plain = {"observed_images": flat([[0.1, 0.2, 0.3], [0.3, 0.1, 0.4]]), "target_image": flat([0.2, 0.35, 0.5]),
             "rendering": flat([0.45, 0.25, 0.15]), "warped_images": flat([[0.3, 0.6, 0.2]]),
             "warped_valid": torch.ones(1, 1, 4, 4), "target_c2w": torch.eye(4)}  # fmt: skip
    dataset = Recoloured([plain] * 8, seed=1)
    orders = set()
    for i in range(8):
        item = dataset[i]
        assert torch.equal(item["target_c2w"], plain["target_c2w"]) and item["rendering"].shape == (3, 4, 4)
        assert torch.equal(item["warped_valid"], plain["warped_valid"])  # validity is not a colour
        # the channel map that explains the target must explain the other images with the same gains:
        # out[c] = gain[c] * in[order[c]]
        candidates = [o for o in itertools.permutations(range(3))
                      if all(torch.allclose(item[k][..., c, :, :] / plain[k][..., o[c], :, :],
                                            item["target_image"][c] / plain["target_image"][o[c]], atol=1e-5)
                             for k in ("observed_images", "rendering", "warped_images") for c in range(3))]  # fmt: skip
        assert candidates, "one channel map and one gain per channel for every image of the example"
        gains = item["target_image"][:, 0, 0] / plain["target_image"][list(candidates[0]), 0, 0]
        assert ((gains >= 0.75) & (gains <= 1.25)).all()
        orders.add(candidates[0])
    assert len(orders) > 1  # the map changes from example to example
    assert torch.equal(dataset[3]["target_image"], dataset[3]["target_image"])  # a function of (seed, index)


def fake_corpus(scenes: Path, tmp_path: Path, arc_degrees: float = 0.0) -> Path:
    """A corpus whose 'renderings' are the held-out photographs at half brightness (no NeRF needed)."""
    config = DegradeConfig(scenes=(scenes,), out=tmp_path / "corpus", views=(3,), stops=(5, 10), max_held_out=4,
                           arc_degrees=arc_degrees)  # fmt: skip
    for fit in plan_fits(config):
        scene = load_scene(fit.scene)
        split = scene.split(3)
        photos = np.stack([scene.image(v) for v in split.test_ids])
        for stop in config.stops:
            write_renders(stop_file(fit.folder, stop), split.test_ids, (photos * 0.5 * 255 + 0.5).astype(np.uint8),
                          np.ones(photos.shape[:3]))  # fmt: skip
        write_json(fit.folder / FIT_FILE, {"format": "reconfusion-degraded/1", "scene": "../../../scenes/" + scene.root.name,
                                           "views": 3, "train_ids": list(split.train_ids),
                                           "held_out_ids": list(split.test_ids), "stops": [5, 10], "iterations": 10})  # fmt: skip
    return config.out


def test_restoration_is_scored_against_the_rendering_given(scenes, tmp_path):
    from reconfusion.presets import PriorConfig
    from test_prior import MICRO
    from reconfusion.prior import ReconFusionPrior
    from train_prior.evaluation import evaluate_restoration, restoration_table

    import dataclasses

    torch.manual_seed(0)
    prior = ReconFusionPrior.from_preset("tiny", preset=dataclasses.replace(MICRO, prior=PriorConfig(repairs=True)))
    rows = evaluate_restoration(prior, fake_corpus(scenes, tmp_path), ts=(0.3,), examples=4, batch_size=2,
                                num_steps=2, sheet=tmp_path / "sheet.png")  # fmt: skip
    overall = rows[0]
    assert overall.source == "all" and overall.examples == 4
    assert sum(r.examples for r in rows[1:]) == 4
    assert 5 < overall.rendering_psnr < 12  # half brightness
    # a zero residual gives back the rendering (through the autoencoder): no gain, whatever the noise level
    assert abs(overall.gain_db) < 3.0
    assert overall.restored_psnr == pytest.approx(overall.round_trip_psnr, abs=0.3)
    assert (tmp_path / "sheet.png").is_file() and "| all | 0.3 | 4 |" in restoration_table(rows)
    for row in rows:  # the blends' weights include 0 (the rendering) and 1 (the restored output)
        assert 0 <= row.blend_weight <= 1
        assert row.blended_psnr >= max(row.rendering_psnr, row.target_psnr) - 1e-3
    # a zero residual changes nothing: the residual target is the rendering
    assert overall.target_psnr == pytest.approx(overall.rendering_psnr, abs=0.3)
    plain = evaluate_restoration(ReconFusionPrior.from_preset("tiny", preset=MICRO), tmp_path / "corpus", ts=(0.3,),
                                 examples=2, num_steps=1)  # fmt: skip
    assert plain[0].examples == 2  # a prior that does not repair starts from the rendering, as the sample loss does
    one = evaluate_restoration(prior, tmp_path / "corpus", ts=(0.3,), examples=2, num_steps=1, scenes=("scene_00006",))
    assert {r.source.split(",")[0] for r in one[1:]} == {"scene_00006"}
    before = [p.detach().clone() for p in prior.unet.parameters()]
    adapted = evaluate_restoration(prior, tmp_path / "corpus", ts=(0.3,), examples=3, num_steps=1, adapt_steps=2)
    assert adapted[0].examples == 3 and all(torch.equal(a, b) for a, b in zip(before, prior.unet.parameters()))
    unadapted = evaluate_restoration(prior, tmp_path / "corpus", ts=(0.3,), examples=3, num_steps=1)
    assert unadapted[0].rendering_psnr == adapted[0].rendering_psnr  # the same examples, scored by a changed prior
    assert unadapted[0].restored_psnr != adapted[0].restored_psnr
    with pytest.raises(InputError, match="no finished fit of scene_7; its scenes are: scene_00005 scene_00006"):
        evaluate_restoration(prior, tmp_path / "corpus", ts=(0.3,), examples=1, scenes=("scene_7",))
    warping = ReconFusionPrior.from_preset("tiny", preset=dataclasses.replace(
        MICRO, prior=PriorConfig(repairs=True, warped_views=2)))  # fmt: skip
    given = []
    sample = warping.sample
    warping.sample = lambda *a, **k: given.append("warped_images" in k) or sample(*a, **k)
    evaluate_restoration(warping, tmp_path / "corpus", ts=(0.3,), examples=2, num_steps=1)
    evaluate_restoration(warping, tmp_path / "corpus", ts=(0.3,), examples=2, num_steps=1, without_warps=True)
    assert given == [True, False]


@pytest.mark.slow
def test_the_repair_preset_trains_on_a_corpus_and_scenes_and_lists_both_in_its_manifest(scenes, tmp_path):
    from train_prior.__main__ import run
    from train_prior.config import TrainConfig

    corpus = fake_corpus(scenes, tmp_path)
    config = TrainConfig(preset="repair", resolution=128, datasets=(f"degraded:{corpus}@3", f"scenes:{scenes}"),
                         output_dir=tmp_path / "run", steps=2, batch_size=2, warmup_steps=1, image_every=1,
                         log_every=1, cpu=True)  # fmt: skip
    training = run(config)
    assert training.step == 2 and all(np.isfinite(training.losses))
    prior = training.model.prior
    assert prior.config.repairs and prior.config.max_noise == 0.7
    manifest = json.loads((tmp_path / "run" / "prior" / "manifest.json").read_text())
    assert {(row["format"], row["scene"]) for row in manifest} >= {("degraded", "scene_00005"), ("scenes", "scene_00005")}
    held_out = replace(config, holdout_scenes=("scene_00006",), output_dir=tmp_path / "held-out", steps=1,
                       validate_every=1)  # fmt: skip
    run(held_out)
    manifest = json.loads((tmp_path / "held-out" / "prior" / "manifest.json").read_text())
    assert {row["scene"] for row in manifest} == {"scene_00005"}
    assert (tmp_path / "held-out" / "prior" / "validation.png").is_file()  # scored on the held-out scene's fit
    assert json.loads((tmp_path / "held-out" / "validation_scenes.json").read_text()) == {str(corpus): ["scene_00006"]}
    assert "held-out scenes (scene_00006)" in (tmp_path / "held-out" / "prior" / "README.md").read_text()
    with pytest.raises(SystemExit, match="--holdout-scenes scene_9"):
        run(replace(config, holdout_scenes=("scene_9",)))
    with pytest.raises(SystemExit, match="repair preset"):
        run(TrainConfig(datasets=(f"degraded:{corpus}",), output_dir=tmp_path / "tiny", steps=1, cpu=True))


@pytest.mark.parametrize("change, message", [({"max_held_out": 0}, "--max-held-out 0"), ({"stops": (0, 5)}, "--stops"),
                                             ({"views": (40,)}, "pass fewer --views"), ({"jobs": 0}, "--jobs 0")])  # fmt: skip
def test_settings_that_cannot_work_are_named(scenes, tmp_path, change, message):
    with pytest.raises(InputError, match=message):
        plan_fits(DegradeConfig(scenes=(scenes,), out=tmp_path / "corpus", **change))


def test_the_restoration_evaluation_says_what_is_wrong_in_one_line(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "train_prior.evaluation", str(tmp_path), "--corpus", str(tmp_path)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "error:" in done.stderr


def test_scaling_a_zero_residual_changes_nothing_and_the_table_has_every_scene(scenes, tmp_path):
    import dataclasses
    import importlib.util

    from reconfusion.presets import PriorConfig
    from reconfusion.prior import ReconFusionPrior
    from test_prior import MICRO

    path = Path(__file__).parents[1] / "benchmarks" / "repair_residual_scale.py"
    spec = importlib.util.spec_from_file_location("repair_residual_scale", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    prior = ReconFusionPrior.from_preset("tiny", preset=dataclasses.replace(MICRO, prior=PriorConfig(repairs=True)))
    found = bench.scores_by_scene(prior.eval(), fake_corpus(scenes, tmp_path), examples=3, t=0.4)
    assert len(found["all"]["rendering"]) == 3 and set(found) - {"all"} <= {"scene_00005", "scene_00006"}
    for s in [*bench.SCALES[1:], "< 2 px", "> 4 px"]:  # an untrained repair predicts a zero residual: every
        np.testing.assert_allclose(found["all"][s], found["all"][0.0], atol=1e-3)  # variant is the round trip
    text = bench.table(found)
    assert text.startswith("| scene | examples |") and "| all | 3 |" in text and "| > 4 px |" in text
    round_trip = torch.full((1, 3, 32, 32), 0.5)
    restored = round_trip + 0.2 * (torch.rand(1, 3, 32, 32) - 0.5)
    bands = bench.band_variants(round_trip, restored)
    assert torch.allclose(bands["< 2 px"] + bands["> 2 px"], round_trip + restored, atol=1e-5)  # parts make the whole
    assert bands["< 2 px"].std() < bands["> 2 px"].std()  # white noise is mostly fine detail


def test_the_fusion_study_lays_out_the_warped_views_per_view_and_its_network_starts_as_the_rendering():
    import importlib.util
    from types import SimpleNamespace

    path = Path(__file__).parents[1] / "benchmarks" / "warped_views_fusion.py"
    spec = importlib.util.spec_from_file_location("warped_views_fusion", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    size = 16
    c2w = np.stack([np.eye(4)] * 4)
    c2w[:, 0, 3] = [0.0, 0.5, 1.0, 1.5]
    intrinsics = np.tile([16.0, 16.0, size / 2, size / 2], (4, 1))
    fit = SimpleNamespace(scene=SimpleNamespace(c2w=c2w, intrinsics=intrinsics), train_ids=(3, 1, 2))
    depth = np.full((size, size), np.inf, np.float32)
    depth[:, : size // 2] = 4.0
    images = {v: torch.full((size, size, 3), v / 4) for v in fit.train_ids}
    warps = bench.warped_views(fit, 0, depth, images)
    assert warps.shape == (size, size, 12)
    for k, view in enumerate((1, 2, 3)):  # nearest first: colour, colour, colour, validity of each view in turn
        valid = warps[..., 4 * k + 3].astype(bool)
        assert not valid[:, size // 2 :].any() and valid.any()
        np.testing.assert_allclose(warps[..., 4 * k : 4 * k + 3][valid], view / 4)
    gradient = np.broadcast_to(np.arange(size, dtype=np.float32)[None, :, None] / size, (size, size, 3)).copy()
    model = bench.Fusion(channels=3 + 21)
    example = {"rendering": gradient.astype(np.float16), "warps": warps.astype(np.float16), "photo": gradient}
    np.testing.assert_allclose(bench.restored(model, example, True), gradient, atol=1e-3)  # untrained: the rendering


def test_the_guidance_scale_study_scores_every_prior_at_every_scale_on_the_same_examples(scenes, tmp_path, monkeypatch):
    import dataclasses
    import importlib.util

    from reconfusion.presets import PriorConfig
    from reconfusion.prior import ReconFusionPrior
    from test_prior import MICRO

    path = Path(__file__).parents[1] / "benchmarks" / "guidance_scale.py"
    spec = importlib.util.spec_from_file_location("guidance_scale", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    torch.manual_seed(0)
    prior = ReconFusionPrior.from_preset("tiny", preset=dataclasses.replace(MICRO, prior=PriorConfig(repairs=True)))
    prior.save_pretrained(tmp_path / "prior")
    report = tmp_path / "guidance.md"
    monkeypatch.setattr(sys, "argv", ["guidance_scale.py", str(tmp_path / "prior"), "--corpus", str(fake_corpus(scenes, tmp_path)),
                                      "--scales", "1", "3", "--examples", "2", "--report", str(report)])  # fmt: skip
    bench.main()
    rows = [line for line in report.read_text().splitlines() if line.startswith(f"| `{tmp_path / 'prior'}`")]
    assert [row.split(" | ")[1] for row in rows] == ["1", "3"]
    # an untrained repairing prior changes nothing at any scale: the same examples, the same (zero) gain
    assert rows[0].split(" | ")[2] == rows[1].split(" | ")[2]


def test_the_best_blend_of_a_change_is_found():
    from reconfusion.metrics import psnr
    from train_prior.evaluation import _blend_terms, best_blend

    photo = torch.rand(6, 3, 8, 8)
    rendering = photo + 0.2 * torch.randn(6, 3, 8, 8)
    halfway = photo + 0.5 * (photo - rendering)  # overshoots: half of this change repairs the rendering exactly
    assert best_blend(**_blend_terms(rendering, halfway, photo))[0] == pytest.approx(2 / 3, abs=0.03)
    weight, blended = best_blend(**_blend_terms(rendering, rendering + 0.3 * torch.randn_like(photo), photo))
    assert weight <= 0.1 and blended == pytest.approx(float(psnr(rendering, photo).mean()), abs=0.2)  # noise: none
    assert best_blend(**_blend_terms(rendering, photo, photo)) == pytest.approx((1.0, 120.0))  # clamped MSE
