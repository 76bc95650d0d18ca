"""The sweep: fit and evaluate every (scene, views, method) with nerfstudio, then report.

Each run is two subprocesses, ``ns-train`` then ``ns-eval`` (this package never imports nerfstudio;
separate processes also isolate the runs and give each its own peak memory). Finished runs are skipped,
so a stopped sweep continues where it was; ``--merge`` writes the report from the results of all shards
(in OUT, or copied in from other output folders). ``--seeds`` repeats every run under each nerfstudio seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

from reconfusion.files import InputError, write_json
from reconfusion_benchmark import headline, report, runner
from reconfusion_benchmark.runs import (
    BenchmarkConfig, Run, RunResult, finished_result, parse_shard, plan_runs, read_result, shard_runs,
)  # fmt: skip

logger = logging.getLogger("reconfusion")

FitFn = Callable[[Run, BenchmarkConfig, dict], RunResult]
"""Fits and evaluates one run and returns its result (the benchmark writes result.json)."""


def run_benchmark(config: BenchmarkConfig, fit: Optional[FitFn] = None) -> list[RunResult]:
    """Run (or merge) the benchmark; returns the results the report covers. ``fit`` defaults to nerfstudio.

    The command is recorded in OUT/commands.json once its arguments are valid (before the fits start),
    so the report lists it even while it is still running elsewhere.
    """
    out = Path(config.out)
    if config.merge:
        results = merge_results(config)
        report.record_command(out, config)
    else:
        if not config.scenes:
            raise InputError("--scenes: give at least one scene folder (transforms.json + train_test_split_N.json)")
        parse_shard(config.shard)
        plan_runs(config.scenes, config.views, config.methods, config.seeds)
        results = _run_all(config, fit)
        if parse_shard(config.shard)[1] > 1:
            logger.info("shard %s done (%d runs); write the report with --merge", config.shard, len(results))
            return results
    written = report.write_report(results, config)
    logger.info("report: %s", written)
    if config.readme is not None:
        logger.info("headline table: %s", headline.update_readme(config.readme, results, written))
    return results


def check_splits(runs: list[Run]) -> None:
    """Every scene has a split file for every view count, before hours of fits rather than when its turn comes."""
    from reconfusion.scene import load_scene

    views = {}
    for run in runs:
        views.setdefault(run.scene, set()).add(run.views)
    for scene, counts in views.items():
        loaded = load_scene(scene)
        for count in sorted(counts):
            loaded.split(count)  # InputError naming the scene folder and the command that writes the split


def _run_all(config: BenchmarkConfig, fit: Optional[FitFn]) -> list[RunResult]:
    """Fit the runs of this shard that have not finished, ``config.jobs`` at a time, in plan order."""
    runs = shard_runs(plan_runs(config.scenes, config.views, config.methods, config.seeds), *parse_shard(config.shard))
    preset = runner.resolve_preset(config.preset)
    settings = [runner.run_settings(run, config, preset) for run in runs]
    results: list[Optional[RunResult]] = [finished_result(run, config.out, s) for run, s in zip(runs, settings)]
    pending = [i for i, result in enumerate(results) if result is None]
    logger.info("%d runs: %d finished before (skipped), %d to fit", len(runs), len(runs) - len(pending), len(pending))
    if fit is None:
        check_splits([runs[i] for i in pending])
    Path(config.out).mkdir(parents=True, exist_ok=True)
    report.record_command(Path(config.out), config)
    if fit is None:
        fit = runner.fit_and_evaluate
        for scene in dict.fromkeys(runs[i].scene for i in pending):  # scene copies made once, before any fit
            runner.prepare_scene(scene, config)

    progress = SweepProgress(len(pending))

    def attempt(index: int) -> Optional[RunResult]:
        with progress.counting():
            return fit_one(index)

    def fit_one(index: int) -> Optional[RunResult]:
        run = runs[index]
        logger.info("%s: fitting", run.label)
        try:
            result = fit(run, config, settings[index])
        except runner.RunFailed as err:
            logger.error("%s", err)
            return None
        write_json(run.folder(config.out) / "result.json", dataclasses.asdict(result))
        logger.info("%s: PSNR %.2f  SSIM %.3f  LPIPS %.3f  fit %.0f s  peak %.0f MiB", run.label,
                    result.psnr, result.ssim, result.lpips,
                    result.fit_seconds, result.peak_rss_mb)  # fmt: skip
        return result

    with progress, ThreadPoolExecutor(max_workers=max(config.jobs, 1)) as pool:  # each job waits on its subprocess
        for index, result in zip(pending, pool.map(attempt, pending)):
            results[index] = result
    failed = [runs[i] for i in pending if results[i] is None]
    if failed:
        raise InputError(
            f"{len(failed)} of {len(runs)} runs failed (first: {failed[0].folder(config.out)}, see its logs); "
            "the others are saved - run the same command again to retry the failed ones"
        )
    return [r for r in results if r is not None]


class SweepProgress:
    """Runs done / total with elapsed time and ETA: a rich bar on the terminal and a line in the log per run."""

    def __init__(self, total: int, label: str = "benchmark", unit: str = "runs") -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

        self.total, self.done, self.start = total, 0, time.monotonic()
        self.lock = threading.Lock()
        self.unit = unit
        self.bar = Progress(label, BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), "ETA",
                            TimeRemainingColumn())  # fmt: skip
        self.task = self.bar.add_task(unit, total=total)

    def __enter__(self) -> "SweepProgress":
        self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()

    @contextlib.contextmanager
    def counting(self):
        """Count the run done (finished or failed) when the block ends, and log the progress."""
        try:
            yield
        finally:
            with self.lock:
                self.done += 1
                elapsed = time.monotonic() - self.start
                remaining = elapsed / self.done * (self.total - self.done)
                self.bar.advance(self.task)
            logger.info("progress: %d/%d %s done, %s elapsed, ETA %s", self.done, self.total, self.unit,
                        _clock(elapsed), _clock(remaining))  # fmt: skip


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def merge_results(config: BenchmarkConfig) -> list[RunResult]:
    """Copy finished runs of ``merge_from`` into OUT, then read every result in OUT (filtered to the
    requested scenes / views / methods / seeds, and saying how many that leaves out)."""
    out = Path(config.out)
    for source in config.merge_from:
        if not (Path(source) / "runs").is_dir():
            raise InputError(f"{source}: no runs/ folder; --merge-from takes output folders of benchmark shards")
        for result in sorted((Path(source) / "runs").glob("*/*-views/*/result.json")):
            target = out / result.relative_to(source)
            if Path(source).resolve() != out.resolve() and not target.exists():
                shutil.copytree(result.parent, target.parent, dirs_exist_ok=True)
    results = [read_result(p) for p in sorted((out / "runs").glob("*/*-views/*/result.json"))]
    names = {Path(s).name for s in config.scenes}
    keep = [
        r for r in results
        if (not names or r.scene in names) and r.views in config.views and r.method in config.methods
        and r.seed in config.seeds
    ]  # fmt: skip
    if not keep:
        raise InputError(f"{out}: no finished runs to merge; run the shards with --out {out} (or pass --merge-from)")
    if len(keep) < len(results):
        logger.info("%d finished runs in %s left out: not among --scenes / --views / --methods / --seeds (seeds there: %s)",
                    len(results) - len(keep), out, " ".join(str(s) for s in sorted({r.seed for r in results})))  # fmt: skip
    return keep

