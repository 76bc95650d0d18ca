"""reconfusion benchmark: run planning, shards and merge, resuming, the report, scene copies, the CLI,
and (slow) one real ns-train + ns-eval benchmark on a tiny procedural scene."""

import csv
import json
import shlex
import shutil
import subprocess
import sys
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tyro
from PIL import Image

from reconfusion_benchmark import runner as benchmark_runner
from reconfusion_benchmark.runs import (
    DEFAULT_SEED,
    METHODS,
    BenchmarkConfig,
    Run,
    RunResult,
    command_line,
    parse_shard,
    plan_runs,
    shard_runs,
)
from reconfusion_benchmark.sweep import run_benchmark
from reconfusion.cli import Benchmark, Command, Demo
from reconfusion.files import InputError

SCENES = (Path("data/scene_a"), Path("data/scene_b"), Path("data/scene_c"))


def fake_fit(calls: list | None = None, fail: set | None = None):
    """A fit that writes deterministic metrics and renders: the benchmark's plumbing without nerfstudio."""

    def fit(run: Run, config: BenchmarkConfig, settings: dict) -> RunResult:
        other_seed = () if run.seed == DEFAULT_SEED else (run.seed,)
        if calls is not None:
            calls.append((run.name, run.views, run.method, *other_seed))
        if fail and (run.name, run.views, run.method) in fail:
            raise benchmark_runner.RunFailed(f"{run.folder(config.out)}: ns-train exited with 1")
        seed = zlib.crc32("/".join(map(str, (run.name, run.views, run.method, *other_seed))).encode())
        bonus = 2.0 if run.method != "baseline" else 0.0
        renders = run.folder(config.out) / "renders"
        renders.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        for i in range(2):
            pair = (rng.random((8, 16, 3)) * 255).astype(np.uint8)
            Image.fromarray(pair).save(renders / f"eval_img_{i:04d}.png")
        return RunResult(
            scene=run.name, group="procedural object-360" if run.name != "scene_c" else "llff", views=run.views,
            method=run.method, psnr=15.0 + run.views + bonus + (seed % 100) / 100, ssim=0.5, lpips=0.3 - bonus / 20,
            lpips_backend="stlpips-alex-shift-tolerant", fit_seconds=10.0, eval_seconds=1.0, peak_rss_mb=100.0,
            peak_gpu_mb=None, resolution="8x8", test_views=2, iterations=config.iterations or 0, settings=settings,
            source={"kind": "synthetic", "folder": "data", "seed": 900000 + SCENES.index(run.scene), "layout": "object-360",
                    "views": 24, "resolution": 64, "split_views": [3, 6, 9]},
            machine="test machine", finished="2026-11-25T00:00:00+00:00", seed=run.seed,
        )  # fmt: skip

    return fit


def config(out: Path, **changes) -> BenchmarkConfig:
    base = BenchmarkConfig(scenes=SCENES, views=(3, 6), methods=("baseline", "reconfusion"), out=out, preset="cpu", iterations=5)
    return replace(base, **changes)


def results_json(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())


# ----------------------------------------------------------------------------------------- planning


def test_plan_is_scene_major_and_validated():
    runs = plan_runs(SCENES[:2], (3, 6), ("baseline", "reconfusion"))
    assert [(r.name, r.views, r.method) for r in runs[:3]] == [
        ("scene_a", 3, "baseline"), ("scene_a", 3, "reconfusion"), ("scene_a", 6, "baseline")]  # fmt: skip
    assert len(runs) == 8 and len(plan_runs(SCENES[:2] * 2, (3, 3), ("baseline",))) == 2  # duplicates dropped
    with pytest.raises(InputError, match="unknown"):
        plan_runs(SCENES, (3,), ("nerfacto",))
    with pytest.raises(InputError, match="named scene_a"):
        plan_runs((Path("x/scene_a"), Path("y/scene_a")), (3,), ("baseline",))


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 20])
def test_shards_partition_the_runs(count):
    runs = plan_runs(SCENES, (3, 6, 9), ("baseline", "reconfusion"))
    shards = [shard_runs(runs, i, count) for i in range(count)]
    assert [r for shard in shards for r in shard] == runs  # contiguous, in order, no overlap
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    if count == len(SCENES):  # a job array with one task per scene
        assert [{r.name for r in shard} for shard in shards] == [{s.name} for s in SCENES]


def test_parse_shard():
    assert parse_shard(None) == (0, 1) and parse_shard("2/5") == (2, 5)
    for bad in ("5/5", "-1/2", "1/0", "a/b", "3"):
        with pytest.raises(InputError, match="--shard"):
            parse_shard(bad)


def test_method_table_maps_modes_to_the_reconfusion_method():
    assert METHODS["baseline"].cpu == "reconfusion-baseline-cpu" and not METHODS["baseline"].uses_prior
    for mode in ("sds", "multistep", "annealed-multistep"):
        assert METHODS[mode].cpu == "reconfusion-cpu" and METHODS[mode].gpu == "reconfusion"
        assert METHODS[mode].flags == ("--pipeline.model.sample-loss.mode", mode)
    run = Run(Path("s/scene_a"), 3, "sds")
    settings = benchmark_runner.run_settings(run, config(Path("o"), prior="my/prior"), "gpu")
    command = benchmark_runner.ns_train_command(run, Path("s/scene_a"), settings, Path("o/run"))
    assert command[1:4] == ["reconfusion", "--pipeline.model.sample-loss.mode", "sds"]
    assert command[-3:] == ["reconfusion-data", "--num-views", "3"]
    assert command[command.index("--pipeline.model.prior") + 1] == "my/prior"
    assert command[command.index("--max-num-iterations") + 1] == "5"


# ------------------------------------------------------------------------------- shards, merge, resume


def test_two_shards_then_merge_equal_the_unsharded_run(tmp_path):
    run_benchmark(config(tmp_path / "all", jobs=2), fit=fake_fit())  # two fits at a time: same results
    for i in range(2):  # shards on two machines, each with its own output folder
        shard = run_benchmark(config(tmp_path / f"shard{i}", shard=f"{i}/2"), fit=fake_fit())
        assert len(shard) == 6 and not (tmp_path / f"shard{i}" / "results.json").exists()
    run_benchmark(config(tmp_path / "merged", merge=True, merge_from=(tmp_path / "shard0", tmp_path / "shard1")))
    assert results_json(tmp_path / "merged") == results_json(tmp_path / "all")
    assert (tmp_path / "merged" / "results.csv").read_text() == (tmp_path / "all" / "results.csv").read_text()
    for i in range(2):  # shards sharing one output folder (a cluster file system), then --merge there
        run_benchmark(config(tmp_path / "shared", shard=f"{i}/2"), fit=fake_fit())
    run_benchmark(config(tmp_path / "shared", merge=True))
    assert results_json(tmp_path / "shared") == results_json(tmp_path / "all")
    run_benchmark(config(tmp_path / "shared", merge=True, title="Again"))  # the latest merge replaces the others
    commands = json.loads((tmp_path / "shared" / "commands.json").read_text())
    assert [c["merge"] for c in commands] == [False, False, True] and "--title Again" in commands[2]["command"]
    assert "--shard 1/2" in commands[1]["command"]
    assert "--shard 1/2" in (tmp_path / "shared" / "BENCHMARKS.md").read_text()
    with pytest.raises(InputError):
        run_benchmark(config(tmp_path / "shared", methods=("nerfacto",)), fit=fake_fit())
    assert len(json.loads((tmp_path / "shared" / "commands.json").read_text())) == 3  # invalid: not recorded


def test_merge_without_results_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no finished runs"):
        run_benchmark(config(tmp_path / "empty", merge=True))
    with pytest.raises(InputError, match="no runs/ folder"):
        run_benchmark(config(tmp_path / "empty", merge=True, merge_from=(tmp_path / "nowhere",)))


def test_finished_runs_are_skipped_and_settings_must_match(tmp_path):
    calls = []
    run_benchmark(config(tmp_path, scenes=SCENES[:1]), fit=fake_fit(calls))
    assert len(calls) == 4
    unfinished = Run(SCENES[0], 6, "reconfusion").folder(tmp_path) / "result.json"
    unfinished.unlink()  # as if that fit had been interrupted
    run_benchmark(config(tmp_path, scenes=SCENES[:2]), fit=fake_fit(calls))
    assert calls[4:] == [("scene_a", 6, "reconfusion")] + [("scene_b", v, m) for v in (3, 6) for m in ("baseline", "reconfusion")]
    with pytest.raises(InputError, match="other settings \\(iterations\\)"):
        run_benchmark(config(tmp_path, scenes=SCENES[:1], iterations=50), fit=fake_fit(calls))


def test_failed_runs_do_not_stop_the_others_and_are_retried(tmp_path):
    calls = []
    with pytest.raises(InputError, match="1 of 4 runs failed"):
        run_benchmark(config(tmp_path, scenes=SCENES[:1]), fit=fake_fit(calls, fail={("scene_a", 3, "baseline")}))
    assert len(calls) == 4
    run_benchmark(config(tmp_path, scenes=SCENES[:1]), fit=fake_fit(calls))
    assert calls[4:] == [("scene_a", 3, "baseline")]


# ------------------------------------------------------------------------------------------- report


def test_report_has_tables_plots_and_grids(tmp_path):
    out = tmp_path / "out"
    run_benchmark(config(out, report=tmp_path / "BENCHMARKS.md", figures=tmp_path / "docs"), fit=fake_fit())
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 12 and {r["scene"] for r in rows} == {"scene_a", "scene_b", "scene_c"}
    assert {"psnr", "ssim", "lpips", "lpips_backend", "fit_seconds", "peak_rss_mb"} <= set(rows[0])
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "### procedural object-360: 2 scenes" in text and "### llff: 1 scene" in text
    psnr = {(r["scene"], r["views"], r["method"]): float(r["psnr"]) for r in rows}
    mean3 = np.mean([psnr[(s, "3", "reconfusion")] - psnr[(s, "3", "baseline")] for s in ("scene_a", "scene_b")])
    assert "| 3 | reconfusion | " in text and f"| {mean3:+.2f} [" in text  # differences of the means, with intervals
    assert "reconfusion data synthetic data --scenes 3 --views 24 --resolution 64 --layout object-360 --seed 900000" in text
    assert "reconfusion benchmark --scenes data/scene_a data/scene_b data/scene_c --views 3 6" in text
    assert "stlpips-alex-shift-tolerant" in text and "not comparable" in text
    for name in ("psnr_vs_views.png", "lpips_vs_views.png", "comparison.png", "grids/scene_a_3-views.png"):
        assert (tmp_path / "docs" / name).is_file(), name
        assert f"docs/{name}" in text
    grid = Image.open(tmp_path / "docs" / "grids" / "scene_a_3-views.png")
    assert grid.width > 3 * 128 and grid.height > 2 * 128  # 3 columns (truth, 2 methods), 2 rows, enlarged
    assert text.count("| scene_b | ") == 4  # every scene's rows
    assert "Published PSNR, for orientation only" in text and "| ReconFusion | 21.34 | 24.25 | 25.21 |" in text  # llff
    assert text.count("Published PSNR") == 1  # the procedural groups have no published numbers
    assert text.count("benchmarks/results/prior_heldout/object-360.json") == 1  # what limits the prior, per group
    assert (Path(__file__).parents[1] / "benchmarks/results/prior_heldout/object-360.json").is_file()


def test_a_merge_without_renders_keeps_the_figures_it_cannot_redraw(tmp_path):
    import shutil

    docs = tmp_path / "docs"
    run_benchmark(config(tmp_path / "first", report=tmp_path / "first.md", figures=docs), fit=fake_fit())
    comparison = (docs / "comparison.png").read_bytes()
    results_only = tmp_path / "elsewhere"  # as committed: result.json files, no renders
    for result in (tmp_path / "first" / "runs").glob("*/*/*/result.json"):
        target = results_only / result.relative_to(tmp_path / "first")
        target.parent.mkdir(parents=True)
        shutil.copy(result, target)
    run_benchmark(config(tmp_path / "second", merge=True, merge_from=(results_only,), report=tmp_path / "second.md",
                         figures=docs))  # fmt: skip
    text = (tmp_path / "second.md").read_text()
    assert "docs/grids/scene_a_3-views.png" in text and "docs/comparison.png" in text
    assert (docs / "comparison.png").read_bytes() == comparison


def test_differences_to_the_baseline_are_paired_by_scene(tmp_path):
    from reconfusion_benchmark.paired import paired_difference

    fit, cfg = fake_fit(), config(tmp_path)
    rows = [fit(Run(scene, 3, method), cfg, {}) for scene in SCENES[:2] for method in ("baseline", "reconfusion")]
    a_base, a_ours = rows[:2]
    partial = rows[:3]  # scene_b's reconfusion has not finished: only scene_a is compared
    assert paired_difference(partial, 3, "reconfusion", "psnr") == pytest.approx(a_ours.psnr - a_base.psnr)
    assert paired_difference(rows, 6, "reconfusion", "psnr") is None


def test_seeds_are_paired_with_the_baseline_of_the_same_seed():
    from reconfusion_benchmark.paired import paired_differences

    def row(method: str, seed: int, psnr: float) -> RunResult:
        return RunResult("scene_a", "llff", 3, method, psnr, 0.5, 0.2, "alex", 1.0, 1.0, 1.0, None, "8x8", 2, 5, seed=seed)

    rows = [row("baseline", 42, 10.0), row("reconfusion", 42, 12.0), row("baseline", 43, 11.0),
            row("reconfusion", 43, 11.0), row("reconfusion", 44, 30.0)]  # seed 44 has no baseline: not compared  # fmt: skip
    assert paired_differences(rows, 3, "reconfusion", "psnr") == [pytest.approx(1.0)]  # one value per scene
    assert paired_differences(rows, 3, "reconfusion", "psnr", seed=43) == [pytest.approx(0.0)]
    assert paired_differences(rows, 3, "reconfusion", "psnr", seed=44) == []
    from reconfusion_benchmark.headline import headline_lines

    other = [replace(r, scene="scene_b") for r in (row("baseline", 42, 20.0), row("reconfusion", 43, 40.0))]
    table = "\n".join(headline_lines(rows + other, Path("BENCHMARKS.md"), Path(".")))  # scene_b has no pair
    assert "| 3 | 1 (scene_a) | 10.50 | 11.50 | +1.00 |" in table


def test_data_commands_name_how_each_scene_was_made():
    from reconfusion_benchmark.report import data_commands

    def made(scene: str, **source) -> RunResult:
        return RunResult(scene, "g", 3, "baseline", 20.0, 0.5, 0.2, "alex", 1.0, 1.0, 1.0, None, "8x8", 2, 5,
                         source={"kind": "import", "scene": f"data/{scene}", "split_views": [3, 6], **source})  # fmt: skip

    rows = [made("photos", format="colmap", source="caps/photos", matcher="sequential", camera_model="OPENCV",
                 split_protocol="auto"),
            made("juicebox", format="llff", source="caps/juicebox", downscale=4, split_protocol="auto")]  # fmt: skip
    assert data_commands(rows) == [
        "reconfusion data colmap caps/photos data/photos --matcher sequential",
        "reconfusion data splits data/photos --protocol auto --views 3 6",
        "reconfusion data import llff caps/juicebox data/juicebox --downscale 4",
        "reconfusion data splits data/juicebox --protocol auto --views 3 6",
    ]


def test_targets_section_says_which_targets_are_met_and_which_missed():
    from reconfusion_benchmark.targets import target_lines

    def row(scene: str, group: str, method: str, psnr: float, lpips: float = 0.2) -> RunResult:
        fit_seconds = 100.0 if method == "baseline" else 140.0
        return RunResult(scene, group, 3, method, psnr, 0.5, lpips, "alex", fit_seconds, 1.0, 1.0, None, "8x8", 2, 5)

    rows = [row("fern", "llff", "baseline", 20.0), row("fern", "llff", "reconfusion", 20.5, 0.19),
            row("scan24", "dtu", "baseline", 15.0), row("scan24", "dtu", "reconfusion", 15.7, 0.19),
            row("horns", "llff", "baseline", 18.0), row("horns", "llff", "reconfusion", 18.3, 0.19),
            row("lego", "blender", "baseline", 10.0), row("lego", "blender", "reconfusion", 20.0),  # rendered: not counted
            row("scene_1", "procedural object-360", "baseline", 20.0),
            row("scene_1", "procedural object-360", "reconfusion", 23.5)]  # fmt: skip
    text = "\n".join(target_lines(rows))
    assert "| photographed scenes (LLFF, DTU, captures), 3 views: PSNR - baseline >= +1 dB | fern, horns, scan24 | +0.50 " in text
    assert text.count("**missed**") == 2  # +0.5 dB < +1 dB on every photographed scene, +0.3 on those but the tuning ones
    assert "captures) but scan24 and fern, 3 views: PSNR - baseline >= +1 dB | horns | +0.30 | **missed** |" in text
    assert "LPIPS - baseline <= 0 | fern, horns, scan24 | -0.010 [-0.010, -0.010] | met |" in text
    assert "procedural object-360 scenes, 3 views: PSNR - baseline >= +3 dB | scene_1 | +3.50 | met |" in text
    assert "every scene, 3 views: fit time / baseline's <= 1.5 | fern, horns, lego, scan24, scene_1 | 1.40 | met |" in text
    assert "6 views" not in text  # no paired runs there: no row
    assert target_lines([r for r in rows if r.method == "baseline"]) == []


def test_second_seed_runs_in_its_own_folder_and_gets_a_report_section(tmp_path):
    calls = []
    cfg = config(tmp_path, scenes=SCENES[:2], views=(3,), seeds=(42, 43))
    run_benchmark(cfg, fit=fake_fit(calls))
    assert calls[:4] == [("scene_a", 3, "baseline"), ("scene_a", 3, "reconfusion"),
                         ("scene_a", 3, "baseline", 43), ("scene_a", 3, "reconfusion", 43)]  # fmt: skip
    seeded = Run(SCENES[0], 3, "reconfusion", 43)
    assert seeded.folder(tmp_path).name == "reconfusion-seed43" and Run(SCENES[0], 3, "baseline").folder(tmp_path).name == "baseline"
    assert benchmark_runner.run_settings(seeded, cfg, "cpu")["flags"][-2:] == ["--machine.seed", "43"]
    assert "--machine.seed" not in benchmark_runner.run_settings(Run(SCENES[0], 3, "baseline"), cfg, "cpu")["flags"]
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "## Seeds" in text and "| procedural object-360 | 3 | reconfusion | 43 | " in text
    assert "| procedural object-360 | 3 | reconfusion | mean of the seeds | " in text
    assert "### procedural object-360: 2 scenes" in text and text.count("| scene_a | 3 | reconfusion | ") == 2
    assert {r["seed"] for r in csv.DictReader((tmp_path / "results.csv").open())} == {"42", "43"}
    merged = run_benchmark(replace(cfg, merge=True, seeds=(43,), report=tmp_path / "only43.md"))
    assert {r.seed for r in merged} == {43} and "## Seeds" not in (tmp_path / "only43.md").read_text()
    assert len(calls) == 8
    run_benchmark(cfg, fit=fake_fit(calls))  # all finished: nothing refitted
    assert len(calls) == 8
    run_benchmark(replace(cfg, scenes=SCENES[:1], seeds=(44,), methods=("reconfusion",)), fit=fake_fit(calls))
    run_benchmark(replace(cfg, merge=True, seeds=(42, 43, 44)))  # one unpaired extra run keeps the section
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| procedural object-360 | 3 | reconfusion | 43 | " in text and "object-360 | 3 | reconfusion | 44 |" not in text
    with pytest.raises(InputError, match="--seeds"):
        run_benchmark(replace(cfg, ns_train_args="--machine.seed 7"), fit=fake_fit(calls))


def test_bootstrap_interval_brackets_the_mean():
    from reconfusion_benchmark.paired import bootstrap_interval

    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    low, high = bootstrap_interval(values)
    assert low < np.mean(values) < high and min(values) <= low and high <= max(values)
    assert bootstrap_interval([1.0]) is None and bootstrap_interval([2.0, 2.0]) == (2.0, 2.0)
    assert bootstrap_interval(values) == (low, high)  # seeded: the report is reproducible


def test_readme_headline_is_written_between_its_markers_from_real_scenes_only(tmp_path):
    from reconfusion_benchmark.headline import END, START, update_readme

    fit, cfg = fake_fit(), config(tmp_path)
    rows = [fit(Run(scene, 3, method), cfg, {}) for scene in SCENES for method in ("baseline", "reconfusion")]
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{START}\nold table\n{END}\n\nmore text\n")
    update_readme(readme, rows, tmp_path / "BENCHMARKS.md")
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# title") and text.endswith("more text\n")
    base, ours = (next(r for r in rows if (r.scene, r.method) == ("scene_c", m)) for m in ("baseline", "reconfusion"))
    # only scene_c is real (llff): the procedural scenes stay out of the headline
    assert f"| 3 | 1 (scene_c) | {base.psnr:.2f} | {ours.psnr:.2f} | {ours.psnr - base.psnr:+.2f} |" in text
    assert "[BENCHMARKS.md](BENCHMARKS.md)" in text
    readme.write_text("no markers")
    with pytest.raises(InputError, match="benchmark-headline:start"):
        update_readme(readme, rows, tmp_path / "BENCHMARKS.md")


def test_a_regenerated_report_keeps_the_blocks_other_commands_wrote(tmp_path):
    from reconfusion_benchmark.blocks import replace_block
    from reconfusion_benchmark.report import write_report

    fit, cfg = fake_fit(), config(tmp_path)
    rows = [fit(Run(scene, 3, method), cfg, {}) for scene in SCENES[:2] for method in ("baseline", "reconfusion")]
    report = write_report(rows, cfg)
    replace_block(report, "regularisers", ["## An ablation", "", "| a | b |"], append=True)
    replace_block(report, "regularisers", ["## An ablation", "", "| c | d |"])  # replaced, not added again
    write_report(rows, cfg)
    text = report.read_text()
    assert text.count("## An ablation") == 1 and "| c | d |" in text and "| a | b |" not in text
    assert text.index("## Means per view count") < text.index("<!-- regularisers:start -->")


def test_ablation_compares_the_modes_on_the_same_scenes(tmp_path):
    from reconfusion_benchmark.report import ablation_results, markdown_report

    fit, cfg = fake_fit(), config(tmp_path)
    main = [fit(Run(scene, 3, method), cfg, {}) for scene in SCENES[:2] for method in ("baseline", "reconfusion")]
    assert ablation_results(main) == []  # no sds / multistep runs: no ablation section
    modes = [fit(Run(SCENES[0], 3, method), cfg, {}) for method in ("sds", "multistep")]
    rows = ablation_results(main + modes)
    assert {(r.scene, r.method) for r in rows} == {("scene_a", m) for m in ("baseline", "sds", "multistep", "reconfusion")}
    text = markdown_report(main + modes, "t", [], tmp_path, [], {}, None)
    ablation = text[text.index("## Sample-loss ablation"):]
    assert "| 3 | sds |" not in text[: text.index("## Sample-loss ablation")]  # the modes' rows are in the ablation
    sds = next(r for r in modes if r.method == "sds")
    assert "### procedural object-360: 1 scene" in ablation  # scene_b has no sds run, so it is left out
    assert f"| 3 | sds | {sds.psnr:.2f} |" in ablation


# -------------------------------------------------------------------------------------- scenes, child


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory) -> Path:
    from data_tools.synthetic import generate_scenes

    out = tmp_path_factory.mktemp("scenes")
    return generate_scenes(out, num_scenes=1, num_views=24, resolution=64, layout="object-360", seed=900000)[0]


def test_scene_copy_is_downscaled_with_fewer_test_views(tiny_scene, tmp_path):
    from reconfusion.scene import load_scene

    original = load_scene(tiny_scene)
    cfg = config(tmp_path, max_side=32, max_test_views=2)
    copy = benchmark_runner.prepare_scene(tiny_scene, cfg)
    assert copy == tmp_path / "scenes" / tiny_scene.name
    loaded = load_scene(copy)
    assert (loaded.sizes == 32).all() and loaded.image(0).shape == (32, 32, 3)
    np.testing.assert_allclose(loaded.intrinsics, original.intrinsics / 2)
    assert loaded.splits[3].train_ids == original.splits[3].train_ids
    assert loaded.splits[3].test_ids == original.splits[3].test_ids[::2][:2]
    assert benchmark_runner.prepare_scene(tiny_scene, config(tmp_path)) == tiny_scene  # nothing to change
    with pytest.raises(InputError, match=r"--max-side -5: must be 0 \(full size\) or more"):
        benchmark_runner.scene_copy(tiny_scene, tmp_path / "other", -5)
    info = benchmark_runner.describe_scene(tiny_scene, copy, 3)
    assert (info.group, info.resolution, info.test_views) == ("procedural object-360", "32x32", 2)
    assert info.source["seed"] == 900000 and info.source["resolution"] == 64
    assert benchmark_runner.fewer_test_views(tuple(range(200)), 25) == tuple(range(0, 200, 8))


def test_scene_copy_keeps_the_sparse_points(tiny_scene, tmp_path):
    from reconfusion.scene import SparsePoints, load_scene, write_scene

    original = load_scene(tiny_scene)
    points = SparsePoints(np.zeros((2, 3)), np.array([[0, 0], [5, 1], [23, 1]]))
    with_points = write_scene(tmp_path / "with_points", list(original.image_paths), original.c2w, original.intrinsics,
                              splits=original.splits, points=points)  # fmt: skip
    copy = load_scene(benchmark_runner.scene_copy(with_points, tmp_path / "copies", 32, 2))
    assert copy.points is not None and copy.points.observations.tolist() == [[0, 0], [5, 1], [23, 1]]


def test_scene_copy_follows_a_regenerated_split(tiny_scene, tmp_path):
    from reconfusion.scene import load_scene

    scene = tmp_path / "scene"
    shutil.copytree(tiny_scene, scene)
    cfg = config(tmp_path / "out", max_side=32)
    benchmark_runner.prepare_scene(scene, cfg)
    split = json.loads((scene / "train_test_split_3.json").read_text())
    split["train_ids"][0], split["test_ids"][0] = split["test_ids"][0], split["train_ids"][0]
    (scene / "train_test_split_3.json").write_text(json.dumps(split))
    copy = benchmark_runner.prepare_scene(scene, cfg)
    assert list(load_scene(copy).splits[3].train_ids) == sorted(split["train_ids"])


def test_a_missing_split_stops_the_sweep_before_any_fit(tiny_scene, tmp_path):
    with pytest.raises(InputError, match=f"{tiny_scene}: no train_test_split_4.json .*reconfusion data splits {tiny_scene}"):
        run_benchmark(config(tmp_path / "out", scenes=(tiny_scene / "transforms.json",), views=(3, 4)))
    assert not (tmp_path / "out" / "runs").exists()


def test_child_peak_memory_and_exit_status(tmp_path):
    code = "import time; a = bytearray(300 * 2**20); a[::4096] = b'x' * len(a[::4096]); time.sleep(1); raise SystemExit(3)"
    child = benchmark_runner.run_child([sys.executable, "-c", code], tmp_path / "child.log")
    assert child.returncode == 3 and 300 < child.peak_rss_mb < 400 and child.seconds > 1
    small = benchmark_runner.run_child([sys.executable, "-c", "pass"], tmp_path / "small.log")
    assert small.returncode == 0 and small.peak_rss_mb < 100  # per child, not the largest so far nor the parent's
    assert (tmp_path / "child.log").read_text().startswith(sys.executable)


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_parses_benchmark_and_demo():
    args = ["benchmark", "--scenes", "a/s1", "b/s2", "--views", "3", "--methods", "baseline", "sds", "--shard", "1/4",
            "--iterations", "100", "--max-side", "128", "--merge"]  # fmt: skip
    parsed = tyro.cli(Command, args=args, config=(tyro.conf.OmitSubcommandPrefixes,))
    assert isinstance(parsed, Benchmark)
    assert parsed.scenes == (Path("a/s1"), Path("b/s2")) and parsed.methods == ("baseline", "sds")
    assert (parsed.shard, parsed.iterations, parsed.max_side, parsed.merge) == ("1/4", 100, 128, True)
    demo = tyro.cli(Command, args=["demo", "--iterations", "10"], config=(tyro.conf.OmitSubcommandPrefixes,))
    assert isinstance(demo, Demo) and demo.iterations == 10 and demo.out == Path("outputs/demo")
    from dataclasses import fields

    assert [f.name for f in fields(Benchmark)] == [f.name for f in fields(BenchmarkConfig)]


def test_command_line_round_trips():
    original = BenchmarkConfig(scenes=SCENES, views=(3,), methods=("baseline", "multistep"), iterations=7,
                               shard="0/2", max_test_views=25, keep_checkpoints=True,
                               ns_train_args="--pipeline.model.sample-loss.refresh-every 10")  # fmt: skip
    words = shlex.split(command_line(original))
    assert words[:2] == ["reconfusion", "benchmark"]
    parsed = tyro.cli(Command, args=words[1:], config=(tyro.conf.OmitSubcommandPrefixes,))
    assert BenchmarkConfig(**{k: getattr(parsed, k) for k in vars(parsed)}) == original
    settings = benchmark_runner.run_settings(Run(SCENES[0], 3, "multistep"), original, "cpu")
    assert settings["flags"] == [*METHODS["multistep"].flags, "--pipeline.model.sample-loss.refresh-every", "10"]


def test_benchmark_modules_do_not_import_nerfstudio():
    code = ("import sys, reconfusion_benchmark.sweep, reconfusion_benchmark.runner, reconfusion_benchmark.report, "
            "reconfusion.cli; print([m for m in sys.modules if m.startswith('nerfstudio')])")  # fmt: skip
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_benchmark_end_to_end(tiny_scene, tmp_path):
    pytest.importorskip("nerfstudio")
    from reconfusion.cli import main

    out = tmp_path / "bench"
    argv = ["benchmark", "--scenes", str(tiny_scene), "--views", "3", "--methods", "baseline", "reconfusion",
            "--out", str(out), "--preset", "cpu", "--iterations", "20", "--jobs", "2"]  # fmt: skip
    main(argv)
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["views"], r["method"]) for r in rows] == [("3", "baseline"), ("3", "reconfusion")]
    for row in rows:
        assert 5.0 < float(row["psnr"]) < 60.0 and 0.0 < float(row["ssim"]) <= 1.0 and np.isfinite(float(row["lpips"]))
        assert float(row["peak_rss_mb"]) > 200 and float(row["fit_seconds"]) > 1 and row["iterations"] == "20"
        assert row["resolution"] == "64x64" and row["test_views"] == "3"
    taught = rows[1]["sample_taught"]  # 20 iterations: the loss acts at steps 0 and 10
    assert rows[0]["sample_taught"] == "" and 0.0 <= float(taught) <= 1.0
    assert "Sample loss: annealed-multistep" in (out / "runs" / tiny_scene.name / "3-views" / "reconfusion" / "train.log").read_text()
    assert not list(out.glob("runs/*/*/*/ns/**/nerfstudio_models/*.ckpt"))  # deleted after evaluation
    grid = out / "figures" / "grids" / f"{tiny_scene.name}_3-views.png"
    assert grid.is_file() and "## Every scene" in (out / "BENCHMARKS.md").read_text()
    before = (out / "results.json").read_text()
    main(argv)  # resumed: nothing to fit, the same results
    assert json.loads((out / "results.json").read_text()) == json.loads(before)


def test_ns_train_args_with_an_open_quote_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="--ns-train-args"):
        benchmark_runner.run_settings(Run(SCENES[0], 3, "reconfusion"), config(tmp_path, ns_train_args='--a "b'), "cpu")


def test_a_method_that_rarely_taught_gets_a_note_under_its_groups_table():
    from dataclasses import replace as changed

    from reconfusion_benchmark.report import _group_table, mean_table

    def row(scene: str, method: str, taught: float | None) -> RunResult:
        made = RunResult(scene, "llff", 3, method, 20.0, 0.5, 0.2, "alex", 1.0, 1.0, 1.0, None, "8x8", 2, 5)
        return changed(made, sample_taught=taught)

    rows = [row("fern", "baseline", None), row("fern", "reconfusion", 0.0), row("horns", "reconfusion", 0.08)]
    text = "\n".join(_group_table("llff", rows, mean_table(rows)))
    assert "Taught on few novel views: reconfusion at 3 views (4%)." in text
    rows = [row("fern", "baseline", None), row("fern", "reconfusion", 0.5)]
    assert "Taught on few" not in "\n".join(_group_table("llff", rows, mean_table(rows)))


def test_a_benchmark_with_bad_arguments_records_nothing(tmp_path):
    out = tmp_path / "bench"
    missing = BenchmarkConfig(scenes=(tmp_path / "no_such_scene",), views=(3,), methods=("baseline",), out=out, preset="cpu")
    with pytest.raises(InputError, match="no_such_scene: scene folder not found"):
        run_benchmark(missing)
    assert not out.exists()  # no commands.json naming a command that never ran
    with pytest.raises(InputError, match="--views 0 3: give numbers of input views of at least 1"):
        plan_runs([tmp_path], [0, 3], ["baseline"])
