"""One benchmark run: prepare the scene, ``ns-train``, ``ns-eval``, collect metrics, time and memory.

nerfstudio runs as child processes (never imported here). Peak memory is the high-water mark of the
child's resident set (polled, see :func:`run_child`), so every run gets its own number even though runs
follow each other in one benchmark process.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from reconfusion_benchmark.runs import DEFAULT_SEED, METHODS, PRIOR_FLAG, SEED_FLAG, BenchmarkConfig, Run, RunResult
from reconfusion.files import InputError, read_json, read_scalars

logger = logging.getLogger("reconfusion")

IMPORT_KEY = "reconfusion_import"
"""transforms.json key where `reconfusion data import` records the source format."""
SYNTHETIC_KEY = "synthetic"
"""transforms.json key where `reconfusion data synthetic` records the generator's settings."""
MESH_KEY = "mesh_render"
"""transforms.json key where `reconfusion data render-meshes` records the mesh and its licence."""
PREPARED_KEY = "reconfusion_benchmark_copy"
"""transforms.json key of a scene copy made by the benchmark (downscaled and/or fewer test views)."""
NS_EXPERIMENT, NS_TIMESTAMP = "fit", "run"
GPU_MEMORY_TAG = "GPU Memory (MB)"
"""The tensorboard scalar where nerfstudio's trainer logs torch.cuda.max_memory_allocated."""
TAUGHT_TAG = "Train Metrics Dict/sample_taught"
"""The tensorboard scalar where the reconfusion model logs the fraction of novel views that taught."""
RENDER_PREFIX = "eval_img_"
"""ns-eval writes each test view as eval_img_XXXX.png: ground truth | rendering, side by side."""


class RunFailed(RuntimeError):
    """ns-train or ns-eval exited with an error (the message holds the log's last lines)."""


@dataclass(frozen=True)
class ChildResult:
    """How a child process ended."""

    returncode: int
    """Exit status (negative: killed by that signal)."""
    seconds: float
    """Wall-clock."""
    peak_rss_mb: float
    """Peak resident set size of the child's process tree (MiB; polled, see :func:`tree_peak_mb`)."""


def resolve_preset(preset: Literal["auto", "cpu", "gpu"]) -> Literal["cpu", "gpu"]:
    if preset != "auto":
        return preset
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def ns_train_args(text: str) -> list[str]:
    """The words of --ns-train-args; InputError on unbalanced quotes and on a seed (--seeds sets it)."""
    try:
        words = shlex.split(text)
    except ValueError as err:
        raise InputError(f"--ns-train-args {text!r}: {err}; quote it as --ns-train-args=\"--flag value\"") from err
    if any(w == SEED_FLAG or w.startswith(f"{SEED_FLAG}=") for w in words):
        raise InputError(f"--ns-train-args {text!r}: {SEED_FLAG} is set by --seeds (which names the runs' folders); "
                         "pass --seeds N instead")  # fmt: skip
    return words


def run_settings(run: Run, config: BenchmarkConfig, preset: Literal["cpu", "gpu"]) -> dict:
    """Everything that decides a run's outcome besides the scene and the view count."""
    method = METHODS[run.method]
    seed = [] if run.seed == DEFAULT_SEED else [SEED_FLAG, str(run.seed)]  # the default leaves earlier settings as they were
    return {
        "ns_method": method.cpu if preset == "cpu" else method.gpu,
        "flags": [*method.flags, *seed, *ns_train_args(config.ns_train_args)],
        "iterations": config.iterations,
        "prior": config.prior if method.uses_prior else None,
        "max_side": config.max_side,
        "max_test_views": config.max_test_views,
    }


def script(name: str) -> str:
    """An entry-point script of this installation (next to the interpreter), else from PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        raise InputError(f"{name}: not found next to {sys.executable} nor on PATH; install nerfstudio (bash setup.sh)")
    return found


def child_environment(config: BenchmarkConfig, preset: Literal["cpu", "gpu"]) -> dict[str, str]:
    """Environment of ns-train / ns-eval: warnings off, OMP_NUM_THREADS from ``config.threads``."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    threads = config.threads if config.threads is not None else (1 if preset == "cpu" else None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def run_child(command: list[str], log: Path, env: Optional[dict] = None, poll_seconds: float = 0.2) -> ChildResult:
    """Run ``command`` with stdout and stderr into ``log``; wall-clock and peak memory of its process tree.

    Peak memory is polled (:func:`tree_peak_mb`) rather than taken from ``ru_maxrss``: a child's
    ``ru_maxrss`` starts at the parent's resident size at fork, which would count the benchmark itself.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    peak = 0.0
    with open(log, "w") as handle:
        handle.write(" ".join(command) + "\n\n")
        handle.flush()
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env or dict(os.environ))
        try:
            while process.poll() is None:
                time.sleep(poll_seconds)  # first: until the fork has exec'd, it shows the parent's memory
                peak = max(peak, tree_peak_mb(process.pid))
        except BaseException:
            process.kill()
            process.wait()
            raise
    return ChildResult(process.returncode, time.perf_counter() - start, peak)


def tree_peak_mb(pid: int) -> float:
    """Sum over a process and its descendants of their peak resident size so far (Linux VmHWM; elsewhere
    the current resident size), in MiB; 0 when the process is gone."""
    try:
        import psutil
    except ImportError:
        psutil = None
    pids = [pid]
    if psutil is not None:
        try:
            pids += [child.pid for child in psutil.Process(pid).children(recursive=True)]
        except psutil.Error:
            return 0.0
    total = 0.0
    for member in pids:
        try:
            status = Path(f"/proc/{member}/status").read_text()
            found = re.search(r"^VmHWM:\s+(\d+) kB", status, flags=re.MULTILINE)
            total += int(found.group(1)) / 1024 if found else 0.0
        except OSError:
            if psutil is not None:
                try:
                    total += psutil.Process(member).memory_info().rss / 2**20
                except psutil.Error:
                    pass
    return total


def describe_machine() -> str:
    """CPU model and cores, and the CUDA device if there is one (recorded with every result)."""
    cpu = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]  # fmt: skip
        cpu = names[0] if names else cpu
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cores} CPU cores ({cpu}), {gpu}"


def _tail(log: Path, lines: int = 25) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def ns_train_command(run: Run, scene: Path, settings: dict, folder: Path) -> list[str]:
    """The ns-train command line of a run; outputs go to ``folder/ns/fit/METHOD/run``."""
    command = [script("ns-train"), settings["ns_method"], *settings["flags"], "--data", str(scene),
               "--output-dir", str(folder / "ns"), "--experiment-name", NS_EXPERIMENT, "--timestamp", NS_TIMESTAMP,
               "--vis", "tensorboard", "--logging.local-writer.enable", "False"]  # fmt: skip
    if settings["iterations"] is not None:
        command += ["--max-num-iterations", str(settings["iterations"])]
    if settings["prior"] not in (None, "bundled"):
        command += [PRIOR_FLAG, str(settings["prior"])]
    return command + ["reconfusion-data", "--num-views", str(run.views)]


def fit_and_evaluate(run: Run, config: BenchmarkConfig, settings: dict) -> RunResult:
    """Fit one run with ns-train, score its test views with ns-eval; the renders stay in ``renders/``."""
    folder = run.folder(config.out)
    if folder.exists():  # an unfinished attempt (a finished one has result.json and is never refitted)
        shutil.rmtree(folder)
    scene = prepare_scene(run.scene, config)
    info = describe_scene(run.scene, scene, run.views)
    env = child_environment(config, "cpu" if settings["ns_method"] == METHODS[run.method].cpu else "gpu")
    train = run_child(ns_train_command(run, scene, settings, folder), folder / "train.log", env)
    if train.returncode != 0:
        raise RunFailed(f"{folder}: ns-train exited with {train.returncode}:\n{_tail(folder / 'train.log')}")
    ns_config = folder / "ns" / NS_EXPERIMENT / settings["ns_method"] / NS_TIMESTAMP / "config.yml"
    command = [script("ns-eval"), "--load-config", str(ns_config), "--output-path", str(folder / "eval.json"),
               "--render-output-path", str(folder / "renders")]  # fmt: skip
    evaluation = run_child(command, folder / "eval.log", env)
    if evaluation.returncode != 0:
        raise RunFailed(f"{folder}: ns-eval exited with {evaluation.returncode}:\n{_tail(folder / 'eval.log')}")
    metrics = read_json(folder / "eval.json")["results"]
    logged = {tag: values for tag, (_, values) in read_scalars(ns_config.parent, (GPU_MEMORY_TAG, TAUGHT_TAG)).items()}
    _tidy(folder, ns_config.parent, config.keep_checkpoints)
    return RunResult(
        scene=run.name, group=info.group, views=run.views, method=run.method, seed=run.seed,
        psnr=float(metrics["psnr"]), ssim=float(metrics["ssim"]), lpips=float(metrics.get("lpips", float("nan"))),
        lpips_backend=str(metrics.get("lpips_backend", "unknown")),
        fit_seconds=round(train.seconds, 2), eval_seconds=round(evaluation.seconds, 2),
        peak_rss_mb=round(train.peak_rss_mb, 1), peak_gpu_mb=_peak_gpu_mb(logged[GPU_MEMORY_TAG]),
        resolution=info.resolution, test_views=info.test_views, iterations=_iterations(ns_config), settings=settings,
        source=info.source, machine=describe_machine(),
        **{f"{k}_masked": float(metrics[f"{k}_masked"]) for k in ("psnr", "ssim", "lpips") if f"{k}_masked" in metrics},
        sample_taught=_taught(logged[TAUGHT_TAG]),
        concurrency=f"{config.jobs} jobs x {env.get('OMP_NUM_THREADS', 'default')} threads",
        finished=datetime.now().astimezone().isoformat(timespec="seconds"),
    )  # fmt: skip


def _tidy(folder: Path, ns_run: Path, keep_checkpoints: bool) -> None:
    """Keep only the colour renders (not depth / accumulation) and, unless asked, no checkpoints."""
    for render in (folder / "renders").glob("*.png"):
        if not render.name.startswith(RENDER_PREFIX):
            render.unlink()
    if not keep_checkpoints:
        shutil.rmtree(ns_run / "nerfstudio_models", ignore_errors=True)


def _iterations(ns_config: Path) -> int:
    found = re.search(r"^max_num_iterations: (\d+)", ns_config.read_text(), flags=re.MULTILINE)
    return int(found.group(1)) if found else -1


def _peak_gpu_mb(logged: list[float]) -> Optional[float]:
    """Peak CUDA memory of the fit: the largest "GPU Memory (MB)" scalar nerfstudio logged to tensorboard
    (torch.cuda.max_memory_allocated); None on a CPU or without event files."""
    return round(max(logged), 1) if logged and max(logged) > 0 else None


def _taught(logged: list[float]) -> Optional[float]:
    """Mean of the logged fraction of novel views that taught (None for methods without a sample loss)."""
    values = [v for v in logged if np.isfinite(v)]
    return round(float(np.mean(values)), 3) if values else None


# ------------------------------------------------------------------------------------------ scenes


@dataclass(frozen=True)
class SceneInfo:
    """What the report says about a fitted scene."""

    group: str
    """procedural LAYOUT, the import format (llff, blender, ...) or "scenes"."""
    resolution: str
    """WIDTHxHEIGHT of the fitted images ("mixed" if they differ)."""
    test_views: int
    """Test views of the split."""
    source: dict
    """How the original scene was made (to print the data commands in the report)."""


def describe_scene(original: Path, fitted: Path, views: int) -> SceneInfo:
    """Group and provenance of ``original`` (as given), size and test views of ``fitted`` (maybe a copy)."""
    from reconfusion.scene import load_scene

    given, loaded = load_scene(original), load_scene(fitted)
    meta = read_json(given.root / "transforms.json")
    if SYNTHETIC_KEY in meta:
        made = meta[SYNTHETIC_KEY]
        group = f"procedural {made.get('layout', '')}".strip()
        source = {"kind": "synthetic", "folder": str(Path(original).parent), "seed": made.get("seed"),
                  "layout": made.get("layout"), "views": len(given), "resolution": int(given.sizes.max())}  # fmt: skip
    elif IMPORT_KEY in meta:
        group = str(meta[IMPORT_KEY].get("format", "imported"))
        source = {"kind": "import", "scene": str(original), **meta[IMPORT_KEY]}
    else:
        group, source = "scenes", {"kind": "folder", "scene": str(original)}
    source["split_views"] = sorted(given.splits)
    if given.splits:
        first = given.root / f"train_test_split_{min(given.splits)}.json"
        source["split_protocol"] = read_json(first).get("protocol")
    sizes = {tuple(int(v) for v in size) for size in loaded.sizes}
    resolution = "x".join(map(str, next(iter(sizes)))) if len(sizes) == 1 else "mixed"
    return SceneInfo(group, resolution, len(loaded.split(views).test_ids), source)


def fewer_test_views(test_ids: tuple[int, ...], limit: Optional[int]) -> tuple[int, ...]:
    """At most ``limit`` test ids, evenly strided from the first (lego's 200 -> every 8th, 25)."""
    if limit is None or len(test_ids) <= limit:
        return tuple(test_ids)
    stride = -(-len(test_ids) // limit)
    return tuple(test_ids[::stride][:limit])


def prepare_scene(scene: Path, config: BenchmarkConfig) -> Path:
    """The scene to fit: the folder itself, or its copy in OUT/scenes (see :func:`scene_copy`)."""
    return scene_copy(scene, Path(config.out) / "scenes", config.max_side, config.max_test_views)


def scene_copy(scene: Path, folder: Path, max_side: Optional[int], max_test_views: Optional[int] = None) -> Path:
    """The scene folder itself, or a copy in ``folder`` downscaled to ``max_side`` and/or with at most
    ``max_test_views`` test views per split (made once, reused while its recipe matches)."""
    from reconfusion.scene import Split, load_scene, write_scene

    if max_side is not None and max_side < 0:
        raise InputError(f"--max-side {max_side}: must be 0 (full size) or more")
    loaded = load_scene(scene)
    longest = int(loaded.sizes.max())
    scale = max_side / longest if max_side and longest > max_side else 1.0
    splits = {n: Split(s.train_ids, fewer_test_views(s.test_ids, max_test_views)) for n, s in loaded.splits.items()}
    if scale == 1.0 and splits == loaded.splits:
        return Path(scene)
    recipe = {"from": str(loaded.root), "max_side": max_side, "max_test_views": max_test_views,
              "splits": {str(n): [list(s.train_ids), list(s.test_ids)] for n, s in sorted(splits.items())}}  # fmt: skip
    target = Path(folder) / loaded.root.name
    if (target / "transforms.json").is_file() and read_json(target / "transforms.json").get(PREPARED_KEY) == recipe:
        return target
    sizes = np.maximum(np.round(loaded.sizes * scale), 1).astype(np.int64)
    read = loaded.rgba if loaded.has_alpha else loaded.image
    images = [_resized(read(i), tuple(sizes[i])) for i in range(len(loaded))]
    factors = np.concatenate([sizes / loaded.sizes, sizes / loaded.sizes], axis=1)  # fx, fy, cx, cy
    extra = scene_extras(loaded)
    logger.info("%s: writing a copy at %s to fit (%s)", scene, "x".join(map(str, sizes[0])), target)
    write_scene(target, images, loaded.c2w, loaded.intrinsics * factors, sizes=sizes, distortion=loaded.distortion,
                splits=splits, points=loaded.points, extra={**extra, PREPARED_KEY: recipe}, overwrite=True)  # fmt: skip
    return target


def scene_extras(scene, frames: np.ndarray | None = None) -> dict:
    """What a copy of a loaded scene (of some of its ``frames``) keeps of its transforms.json beyond the frames:
    where it came from, its background and its depth bounds."""
    from reconfusion.scene import BACKGROUND_KEY, BOUNDS_KEY

    meta = read_json(scene.root / "transforms.json")
    extra = {k: meta[k] for k in (IMPORT_KEY, SYNTHETIC_KEY, MESH_KEY, BACKGROUND_KEY) if k in meta}
    if scene.bounds is not None:
        extra[BOUNDS_KEY] = (scene.bounds if frames is None else scene.bounds[frames]).tolist()
    return extra


def _resized(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-averaged resize of a float (H, W, 3) or RGBA (H, W, 4) image to ``size`` = (width, height);
    RGBA is averaged premultiplied, so edges keep their colour."""
    from PIL import Image

    if (image.shape[1], image.shape[0]) == size:
        return image
    channels = image.copy()
    if image.shape[-1] == 4:
        channels[..., :3] *= image[..., 3:]

    def resize(plane: np.ndarray) -> np.ndarray:
        pil = Image.fromarray(plane.astype(np.float32), mode="F")
        return np.asarray(pil.resize(size, Image.Resampling.BOX), dtype=np.float32)

    out = np.stack([resize(channels[..., c]) for c in range(image.shape[-1])], axis=-1)
    if image.shape[-1] == 4:
        out[..., :3] /= np.maximum(out[..., 3:], 1e-6)
    return np.clip(out, 0.0, 1.0)
