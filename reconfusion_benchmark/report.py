"""The benchmark's report: results.csv / results.json, a Markdown report, plots and image grids.

- results.csv / results.json: one row per (scene, views, method, seed), sorted by group, scene, views and
  the method order of :data:`reconfusion_benchmark.runs.METHODS`;
- the Markdown report: how it was made (the data and benchmark commands, machine, date, LPIPS backend,
  resolution), means per view count for each group of scenes with the difference to the baseline,
  which of the project's targets are met (:mod:`reconfusion_benchmark.targets`), and every scene's numbers;
- ``psnr_vs_views.png`` / ``lpips_vs_views.png`` (matplotlib, Agg): means over a group's scenes per
  view count, one panel per group; ``grids/SCENE_N-views.png``: test views, ground truth | methods;
  ``comparison.png``: one test view of one scene rendered by every method, side by side.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np

from reconfusion_benchmark.paired import difference_cell, paired_differences, paired_means
from reconfusion_benchmark.blocks import blocks_of
from reconfusion_benchmark.runs import METHODS, BenchmarkConfig, RunResult, command_line, group_key, runs_by_scene
from reconfusion_benchmark.figures import renders_by_run, write_comparison, write_grids, write_plots
from reconfusion_benchmark.targets import target_lines
from reconfusion.files import read_json, write_json

logger = logging.getLogger("reconfusion")

CSV_COLUMNS = ("scene", "group", "views", "method", "seed", "psnr", "ssim", "lpips", "psnr_masked", "ssim_masked",
               "lpips_masked", "lpips_backend", "fit_seconds",
               "eval_seconds", "peak_rss_mb", "peak_gpu_mb", "resolution", "test_views", "iterations", "sample_taught",
               "machine", "concurrency", "finished")  # fmt: skip
COMMANDS_FILE = "commands.json"
"""OUT/commands.json: every benchmark command run with this output folder (the report lists them)."""
MEAN_KEYS = ("psnr", "ssim", "lpips", "fit_seconds", "peak_rss_mb", "psnr_masked", "lpips_masked", "sample_taught")
STLPIPS_NOTE = (
    " (shift-tolerant LPIPS: the standard LPIPS weights cannot be downloaded here; its values are not "
    "comparable with published LPIPS)"
)
NOTES = {
    group: "The bundled prior was trained only on procedural scenes (reconfusion/assets/default_prior/README.md): "
    "scenes like this one are unlike anything it has seen, so it is not expected to help here as it does on "
    "procedural scenes: on held-out views of the real scenes here its samples score well below the renders "
    "it corrects (sample_psnr of \"compare\" in docs/small_prior/evaluation.json, and "
    "docs/small_prior/README.md), which caps what its sample loss can add. The paper's prior is trained on "
    "real multiview data (train_prior reads CO3D, RealEstate10K and MVImgNet)."
    for group in ("llff", "blender", "dtu", "nerfstudio", "reconfusion", "colmap", "scenes")
} | {
    f"procedural {layout}": "What the bundled prior can teach here at most: given 3 views of a held-out scene "
    f"of this kind, its samples score sample_psnr in benchmarks/results/prior_heldout/{layout}.json against the "
    "true view (README.md there); where that is below the baseline's PSNR in the table, its sample loss cannot "
    "raise PSNR."
    for layout in ("object-360", "forward-facing")
}
"""Notes printed above the tables of groups fitted with the bundled prior: what limits what it can add."""
RARELY_TAUGHT = 0.1
"""A method whose sample loss taught on fewer of its novel views than this gets a note under its group's table."""
ABLATION_MODES = ("sds", "multistep", "annealed-multistep")
"""Sample-loss modes compared by the ablation section (issue 7); ``reconfusion`` runs annealed-multistep."""
PROTOCOL_OF_FORMAT = {"llff": "llff", "blender": "blender", "dtu": "dtu"}
"""Split protocol used with each import format (others: auto)."""
KEEPS_SPLITS = ("reconfusion",)
"""Import formats that bring their own split files (no `reconfusion data splits` after them)."""


PUBLISHED = {
    "llff": ("LLFF, mean over its 8 scenes at 504x378 (RegNeRF protocol), Zip-NeRF-based",
             {"Zip-NeRF": {3: 17.23, 6: 20.71, 9: 23.63}, "ReconFusion": {3: 21.34, 6: 24.25, 9: 25.21}}),
    "dtu": ("DTU, mean over the 15 test scans of the pixelNeRF/RegNeRF protocol (not scan24/scan37)",
            {"Zip-NeRF": {3: 9.18}, "ReconFusion": {3: 20.74, 6: 23.62, 9: 24.62}}),
}  # fmt: skip
"""PSNR the ReconFusion paper (Wu et al., CVPR 2024) reports, for orientation only: its scenes, resolution,
model and prior, not ours."""


def sort_results(results: list[RunResult]) -> list[RunResult]:
    order = {name: i for i, name in enumerate(METHODS)}
    rank = lambda r: (group_key(r.group), r.scene, r.views, order.get(r.method, len(order)), r.method, r.seed)  # noqa: E731
    return sorted(results, key=rank)


def mean_table(results: list[RunResult]) -> dict[tuple[str, int, str], dict[str, float]]:
    """(group, views, method) -> means over scenes (each scene first averaged over its seeds) of MEAN_KEYS,
    and the count of scenes."""
    means = {}
    for key, scenes in runs_by_scene(results).items():
        means[key] = {k: _mean([_mean_or_none([getattr(r, k) for r in rows]) for rows in scenes.values()])
                      for k in MEAN_KEYS}  # fmt: skip
        means[key]["count"] = len(scenes)
    return means


def _mean_or_none(values: list) -> float | None:
    """Mean of the values present (None when none is, e.g. masked metrics of scenes without alpha)."""
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _mean(values: list) -> float:
    """:func:`_mean_or_none`, NaN when no value is present (a diverged run's NaN stays visible)."""
    mean = _mean_or_none(values)
    return float("nan") if mean is None else mean


def record_command(out: Path, config: BenchmarkConfig) -> None:
    """Append this invocation to OUT/commands.json: every distinct fitting command, and only the latest
    --merge (a merge reads whatever has finished, so the last one supersedes the others)."""
    path = Path(out) / COMMANDS_FILE
    commands = [c for c in (read_json(path) if path.is_file() else []) if not (config.merge and c.get("merge"))]
    line = command_line(config)
    if line not in [c["command"] for c in commands]:
        date = datetime.now().astimezone().isoformat(timespec="seconds")
        commands.append({"command": line, "cwd": os.getcwd(), "date": date, "merge": config.merge})
    write_json(path, commands)


def write_results(results: list[RunResult], out: Path) -> None:
    """results.json (every field) and results.csv (CSV_COLUMNS)."""
    write_json(Path(out) / "results.json", [dataclasses.asdict(r) for r in results])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for result in results:
        writer.writerow(dataclasses.asdict(result))
    tmp = Path(out) / ".results.csv.tmp"
    tmp.write_text(buffer.getvalue())
    os.replace(tmp, Path(out) / "results.csv")


def write_report(results: list[RunResult], config: BenchmarkConfig) -> Path:
    """Write results.csv/json, the figures and the Markdown report; returns the report's path."""
    out = Path(config.out)
    results = sort_results(results)
    write_results(results, out)
    report = Path(config.report) if config.report else out / "BENCHMARKS.md"
    figures = Path(config.figures) if config.figures else out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    plots = write_plots(results, figures)
    renders = renders_by_run(results, out)
    grids = write_grids(renders, results, figures / "grids")
    comparison = write_comparison(renders, results, figures / "comparison.png")
    commands = read_json(out / COMMANDS_FILE) if (out / COMMANDS_FILE).is_file() else []
    text = markdown_report(results, config.title, commands, report.parent, plots, grids, comparison)
    kept = blocks_of(report.read_text()) if report.is_file() else []  # sections other commands wrote into it
    text = "\n\n".join([text.rstrip(), *kept]) + "\n"
    report.parent.mkdir(parents=True, exist_ok=True)
    tmp = report.with_name(f".{report.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, report)
    return report


# --------------------------------------------------------------------------------------------- Markdown


def _fmt(value: float, digits: int) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _link(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path, base)).as_posix()


def _relative(path: str) -> str:
    """``path`` relative to the working directory when it is absolute (commands are run from the repository)."""
    return os.path.relpath(path) if os.path.isabs(path) else path


def _import_command(fmt: str, src: str, scene: str, source: dict) -> str:
    """The `reconfusion data` command that made an imported (or COLMAP-posed) scene."""
    if fmt == "colmap" and "model" in source:  # an existing COLMAP model, imported
        extra = f" --downscale {source['downscale']}" if source.get("downscale", 1) != 1 else ""
        return f"reconfusion data import colmap {src} {scene}{extra}"
    if fmt == "colmap":
        extra = f" --matcher {source['matcher']}" if source.get("matcher", "exhaustive") != "exhaustive" else ""
        extra += f" --camera-model {source['camera_model']}" if source.get("camera_model", "OPENCV") != "OPENCV" else ""
        return f"reconfusion data colmap {src} {scene}{extra}"
    extra = f" --downscale {source['downscale']}" if source.get("downscale", 8) != 8 else ""
    extra += " --background black" if source.get("background") == [0.0, 0.0, 0.0] else ""
    return f"reconfusion data import {fmt} {src} {scene}{extra}"


def data_commands(results: list[RunResult]) -> list[str]:
    """The `reconfusion data` commands that made the scenes (from each result's recorded source)."""
    synthetic: dict[tuple, list[int]] = defaultdict(list)
    lines: list[str] = []
    for source in {repr(sorted(r.source.items())): r.source for r in results}.values():
        if source.get("kind") == "synthetic":
            key = (source["folder"], source["views"], source["resolution"], source["layout"])
            synthetic[key].append(int(source["seed"]))
        elif source.get("kind") == "import":
            fmt, scene = source.get("format"), source.get("scene")
            lines.append(_import_command(fmt, _relative(source.get("source", "?")), scene, source))
            if fmt in KEEPS_SPLITS:
                continue
            views = " ".join(str(v) for v in source.get("split_views", []))
            protocol = source.get("split_protocol") or PROTOCOL_OF_FORMAT.get(fmt, "auto")
            lines.append(f"reconfusion data splits {scene} --protocol {protocol} --views {views}")
    for (folder, views, resolution, layout), seeds in sorted(synthetic.items()):
        seeds = sorted(seeds)
        runs = np.split(np.array(seeds), np.where(np.diff(seeds) != 1)[0] + 1)
        for run in runs:
            lines.insert(0, f"reconfusion data synthetic {folder} --scenes {len(run)} --views {views} "
                            f"--resolution {resolution} --layout {layout} --seed {run[0]}")  # fmt: skip
    return lines


def _header(results: list[RunResult], title: str, commands: list[dict]) -> list[str]:
    backends = sorted({r.lpips_backend for r in results})
    machines = sorted({r.machine for r in results if r.machine})
    concurrency = sorted({r.concurrency for r in results if r.concurrency})
    dates = sorted(r.finished[:10] for r in results if r.finished)
    lines = [f"# {title}", "", "Written by `reconfusion benchmark`; do not edit by hand, rerun the commands below.", ""]
    lines += [f"- machine: {'; '.join(machines) or 'not recorded'}"]
    lines += [f"- fits at the same time: {'; '.join(concurrency)} (fit seconds depend on it)"] if concurrency else []
    lines += [f"- runs finished: {dates[0]} to {dates[-1]}" if dates else "- runs finished: not recorded"]
    lines += [f"- report written: {datetime.now().astimezone().isoformat(timespec='minutes')}"]
    lines += [f"- LPIPS: {', '.join(backends)}" + (STLPIPS_NOTE if any("stlpips" in b for b in backends) else "")]
    lines += ["", "Reproduce (from the repository root):", "", "```bash"]
    lines += data_commands(results) + [c["command"] for c in commands] + ["```", ""]
    return lines


def _method_order(results: list[RunResult]) -> list[str]:
    present = {r.method for r in results}
    return [m for m in METHODS if m in present] + sorted(present - set(METHODS))


def _group_table(group: str, results: list[RunResult], means: dict) -> list[str]:
    """Means per (views, method) of one group, with the differences to the baseline's means."""
    rows = [r for r in results if r.group == group]
    scenes = sorted({r.scene for r in rows})
    kinds = sorted({(r.resolution, r.test_views, r.iterations) for r in rows})
    described = "; ".join(f"{res}, {tv} test views, {it} iterations" for res, tv, it in kinds)
    lines = [f"### {group}: {len(scenes)} scene{'s' if len(scenes) != 1 else ''} ({described})", ""]
    if group in NOTES and any(r.settings.get("prior") == "bundled" for r in rows):
        lines += [NOTES[group], ""]
    masked = any(r.psnr_masked is not None for r in rows)
    columns = ("views", "method", "PSNR", "SSIM", "LPIPS", "PSNR - baseline", "LPIPS - baseline",
               *(("masked PSNR", "masked LPIPS") if masked else ()), "views taught", "fit s", "peak MiB", "scenes")  # fmt: skip
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for views in sorted({r.views for r in rows}):
        for method in _method_order(rows):
            c = means.get((group, views, method))
            if c is None:
                continue
            paired = ["-", "-"]
            if method != "baseline":
                paired = [difference_cell(paired_differences(rows, views, method, k), d) for k, d in (("psnr", 2), ("lpips", 3))]
            lines.append(
                f"| {views} | {method} | {_fmt(c['psnr'], 2)} | {_fmt(c['ssim'], 3)} | {_fmt(c['lpips'], 3)} | "
                f"{paired[0]} | {paired[1]} | "
                + (f"{_fmt(c['psnr_masked'], 2)} | {_fmt(c['lpips_masked'], 3)} | " if masked else "")
                + f"{_percent(c['sample_taught'])} | {c['fit_seconds']:.0f} | {c['peak_rss_mb']:.0f} | {c['count']} |"
            )
    return lines + [""] + _rarely_taught(group, rows, means) + _published(group)


def _rarely_taught(group: str, rows: list[RunResult], means: dict) -> list[str]:
    """A note on the (views, method) whose sample loss taught on few of the novel views it drew."""
    found = [(views, method, means[(group, views, method)]["sample_taught"])
             for views in sorted({r.views for r in rows}) for method in _method_order(rows)
             if (group, views, method) in means]  # fmt: skip
    rare = [f"{method} at {views} views ({taught:.0%})" for views, method, taught in found
            if taught is not None and np.isfinite(taught) and taught < RARELY_TAUGHT]  # fmt: skip
    if not rare:
        return []
    return [f"Taught on few novel views: {', '.join(rare)}. The input views already show nearly every pixel of the "
            "novel views the sample loss drew (its coverage weight), so the prior changed little and those fits stay "
            "near the baseline's.", ""]  # fmt: skip


def _percent(value: float | None) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.0%}"


def _published(group: str) -> list[str]:
    """The paper's PSNR for a group's dataset, labelled as such (none for other groups)."""
    if group not in PUBLISHED:
        return []
    where, numbers = PUBLISHED[group]
    views = sorted({v for per_view in numbers.values() for v in per_view})
    lines = [f"Published PSNR, for orientation only - the paper's {where}, not our scenes, resolution or model:", "",
             "| published (paper) | " + " | ".join(f"{v} views" for v in views) + " |", "|---|" + "---|" * len(views)]
    for method, per_view in numbers.items():
        lines.append(f"| {method} | " + " | ".join(f"{per_view[v]:.2f}" if v in per_view else "-" for v in views) + " |")
    return lines + [""]


def _scene_table(results: list[RunResult]) -> list[str]:
    lines = ["| group | scene | views | method | seed | PSNR | SSIM | LPIPS | masked PSNR / SSIM / LPIPS | views taught "
             "| fit s | peak MiB | resolution | test views |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        masked = "-" if r.psnr_masked is None else f"{_fmt(r.psnr_masked, 2)} / {_fmt(r.ssim_masked, 3)} / {_fmt(r.lpips_masked, 3)}"
        taught = _percent(r.sample_taught)
        lines.append(
            f"| {r.group} | {r.scene} | {r.views} | {r.method} | {r.seed} | {_fmt(r.psnr, 2)} | {_fmt(r.ssim, 3)} | "
            f"{_fmt(r.lpips, 3)} | {masked} | {taught} | {r.fit_seconds:.0f} | {r.peak_rss_mb:.0f} | {r.resolution} "
            f"| {r.test_views} |"
        )
    return lines + [""]


def ablation_results(results: list[RunResult]) -> list[RunResult]:
    """The runs the sample-loss ablation compares: the baseline, sds, multistep and annealed-multistep (the
    ``reconfusion`` runs stand for it when the mode was not run by that name), on the (scene, views) where
    all of them finished, so every mode is averaged over the same scenes. Empty without sds or multistep runs."""
    present = {r.method for r in results}
    if not present & {"sds", "multistep"}:
        return []
    default = "annealed-multistep" if "annealed-multistep" in present else "reconfusion"
    methods = ["baseline", *(m for m in ABLATION_MODES[:2] if m in present), default]
    finished = defaultdict(set)
    for r in results:
        finished[(r.scene, r.views, r.seed)].add(r.method)
    return [r for r in results if r.method in methods and finished[(r.scene, r.views, r.seed)] >= set(methods)]


def _seed_lines(results: list[RunResult]) -> list[str]:
    """For each (group, views, method) paired with the baseline under several seeds: its difference to the
    baseline per seed and averaged over the seeds, each over the scenes where that pairing finished."""
    lines = []
    for group in sorted({r.group for r in results}, key=group_key):
        for views in sorted({r.views for r in results if r.group == group}):
            rows = [r for r in results if (r.group, r.views) == (group, views)]
            for method in [m for m in _method_order(rows) if m != "baseline"]:
                seeds = sorted({r.seed for r in rows if r.method == method} & {r.seed for r in rows if r.method == "baseline"})
                if len(seeds) < 2:
                    continue
                for seed in [*seeds, None]:
                    cells = [difference_cell(paired_differences(rows, views, method, k, seed), d)
                             for k, d in (("psnr", 2), ("lpips", 3))]  # fmt: skip
                    label = "mean of the seeds" if seed is None else str(seed)
                    count = len(paired_means(rows, views, method, "psnr", seed))
                    lines.append(f"| {group} | {views} | {method} | {label} | {cells[0]} | {cells[1]} | {count} |")
    if not lines:
        return []
    return ["## Seeds", "", "The same fits with other nerfstudio seeds (`--seeds`), each paired with the baseline "
            "fitted with the same seed, with 95% bootstrap intervals over scenes. Where the seeds disagree, a "
            "difference of that size is the seed's, not the method's.", "",
            "| group | views | method | seed | PSNR - baseline | LPIPS - baseline | scenes |",
            "|---|---|---|---|---|---|---|", *lines, ""]  # fmt: skip


def _ablation_lines(rows: list[RunResult]) -> list[str]:
    """The ablation section of the rows :func:`ablation_results` chose (none: no section)."""
    if not rows:
        return []
    described = {
        "sds": "`sds` (score distillation, one prior evaluation per step, gradient through the encoder)",
        "multistep": "`multistep` (t from the whole range all along)",
        "annealed-multistep": "`annealed-multistep` (the paper's, our default)",
        "reconfusion": "`reconfusion` (the default mode, annealed-multistep)",
    }
    modes = [described[m] for m in _method_order(rows) if m in described]
    lines = ["## Sample-loss ablation", "", f"The same prior used {len(modes)} ways while fitting "
             f"(`--pipeline.model.sample-loss.mode`): {', '.join(modes)}, and the baseline without it. "
             "Means over the scenes where every one of them finished.", ""]  # fmt: skip
    means = mean_table(rows)
    for group in sorted({r.group for r in rows}, key=group_key):
        lines += _group_table(group, rows, means)
    return lines


def _figure_lines(results: list[RunResult], base: Path, grids: dict, comparison: Path | None) -> list[str]:
    lines = []
    if comparison is not None:
        lines += ["## One test view, every method", "", f"![comparison]({_link(comparison, base)})", ""]
    lines += ["## Test views", "", "Ground truth, then each method (columns), for a few test views (rows).", ""]
    shown = _grids_to_show(results, grids)
    for scene, views in shown:
        link = _link(grids[(scene, views)], base)
        lines += [f"**{scene}, {views} views**", "", f"![{scene} {views} views]({link})", ""]
    rest = [key for key in sorted(grids) if key not in shown]
    if rest:
        lines += ["More: " + ", ".join(f"[{s} {v}]({_link(grids[(s, v)], base)})" for s, v in rest), ""]
    return lines


def markdown_report(
    results: list[RunResult], title: str, commands: list[dict], base: Path,
    plots: list[Path], grids: dict[tuple[str, int], Path], comparison: Path | None,
) -> str:  # fmt: skip
    """The whole report (links relative to ``base``, the report's folder). The sample-loss modes' rows go
    to the ablation section when there is one (they usually cover fewer scenes than the main methods)."""
    ablation = ablation_results(results)
    main = [r for r in results if r.method not in ABLATION_MODES] if ablation else results
    means = mean_table(main)
    lines = _header(results, title, commands)
    lines += ["## Means per view count", "", "Means over each group's scenes (the test views of every scene's "
              "split). The differences to the baseline are means of the per-scene differences, over the scenes "
              "where both have finished (scenes fitted with several seeds: each seed paired with the baseline of "
              "the same seed, then averaged), with a 95% percentile-bootstrap interval over those scenes where "
              "there are two or more. Views taught: of the novel views the sample loss drew, the fraction that taught "
              "(the others were fully covered by the inputs, or the check against the photographs refused the "
              "prior's change).", ""]  # fmt: skip
    for group in sorted({r.group for r in main}, key=group_key):
        lines += _group_table(group, main, means)
    lines += [f"![{p.stem}]({_link(p, base)})" for p in plots] + [""]
    lines += target_lines(main)
    lines += _seed_lines(main)
    lines += _ablation_lines(ablation)
    lines += _figure_lines(results, base, grids, comparison)
    lines += ["## Every scene", ""] + _scene_table(results)
    return "\n".join(lines)


def _grids_to_show(results: list[RunResult], grids: dict[tuple[str, int], Path]) -> list[tuple[str, int]]:
    """The smallest view count of the first scene of each group."""
    shown = []
    for group in sorted({r.group for r in results}, key=group_key):
        rows = [r for r in results if r.group == group and (r.scene, r.views) in grids]
        if rows:
            first = min(rows, key=lambda r: (r.scene, r.views))
            shown.append((first.scene, first.views))
    return shown


def rich_table(results: list[RunResult]):
    """The results as a rich Table (what `reconfusion demo` prints)."""
    from rich.table import Table

    table = Table(title="reconfusion benchmark")
    for name in ("scene", "views", "method", "PSNR", "SSIM", "LPIPS", "fit s", "peak MiB"):
        table.add_column(name, justify="left" if name in ("scene", "method") else "right", no_wrap=True)
    for r in sort_results(results):
        table.add_row(r.scene, str(r.views), r.method, _fmt(r.psnr, 2), _fmt(r.ssim, 3), _fmt(r.lpips, 3),
                      f"{r.fit_seconds:.0f}", f"{r.peak_rss_mb:.0f}")  # fmt: skip
    backends = ", ".join(sorted({r.lpips_backend for r in results}))
    table.caption = f"LPIPS: {backends}"
    return table
