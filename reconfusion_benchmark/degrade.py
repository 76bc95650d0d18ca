"""``reconfusion data degrade --scenes SCENE [SCENE ...] --out CORPUS``: the degraded-rendering corpus (:mod:`reconfusion.corpus`).

For every scene and view count, our NeRF (the benchmark's CPU settings, ``reconfusion-baseline-cpu``) is fitted
on a sparse subset of the views, and every held-out view is rendered at each stop (fits stopped early at the
first stops, finished at the last). Scenes are copied once into CORPUS/scenes at ``max_side``; the training
views are the scene's own split where it has one for that count (so the evaluation scenes' protocols hold),
else spread by farthest-point sampling; every other view is held out (at most ``max_held_out``, evenly strided).
With ``arc_degrees``, every 360-degree capture also gives a forward-facing scene, NAME-arc: its views within that
many degrees of one view's direction, fitted like the others (sparse views of a narrow arc, as LLFF's captures are).

Fits run as child processes (``python -m nerfstudio_plugin.degrade``), ``jobs`` at a time with one thread each;
finished fits are skipped, so the command resumes where it was stopped. Fits are ordered view count first, so a
corpus stopped early still covers every scene.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from reconfusion.corpus import ARC_KEY, ARC_SUFFIX, CORPUS_FILE, FIT_FILE, fit_folder
from reconfusion.files import InputError, read_json, write_json
from reconfusion.novel_views import ORBIT_ANGLE_DEGREES
from reconfusion.scene import Split, load_scene, write_split

logger = logging.getLogger("reconfusion")


@dataclass(frozen=True)
class DegradeConfig:
    """What ``reconfusion data degrade`` fits and renders."""

    scenes: tuple[Path, ...]
    """Scene folders, or folders searched for them (every transforms.json below)."""
    out: Path = Path("outputs/degraded")
    """The corpus folder (scenes/, fits/, corpus.json); rerun with the same --out to resume."""
    views: tuple[int, ...] = (3, 6, 9)
    """Training views of the fits (one fit per scene and count; counts a scene cannot hold are skipped)."""
    stops: tuple[int, ...] = (150, 300, 600)
    """Steps after which the held-out views are rendered; the last is the fit's length (the CPU budget, 600)."""
    max_side: int = 160
    """Longest image side of the scene copies fitted and rendered (larger scenes are downscaled)."""
    max_held_out: int = 24
    """Held-out views rendered per fit (evenly strided over the views not trained on)."""
    jobs: int = 2
    """Fits at the same time (one process and one thread each)."""
    seed: int = 0
    """Seed of every fit."""
    arc_degrees: float = 0.0
    """Also fit a forward-facing piece of every 360-degree capture, as the scene NAME-arc: the views whose viewing
    direction lies within this many degrees of one view's (LLFF's captures span about 10-15); 0: none."""
    arcs_only: bool = False
    """With --arc-degrees: fit the arcs only (a forward-facing corpus of its own, to weigh apart in training)."""
    report: Path | None = None
    """Also write a Markdown summary here, with a contact sheet beside it (PNG of the same name)."""
    report_only: bool = False
    """Fit nothing: write corpus.json (and --report) from the fits finished so far, e.g. while another process runs."""


@dataclass(frozen=True)
class PlannedFit:
    scene: Path
    """The scene copy in CORPUS/scenes."""
    views: int
    folder: Path

    @property
    def done(self) -> bool:
        return (self.folder / FIT_FILE).is_file()


def find_scenes(paths: tuple[Path, ...]) -> list[Path]:
    """Scene folders given or found below the given folders, in order; InputError when a name repeats."""
    found: list[Path] = []
    for path in paths:
        path = Path(path)
        if not path.is_dir():
            raise InputError(f"{path}: no such folder; give scene folders (transforms.json) or folders holding them")
        found += [path] if (path / "transforms.json").is_file() else sorted(p.parent for p in path.rglob("transforms.json"))
    if not found:
        raise InputError(f"{' '.join(map(str, paths))}: no transforms.json found; import the scenes with reconfusion data import")
    names: dict[str, Path] = {}
    for scene in found:
        if scene.name in names and names[scene.name].resolve() != scene.resolve():
            raise InputError(f"{scene} and {names[scene.name]}: two scenes named {scene.name!r}; the corpus names fits "
                             "by folder name, so rename one")  # fmt: skip
        names[scene.name] = scene
    return list(dict.fromkeys(names.values()))


def corpus_split(scene, views: int, max_held_out: int) -> Split:
    """The scene's own training views for ``views`` where it has that split, else farthest-point ones; every
    other view held out (at most ``max_held_out``, evenly strided)."""
    from data_tools.splits import auto_split
    from reconfusion_benchmark.runner import fewer_test_views

    train = scene.splits[views].train_ids if views in scene.splits else auto_split(scene.c2w[:, :3, 3], views).train_ids
    trained = set(train)
    rest = tuple(i for i in range(len(scene)) if i not in trained)
    return Split(tuple(train), fewer_test_views(rest, max_held_out))


def copy_scene(scene: Path, config: DegradeConfig) -> Path:
    """The scene at ``max_side`` in CORPUS/scenes with one corpus split per view count it can hold."""
    from reconfusion_benchmark.runner import scene_copy

    target = Path(config.out) / "scenes" / scene.name
    copy = scene_copy(scene, target.parent, config.max_side)
    if copy.resolve() != target.resolve() and not (target / "transforms.json").is_file():
        shutil.copytree(copy, target, ignore=shutil.ignore_patterns("train_test_split_*.json"))
    write_corpus_splits(target, load_scene(scene), config)
    return target


def arc_copy(copy: Path, config: DegradeConfig) -> Path | None:
    """CORPUS/scenes/NAME-arc, the forward-facing arc of a 360-degree scene copy with its corpus splits; None for
    a forward-facing scene, or an arc that is not forward-facing itself or too small for the fewest views asked
    (two views held out)."""
    from reconfusion.novel_views import detect_layout, forward_facing_arc
    from reconfusion.scene import write_scene
    from reconfusion_benchmark.runner import scene_extras

    scene = load_scene(copy)
    if detect_layout(scene.c2w) != "object-360":
        return None
    frames = forward_facing_arc(scene.c2w, config.arc_degrees)
    layout = detect_layout(scene.c2w[frames])
    if len(frames) < min(config.views) + 2 or layout != "forward-facing":
        logger.info("%s: no arc fit (%d views within %g degrees, %s)", copy, len(frames), config.arc_degrees, layout)
        return None
    target = Path(config.out) / "scenes" / f"{copy.name}{ARC_SUFFIX}"
    recipe = {"of": copy.name, "degrees": config.arc_degrees, "frames": frames.tolist()}
    existing = read_json(target / "transforms.json") if (target / "transforms.json").is_file() else None
    if existing is not None and ARC_KEY not in existing:
        raise InputError(f"{target}: a scene named {target.name} is not the arc of {copy.name}; rename it, since the "
                         f"corpus names the arc of a scene NAME{ARC_SUFFIX}")  # fmt: skip
    if existing is None or existing[ARC_KEY] != recipe:
        shutil.rmtree(Path(config.out) / "fits" / target.name, ignore_errors=True)  # fits of other frames
        read = scene.rgba if scene.has_alpha else scene.image
        write_scene(target, [read(i) for i in frames], scene.c2w[frames], scene.intrinsics[frames],
                    sizes=scene.sizes[frames], distortion=scene.distortion[frames],
                    points=None if scene.points is None else scene.points.of_frames(frames),
                    extra={**scene_extras(scene, frames), ARC_KEY: recipe}, overwrite=True)  # fmt: skip
    write_corpus_splits(target, load_scene(target), config)
    return target


def write_corpus_splits(target: Path, source, config: DegradeConfig) -> None:
    """One corpus split of the loaded ``source`` scene per view count it can hold, written into ``target``
    (a copy with the same frames); splits of other counts removed."""
    for views in config.views:
        try:
            split = corpus_split(source, views, config.max_held_out)
        except InputError as err:
            logger.info("%s: no %d-view fit (%s)", source.root, views, err)
            continue
        if split.test_ids:
            write_split(target, views, split, "degrade")
    for stale in set(load_scene(target).splits) - set(config.views):
        (target / f"train_test_split_{stale}.json").unlink()


def plan_fits(config: DegradeConfig) -> list[PlannedFit]:
    """Every (scene copy, views) fit, view count first; scenes too small for a count are left out of it."""
    check(config)
    copies = [copy_scene(scene, config) for scene in find_scenes(config.scenes)]
    if config.arc_degrees > 0:
        arcs = [arc for copy in copies if (arc := arc_copy(copy, config)) is not None]
        copies = arcs if config.arcs_only else copies + arcs
    splits = {copy: load_scene(copy).splits for copy in copies}
    fits = [PlannedFit(copy, views, fit_folder(config.out, copy.name, views))
            for views in config.views for copy in copies if views in splits[copy]]  # fmt: skip
    if not fits:
        raise InputError(f"{' '.join(map(str, config.scenes))}: no scene has enough views for a fit on "
                         f"{' or '.join(map(str, config.views))} views with a view held out; pass fewer --views")  # fmt: skip
    return fits


def check(config: DegradeConfig) -> None:
    """InputError naming the option and the fix for settings that cannot work."""
    if not config.stops or min(config.stops) < 1:
        raise InputError(f"--stops {' '.join(map(str, config.stops))}: give one or more positive step counts")
    if not config.views or min(config.views) < 1:
        raise InputError(f"--views {' '.join(map(str, config.views))}: give one or more positive view counts")
    for name in ("max_held_out", "jobs"):
        if getattr(config, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} {getattr(config, name)}: must be 1 or more")
    if not 0 <= config.arc_degrees < ORBIT_ANGLE_DEGREES:
        raise InputError(f"--arc-degrees {config.arc_degrees}: give an angle in [0, {ORBIT_ANGLE_DEGREES:g}) (0: no "
                         "arcs; a wider arc is a 360-degree capture)")  # fmt: skip
    if config.arcs_only and not config.arc_degrees:
        raise InputError("--arcs-only fits the forward-facing arcs only: give their width with --arc-degrees, e.g. 15")
    if config.max_side < 8:
        raise InputError(f"--max-side {config.max_side}: must be at least 8 pixels")


def fit_command(fit: PlannedFit, config: DegradeConfig) -> list[str]:
    return [sys.executable, "-m", "nerfstudio_plugin.degrade", str(fit.scene), str(fit.folder), "--views",
            str(fit.views), "--stops", *map(str, config.stops), "--seed", str(config.seed)]  # fmt: skip


def run_degrade(config: DegradeConfig) -> dict:
    """Plan, run the unfinished fits, and write CORPUS/corpus.json; returns its contents."""
    from reconfusion_benchmark.runner import child_environment, run_child
    from reconfusion_benchmark.runs import BenchmarkConfig
    from reconfusion_benchmark.sweep import SweepProgress

    out = Path(config.out)
    fits = plan_fits(config)
    unfinished = [fit for fit in fits if not fit.done]
    pending = [] if config.report_only else unfinished
    for fit in pending:  # what a killed run left half-written (finished fits are renamed into place whole)
        for stale in fit.folder.parent.glob(f".{fit.folder.name}.*.partial"):
            shutil.rmtree(stale, ignore_errors=True)
    logger.info("%s: %d fits planned over %d scenes, %d finished, %d to run (%d at a time)", out, len(fits),
                len({f.scene for f in fits}), len(fits) - len(unfinished), len(pending), config.jobs)  # fmt: skip
    env = child_environment(BenchmarkConfig(threads=1), "cpu")
    failed: list[PlannedFit] = []
    start, made = time.monotonic(), [0]

    def attempt(fit: PlannedFit) -> None:
        with progress.counting():
            log = out / "logs" / f"{fit.scene.name}_{fit.views}-views.log"
            result = run_child(fit_command(fit, config), log, env)
            if result.returncode != 0 or not fit.done:
                failed.append(fit)
                logger.error("%s: the fit failed (exit %d); see %s", fit.folder, result.returncode, log)
                return
            meta = read_json(fit.folder / FIT_FILE)
            made[0] += len(meta["held_out_ids"]) * len(meta["stops"])
            hours = (time.monotonic() - start) / 3600
            logger.info("%s: %d held-out views x %d stops, PSNR %s, %.0f s; %d examples made, %.0f per hour",
                        fit.folder, len(meta["held_out_ids"]), len(meta["stops"]), meta["psnr_at_stop"],
                        meta["seconds"], made[0], made[0] / max(hours, 1e-9))  # fmt: skip

    progress = SweepProgress(len(pending), label="degrade", unit="fits")
    with progress, ThreadPoolExecutor(max_workers=max(config.jobs, 1)) as pool:
        list(pool.map(attempt, pending))
    summary = summarise(config, fits)
    write_json(out / CORPUS_FILE, summary)
    logger.info("%s: %d fits finished, %d examples from %d scenes, %.2f CPU-hours in the fits, %.0f examples per "
                "CPU-hour", out / CORPUS_FILE, summary["fits_finished"], summary["examples"], summary["scenes"],
                summary["cpu_hours"], summary["examples_per_cpu_hour"])  # fmt: skip
    if config.report is not None:
        logger.info("report: %s", write_report(out, config.report, config.report.with_suffix(".png")))
    if failed:
        raise InputError(f"{len(failed)} of {len(pending)} fits failed (first: {failed[0].folder}, see "
                         f"{out / 'logs'}); the others are saved - run the same command again to retry")  # fmt: skip
    return summary


def summarise(config: DegradeConfig, fits: list[PlannedFit]) -> dict:
    """corpus.json: the command, and per finished fit its scene, views, examples, seconds and PSNR per stop."""
    finished = [{"scene": fit.scene.name, "views": fit.views, **_fit_summary(read_json(fit.folder / FIT_FILE))}
                for fit in fits if fit.done]  # fmt: skip
    seconds = sum(f["seconds"] for f in finished)
    examples = sum(f["examples"] for f in finished)
    return {
        "command": command_line(config),
        "settings": {k: (list(map(str, v)) if k == "scenes" else (str(v) if isinstance(v, Path) else v))
                     for k, v in asdict(config).items()},  # fmt: skip
        "fits_planned": len(fits), "fits_finished": len(finished), "scenes": len({f["scene"] for f in finished}),
        "examples": examples, "cpu_hours": round(seconds / 3600, 3),  # of the fits' processes, start-up included
        "examples_per_cpu_hour": round(examples / max(seconds / 3600, 1e-9), 1),
        "written": datetime.now().astimezone().isoformat(timespec="seconds"),
        "fits": finished,
    }  # fmt: skip


def _fit_summary(meta: dict) -> dict:
    return {"examples": len(meta["held_out_ids"]) * len(meta["stops"]), "seconds": meta["cpu_seconds"],
            "psnr_at_stop": meta["psnr_at_stop"]}  # fmt: skip


def command_line(config: DegradeConfig) -> str:
    defaults = DegradeConfig(scenes=())
    words = ["reconfusion", "data", "degrade", "--scenes", *map(str, config.scenes), "--out", str(config.out)]
    for name in ("views", "stops", "max_side", "max_held_out", "jobs", "seed", "arc_degrees"):
        value = getattr(config, name)
        if value != getattr(defaults, name):
            words += [f"--{name.replace('_', '-')}", *(map(str, value) if isinstance(value, tuple) else [str(value)])]
    if config.arcs_only:
        words.append("--arcs-only")
    return shlex.join(words)



def source_of(scene: Path) -> str:
    """What a corpus scene was made from: the import's format, a rendered mesh, a procedural scene, or "scene"."""
    from reconfusion_benchmark.runner import IMPORT_KEY, MESH_KEY, SYNTHETIC_KEY

    meta = read_json(Path(scene) / "transforms.json")
    if ARC_KEY in meta:
        return source_of(Path(scene).parent / meta[ARC_KEY]["of"]) + ", forward-facing arc"
    if IMPORT_KEY in meta:
        return f"{meta[IMPORT_KEY].get('format', 'imported')} import"
    return "rendered mesh" if MESH_KEY in meta else "procedural" if SYNTHETIC_KEY in meta else "scene"


def write_report(corpus: Path, report: Path, sheet: Path, scenes_shown: int = 6) -> Path:
    """Markdown: the command, throughput, examples per source and per stop (mean PSNR of the renderings), and a
    contact sheet of the first fits of a few scenes (rows: rendering at the first stop | at the last | photograph)."""
    from reconfusion.corpus import read_corpus

    summary = read_json(Path(corpus) / CORPUS_FILE)
    fits = read_corpus(corpus)
    rows: dict[tuple[str, int], list] = {}
    entries = {(entry["scene"], entry["views"]): entry for entry in summary["fits"]}
    for fit in fits:
        entry = entries.get((fit.scene.root.name, fit.views))
        if entry is None:  # a fit the command that wrote corpus.json did not plan
            continue
        rows.setdefault((source_of(fit.scene.root), fit.views), []).append((fit, entry))
    lines = [f"# The degraded-rendering corpus\n\nWritten by `{summary['command']} --report {report}` "
             f"({summary['written']}).\n",
             f"{summary['fits_finished']} of {summary['fits_planned']} planned fits finished: **{summary['examples']} "
             f"examples from {summary['scenes']} scenes**, {summary['cpu_hours']:.2f} CPU-hours in the fits' processes "
             f"(start-up included), **{summary['examples_per_cpu_hour']:.0f} examples per CPU-hour**. An example is one "
             "held-out view rendered at one stop, with its depth, beside its photograph; the observed views are the "
             "fit's training views.\n",
             "| source | views | fits | examples | " + " | ".join(f"PSNR at {s}" for s in summary["settings"]["stops"]) + " |",
             "|---|---|---|---|" + "---|" * len(summary["settings"]["stops"])]  # fmt: skip
    for (source, views), members in sorted(rows.items()):
        psnrs = [np.mean([e["psnr_at_stop"][str(s)] for _, e in members]) for s in summary["settings"]["stops"]]
        lines.append(f"| {source} | {views} | {len(members)} | {sum(e['examples'] for _, e in members)} | "
                     + " | ".join(f"{p:.2f}" for p in psnrs) + " |")  # fmt: skip
    lines.append(f"\nPSNR: mean over a fit's held-out views of the rendering against the photograph. Contact sheet "
                 f"(`{sheet.name}`; each row one held-out view of one scene: rendering after the first stop | after the "
                 f"last | photograph):\n\n![contact sheet]({sheet.name})\n")  # fmt: skip
    _contact_sheet(fits, sheet, scenes_shown)
    from reconfusion.files import write_text

    write_text(report, "\n".join(lines))
    return report


def _contact_sheet(fits, sheet: Path, scenes_shown: int) -> None:
    from PIL import Image

    from reconfusion.files import write_image

    first_of_scene = list({fit.scene.root: fit for fit in reversed(fits)}.values())[::-1]
    step = max(1, len(first_of_scene) // scenes_shown)
    tiles = []
    for fit in first_of_scene[::step][:scenes_shown]:
        view = fit.held_out_ids[len(fit.held_out_ids) // 2]
        early, late = (fit.rendering(stop, view)[0] for stop in (fit.stops[0], fit.stops[-1]))
        row = [early, late, fit.scene.image(view)]
        row = [np.asarray(Image.fromarray((im * 255 + 0.5).astype(np.uint8)).resize((128, 128 * im.shape[0] // im.shape[1])),
                          np.float32) / 255 for im in row]  # fmt: skip
        tiles.append(np.concatenate(row, axis=1))
    width = max(t.shape[1] for t in tiles)
    padded = [np.pad(t, ((0, 2), (0, width - t.shape[1]), (0, 0)), constant_values=1.0) for t in tiles]
    write_image(sheet, np.concatenate(padded, axis=0))
