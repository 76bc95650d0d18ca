"""What a benchmark is: its configuration, the runs it plans and their results (the package's bottom layer).

A finished run leaves ``OUT/runs/SCENE/N-views/METHOD/result.json``; runs with one are skipped, so a
benchmark that was stopped continues where it was. ``--shard i/n`` runs the i-th of n contiguous slices
of the run list. Which nerfstudio command a benchmark method runs is one small table, :data:`METHODS`:
the sample-loss modes are the ``reconfusion`` method with a mode flag.
"""

from __future__ import annotations

import dataclasses
import logging
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from reconfusion.files import InputError, read_json
from reconfusion.scene import scene_root

logger = logging.getLogger("reconfusion")

MODE_FLAG = "--pipeline.model.sample-loss.mode"
ADAPT_FLAG = "--pipeline.model.prior-adaptation.steps"
ADAPTATION_STEPS = 20
"""Scene-adaptation steps of the reconfusion-adapted method (a repairing prior fine-tuned on the scene's views)."""
PRIOR_FLAG = "--pipeline.model.prior"
SEED_FLAG = "--machine.seed"
DEFAULT_SEED = 42
"""nerfstudio's default --machine.seed: runs at this seed keep the folder and settings they had before
--seeds existed, so earlier results still count."""


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
    "reconfusion-adapted": MethodCommand("reconfusion-cpu", "reconfusion", True, (ADAPT_FLAG, str(ADAPTATION_STEPS))),
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
    """baseline, reconfusion, reconfusion-adapted (a repairing prior adapted to the scene first), and the sample-loss
    modes sds, multistep, annealed-multistep."""
    seeds: tuple[int, ...] = (DEFAULT_SEED,)
    """nerfstudio seeds (--machine.seed): every (scene, views, method) is fitted once per seed, and the
    report pairs each method with the baseline of the same seed."""
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
    readme: Optional[Path] = None
    """Also write the headline table (real scenes, baseline against reconfusion) into this Markdown file,
    between its <!-- benchmark-headline:start --> and <!-- benchmark-headline:end --> lines."""
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
    """One (scene, views, method, seed) fit."""

    scene: Path
    """Scene folder as given."""
    views: int
    """Number of training views (the split file)."""
    method: str
    """Benchmark method (a key of METHODS)."""
    seed: int = DEFAULT_SEED
    """nerfstudio's --machine.seed."""

    @property
    def name(self) -> str:
        return self.scene.name

    @property
    def label(self) -> str:
        """How the log names the run."""
        seed = "" if self.seed == DEFAULT_SEED else f" seed {self.seed}"
        return f"{self.name} {self.views} views {self.method}{seed}"

    def folder(self, out: Path) -> Path:
        return run_folder(out, self.name, self.views, self.method, self.seed)


def run_folder(out: Path, scene: str, views: int, method: str, seed: int = DEFAULT_SEED) -> Path:
    """OUT/runs/SCENE/N-views/METHOD, with -seedS appended for seeds other than the default."""
    suffix = "" if seed == DEFAULT_SEED else f"-seed{seed}"
    return Path(out) / "runs" / scene / f"{views}-views" / f"{method}{suffix}"


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
    sample_taught: Optional[float] = None
    """Methods with a sample loss: the fraction of the novel views drawn that taught (the rest were stopped by
    the coverage gate or the check against the photographs), over the fit's logged steps."""
    concurrency: str = ""
    """How fits shared the machine ("2 jobs x 1 thread"): fit_seconds depend on it."""
    finished: str = ""
    """When it finished (ISO 8601)."""
    seed: int = DEFAULT_SEED
    """nerfstudio's --machine.seed (results written before --seeds existed were fitted with the default)."""


def runs_by_scene(results: Sequence[RunResult]) -> dict[tuple[str, int, str], dict[str, list[RunResult]]]:
    """(group, views, method) -> scene -> its runs (one per seed): what means over scenes average over."""
    cells: dict[tuple[str, int, str], dict[str, list[RunResult]]] = {}
    for r in results:
        cells.setdefault((r.group, r.views, r.method), {}).setdefault(r.scene, []).append(r)
    return cells


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


def plan_runs(
    scenes: Sequence[Path], views: Sequence[int], methods: Sequence[str], seeds: Sequence[int] = (DEFAULT_SEED,)
) -> list[Run]:
    """Every (scene, views, seed, method) in command-line order: scene-major, then views, seeds, methods (so a
    method and the baseline it is paired with are fitted one after the other)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise InputError(f"--methods {' '.join(unknown)}: unknown; choose from {', '.join(METHODS)}")
    unique = lambda values: list(dict.fromkeys(values))  # noqa: E731 - order-preserving dedupe
    scenes = unique(scene_root(s) for s in scenes)
    names = [s.name for s in scenes]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"--scenes: several scene folders are named {repeated[0]}; results are keyed by folder name")
    if not seeds:
        raise InputError("--seeds: give at least one seed (nerfstudio's default is 42)")
    if not views or min(views) < 1:
        raise InputError(f"--views {' '.join(map(str, views))}: give numbers of input views of at least 1, e.g. --views 3 6 9")
    return [Run(s, v, m, seed) for s in scenes for v in unique(views) for seed in unique(seeds) for m in unique(methods)]


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


