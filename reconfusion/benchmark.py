"""The benchmark: fit and evaluate every (scene, views, method) with nerfstudio, then report.

Each run is two subprocesses, ``ns-train`` then ``ns-eval`` (this module never imports nerfstudio;
separate processes also isolate the runs and give each its own peak memory). A finished run leaves
``OUT/runs/SCENE/N-views/METHOD/result.json``; runs with one are skipped, so a benchmark that was
stopped continues where it was. ``--shard i/n`` runs the i-th of n contiguous slices of the run list
(a SLURM job array with n = number of scenes runs one scene per task); ``--merge`` writes the report
from the results of all shards (in OUT, or copied in from other output folders).

Which nerfstudio command a benchmark method runs is one small table, :data:`METHODS`: the sample-loss
modes of issue 7 are the ``reconfusion`` method with a mode flag.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shlex
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from reconfusion.files import InputError, read_json, write_json

logger = logging.getLogger("reconfusion")

MODE_FLAG = "--pipeline.model.sample-loss.mode"
PRIOR_FLAG = "--pipeline.model.prior"


@dataclass(frozen=True)
class MethodCommand:
    """How one benchmark method is run by nerfstudio."""

    cpu: str
    """ns-train method of the CPU preset."""
    gpu: str
    """ns-train method of the GPU preset."""
    uses_prior: bool
    """Whether the method loads the diffusion prior (then ``--prior`` is passed on)."""
    flags: tuple[str, ...] = ()
    """Extra ns-train arguments."""


METHODS: dict[str, MethodCommand] = {
    "baseline": MethodCommand("reconfusion-baseline-cpu", "reconfusion-baseline", uses_prior=False),
    "reconfusion": MethodCommand("reconfusion-cpu", "reconfusion", uses_prior=True),
    "sds": MethodCommand("reconfusion-cpu", "reconfusion", True, (MODE_FLAG, "sds")),
    "multistep": MethodCommand("reconfusion-cpu", "reconfusion", True, (MODE_FLAG, "multistep")),
    "annealed-multistep": MethodCommand("reconfusion-cpu", "reconfusion", True, (MODE_FLAG, "annealed-multistep")),
}
"""Benchmark method -> nerfstudio command. The report lists methods in this order."""


@dataclass(frozen=True)
class BenchmarkConfig:
    """What to run and where: the options of ``reconfusion benchmark``."""

    scenes: tuple[Path, ...] = ()
    """Scene folders (transforms.json + train_test_split_{N}.json); their folder names must differ."""
    views: tuple[int, ...] = (3, 6, 9)
    """Numbers of training views (one split file each)."""
    methods: tuple[str, ...] = ("baseline", "reconfusion")
    """baseline, reconfusion, and the sample-loss modes sds, multistep, annealed-multistep."""
    out: Path = Path("outputs/benchmark")
    """Output folder: runs/ (one folder per fit; finished fits are skipped when the command is rerun),
    results.csv, results.json, the report and its figures."""
    preset: Literal["auto", "cpu", "gpu"] = "auto"
    """nerfstudio methods sized for a CPU or a GPU; auto: gpu where CUDA is available."""
    iterations: Optional[int] = None
    """Training iterations per fit (default: the method's own)."""
    prior: str = "bundled"
    """Prior for the methods that use one: a folder, a hub id, or "bundled"."""
    shard: Optional[str] = None
    """i/n: run only the i-th (from 0) of n contiguous slices of the runs (e.g. $SLURM_ARRAY_TASK_ID/n)."""
    merge: bool = False
    """Run nothing; write the report from the finished runs in --out (and --merge-from)."""
    merge_from: tuple[Path, ...] = ()
    """With --merge: output folders of shards run elsewhere, whose finished runs are copied into --out."""
    max_side: Optional[int] = None
    """Fit a copy of every scene whose longer image side exceeds this, downscaled to it (area average)."""
    max_test_views: Optional[int] = None
    """Score at most this many test views per split (evenly strided), on a copy of the scene."""
    report: Optional[Path] = None
    """Markdown report to write (default: OUT/BENCHMARKS.md)."""
    figures: Optional[Path] = None
    """Folder for the report's plots and grids (default: OUT/figures)."""
    title: str = "Benchmark"
    """Heading of the report."""
    keep_checkpoints: bool = False
    """Keep the nerfstudio checkpoints (deleted after evaluation by default)."""
    jobs: int = 1
    """Fits run at the same time, each its own ns-train process (e.g. 2 on a 2-core CPU with 1 thread each)."""
    ns_train_args: str = ""
    """More ns-train arguments for every fit, e.g. "--pipeline.model.sample-loss.refresh-every 10" (pass it as
    --ns-train-args="..."); part of each run's settings, so runs with other arguments need another --out."""
    threads: Optional[int] = None
    """CPU threads per fit (OMP_NUM_THREADS); default 1 on the cpu preset (measured faster when processes share
    the cores), torch's default on the gpu preset."""


def command_line(config: BenchmarkConfig) -> str:
    """The ``reconfusion benchmark`` command equivalent to ``config`` (options left at their default omitted)."""
    words = ["reconfusion", "benchmark"]
    defaults = BenchmarkConfig()
    for item in dataclasses.fields(BenchmarkConfig):
        value = getattr(config, item.name)
        if value == getattr(defaults, item.name) and item.name not in ("views", "methods", "out"):
            continue
        flag = "--" + item.name.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else f"--no-{flag[2:]}")
        elif isinstance(value, tuple):
            words += [flag, *(shlex.quote(str(v)) for v in value)]
        elif isinstance(value, str) and value.startswith("-"):
            words.append(f"{flag}={shlex.quote(value)}")  # a separate word starting with - would read as an option
        else:
            words += [flag, shlex.quote(str(value))]
    return " ".join(words)


@dataclass(frozen=True)
class Run:
    """One (scene, views, method) fit."""

    scene: Path
    """Scene folder as given."""
    views: int
    """Number of training views (the split file)."""
    method: str
    """Benchmark method (a key of METHODS)."""

    @property
    def name(self) -> str:
        return self.scene.name

    def folder(self, out: Path) -> Path:
        return Path(out) / "runs" / self.name / f"{self.views}-views" / self.method


@dataclass(frozen=True)
class RunResult:
    """What a finished run reports (one row of results.csv)."""

    scene: str
    """Scene folder name."""
    group: str
    """Kind of scene (procedural object-360, llff, blender, ...): the report averages within a group."""
    views: int
    """Number of training views."""
    method: str
    """Benchmark method."""
    psnr: float
    """Mean test PSNR (dB)."""
    ssim: float
    """Mean test SSIM."""
    lpips: float
    """Mean test LPIPS (see lpips_backend)."""
    lpips_backend: str
    """Which LPIPS network (values of different backends are not comparable)."""
    fit_seconds: float
    """Wall-clock of ns-train."""
    eval_seconds: float
    """Wall-clock of ns-eval (rendering and scoring the test views)."""
    peak_rss_mb: float
    """Peak resident memory of the ns-train process tree (MiB)."""
    peak_gpu_mb: Optional[float]
    """Peak CUDA memory where the method reports it (None otherwise)."""
    resolution: str
    """Image size fitted, WIDTHxHEIGHT."""
    test_views: int
    """Number of test views scored."""
    iterations: int
    """Training iterations."""
    settings: dict = field(default_factory=dict)
    """What determines the run (ns-train method, flags, iterations, prior, scene preparation); a resumed
    benchmark refuses to mix runs made with different settings."""
    source: dict = field(default_factory=dict)
    """How the scene was made (generator settings or import source), for the report's data commands."""
    machine: str = ""
    """Where it ran (CPU model and cores, GPU)."""
    psnr_masked: Optional[float] = None
    """Mean test PSNR inside the object mask (both images multiplied by it; scenes with alpha only)."""
    ssim_masked: Optional[float] = None
    """Mean test SSIM inside the object mask."""
    lpips_masked: Optional[float] = None
    """Mean test LPIPS inside the object mask."""
    concurrency: str = ""
    """How fits shared the machine ("2 jobs x 1 thread"): fit_seconds depend on it."""
    finished: str = ""
    """When it finished (ISO 8601)."""


def group_key(group: str) -> tuple[bool, str]:
    """Report order of scene groups: procedural scenes (what the bundled prior targets) first."""
    return (not group.startswith("procedural"), group)


def parse_shard(text: Optional[str]) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n; None -> (0, 1)."""
    if text is None:
        return 0, 1
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise InputError(f"--shard {text}: expected i/n with integers, e.g. --shard 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise InputError(f"--shard {text}: need 0 <= i < n (shards are numbered from 0, e.g. $SLURM_ARRAY_TASK_ID/n)")
    return index, count


def plan_runs(scenes: Sequence[Path], views: Sequence[int], methods: Sequence[str]) -> list[Run]:
    """Every (scene, views, method) in command-line order: scene-major, then views, then methods."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise InputError(f"--methods {' '.join(unknown)}: unknown; choose from {', '.join(METHODS)}")
    unique = lambda values: list(dict.fromkeys(values))  # noqa: E731 - order-preserving dedupe
    scenes = unique(Path(s) for s in scenes)
    names = [s.name for s in scenes]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"--scenes: several scene folders are named {repeated[0]}; results are keyed by folder name")
    return [Run(s, v, m) for s in scenes for v in unique(views) for m in unique(methods)]


def shard_runs(runs: Sequence[Run], index: int, count: int) -> list[Run]:
    """The ``index``-th of ``count`` contiguous slices (slice sizes differ by at most one)."""
    start, stop = (len(runs) * index) // count, (len(runs) * (index + 1)) // count
    return list(runs[start:stop])


def read_result(path: Path) -> RunResult:
    payload = read_json(path)
    names = {f.name for f in dataclasses.fields(RunResult)}
    try:
        return RunResult(**{k: v for k, v in payload.items() if k in names})
    except TypeError as err:
        raise InputError(f"{path}: not a benchmark result ({err}); delete it to run that fit again") from err


def finished_result(run: Run, out: Path, settings: dict) -> Optional[RunResult]:
    """The run's result when it has finished with these settings; None when it has not run yet."""
    path = run.folder(out) / "result.json"
    if not path.is_file():
        return None
    result = read_result(path)
    if result.settings != settings:
        changed = sorted(k for k in set(settings) | set(result.settings) if settings.get(k) != result.settings.get(k))
        raise InputError(
            f"{path}: finished with other settings ({', '.join(changed)}); use another --out, or delete "
            f"{run.folder(out)} to fit it again"
        )
    return result


FitFn = Callable[[Run, BenchmarkConfig, dict], RunResult]
"""Fits and evaluates one run and returns its result (the benchmark writes result.json)."""


def run_benchmark(config: BenchmarkConfig, fit: Optional[FitFn] = None) -> list[RunResult]:
    """Run (or merge) the benchmark; returns the results the report covers. ``fit`` defaults to nerfstudio.

    The command is recorded in OUT/commands.json once its arguments are valid (before the fits start),
    so the report lists it even while it is still running elsewhere.
    """
    from reconfusion import benchmark_report

    out = Path(config.out)
    if config.merge:
        results = merge_results(config)
        benchmark_report.record_command(out, config)
    else:
        if not config.scenes:
            raise InputError("--scenes: give at least one scene folder (transforms.json + train_test_split_N.json)")
        parse_shard(config.shard)
        plan_runs(config.scenes, config.views, config.methods)
        out.mkdir(parents=True, exist_ok=True)
        benchmark_report.record_command(out, config)
        results = _run_all(config, fit)
        if parse_shard(config.shard)[1] > 1:
            logger.info("shard %s done (%d runs); write the report with --merge", config.shard, len(results))
            return results
    report = benchmark_report.write_report(results, config)
    logger.info("report: %s", report)
    return results


def _run_all(config: BenchmarkConfig, fit: Optional[FitFn]) -> list[RunResult]:
    """Fit the runs of this shard that have not finished, ``config.jobs`` at a time, in plan order."""
    from reconfusion import benchmark_runner

    runs = shard_runs(plan_runs(config.scenes, config.views, config.methods), *parse_shard(config.shard))
    preset = benchmark_runner.resolve_preset(config.preset)
    settings = [benchmark_runner.run_settings(run, config, preset) for run in runs]
    results: list[Optional[RunResult]] = [finished_result(run, config.out, s) for run, s in zip(runs, settings)]
    pending = [i for i, result in enumerate(results) if result is None]
    logger.info("%d runs: %d finished before (skipped), %d to fit", len(runs), len(runs) - len(pending), len(pending))
    if fit is None:
        fit = benchmark_runner.fit_and_evaluate
        for scene in dict.fromkeys(runs[i].scene for i in pending):  # scene copies made once, before any fit
            benchmark_runner.prepare_scene(scene, config)

    progress = SweepProgress(len(pending))

    def attempt(index: int) -> Optional[RunResult]:
        with progress.counting():
            return fit_one(index)

    def fit_one(index: int) -> Optional[RunResult]:
        run = runs[index]
        logger.info("%s %d views %s: fitting", run.name, run.views, run.method)
        try:
            result = fit(run, config, settings[index])
        except benchmark_runner.RunFailed as err:
            logger.error("%s", err)
            return None
        write_json(run.folder(config.out) / "result.json", dataclasses.asdict(result))
        logger.info("%s %d views %s: PSNR %.2f  SSIM %.3f  LPIPS %.3f  fit %.0f s  peak %.0f MiB",
                    run.name, run.views, run.method, result.psnr, result.ssim, result.lpips,
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

    def __init__(self, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

        self.total, self.done, self.start = total, 0, time.monotonic()
        self.lock = threading.Lock()
        self.bar = Progress("benchmark", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), "ETA",
                            TimeRemainingColumn())  # fmt: skip
        self.task = self.bar.add_task("runs", total=total)

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
            logger.info("progress: %d/%d runs done, %s elapsed, ETA %s", self.done, self.total,
                        _clock(elapsed), _clock(remaining))  # fmt: skip


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def merge_results(config: BenchmarkConfig) -> list[RunResult]:
    """Copy finished runs of ``merge_from`` into OUT, then read every result in OUT (filtered to the
    requested scenes / views / methods where given)."""
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
    ]  # fmt: skip
    if not keep:
        raise InputError(f"{out}: no finished runs to merge; run the shards with --out {out} (or pass --merge-from)")
    return keep

