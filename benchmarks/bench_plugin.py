"""Wall-clock of ``ns-train reconfusion-cpu`` against ``reconfusion-baseline-cpu``, and their test PSNRs.

One procedural scene at 64x64 with 3 training views, the same number of iterations for both methods,
each run as its own ns-train process (then ns-eval). Prints a Markdown table: wall-clock, seconds per
training iteration (nerfstudio's profiler), test PSNR / SSIM / LPIPS, and the ratio reconfusion /
baseline (issue 5 asks for at most 1.5 with the default refresh). The CPU-seconds columns (user + system
time of each ns-train process) are the steadier comparison on a machine shared with other work.

    .venv/bin/python benchmarks/bench_plugin.py --iterations 300
    .venv/bin/python benchmarks/bench_plugin.py --iterations 300 --refresh 1 10 25 50
    .venv/bin/python benchmarks/bench_plugin.py --step-timing --refresh 25 50 100 --loss-every 1 2 3

``--step-timing`` measures the cost of training steps instead, in this process: pipelines of both
methods train in alternating blocks of steps on one thread, timed in process CPU seconds, which stays
steady where other jobs share the machine (wall-clock then mostly measures them).

Without the bundled prior (reconfusion/assets/default_prior) a randomly initialised tiny prior is
used, which times the method faithfully but says nothing about quality; the output says which.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def prepare(out: Path, seed: int, layout: str, prior: str | None) -> tuple[Path, str, str]:
    """The scene folder, the prior folder and a description of the prior."""
    from data_tools.synthetic import generate_scenes
    from reconfusion.assets import DEFAULT_PRIOR_PATH

    scene = generate_scenes(out / "scenes", num_scenes=1, num_views=12, resolution=64, layout=layout, seed=seed,
                            overwrite=True)[0]  # fmt: skip
    if prior is not None:
        return scene, prior, f"given prior {prior}"
    if Path(DEFAULT_PRIOR_PATH).is_dir():
        return scene, str(DEFAULT_PRIOR_PATH), "bundled prior"
    import torch

    from reconfusion.prior import ReconFusionPrior

    torch.manual_seed(0)
    folder = out / "random_tiny_prior"
    ReconFusionPrior.from_preset("tiny").save_pretrained(folder)
    return scene, str(folder), "RANDOM tiny prior (bundled prior absent): timings only, PSNR meaningless"


def run(method: str, scene: Path, iterations: int, out: Path, extra: list[str]) -> dict:
    """Train and evaluate one method; wall-clock, seconds per iteration and test metrics."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    runs = out / "runs"
    command = [str(BIN / "ns-train"), method, "--data", str(scene), "--output-dir", str(runs),
               "--max-num-iterations", str(iterations), "--timestamp", "bench", "--vis", "tensorboard",
               "--logging.local-writer.enable", "False", *extra]  # fmt: skip
    start, cpu_start = time.perf_counter(), _children_cpu()
    train = subprocess.run(command, capture_output=True, text=True, env=env)
    wall, cpu = time.perf_counter() - start, _children_cpu() - cpu_start
    if train.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{train.stdout[-2000:]}\n{train.stderr[-2000:]}")
    per_step = re.search(r"Trainer\.train_iteration: ([0-9.]+)", train.stdout)
    config = runs / scene.name / method / "bench" / "config.yml"
    result = out / f"{method}.json"
    subprocess.run([str(BIN / "ns-eval"), "--load-config", str(config), "--output-path", str(result)],
                   capture_output=True, text=True, env=env, check=True)  # fmt: skip
    metrics = json.loads(result.read_text())["results"]
    return {"wall": wall, "cpu": cpu, "step": float(per_step.group(1)) if per_step else float("nan"), **metrics}


def _children_cpu() -> float:
    """CPU seconds (user + system) used so far by finished child processes: robust to other load."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def step_timing(scene: Path, prior: str, refreshes: list[int | None], loss_everys: list[int | None], steps: int,
                render_sizes: list[int | None] = (None,), blocks: int = 2) -> list[str]:
    """CPU seconds per training step of each method, alternating blocks of ``steps`` steps (Markdown lines)."""
    import functools
    from dataclasses import replace

    import torch
    from nerfstudio.engine.callbacks import TrainingCallbackAttributes, TrainingCallbackLocation
    from nerfstudio.engine.optimizers import Optimizers

    from nerfstudio_plugin.methods import cpu_config

    torch.set_num_threads(1)

    def build(prior_name: str | None, refresh: int | None, loss_every: int | None = None, size: int | None = None):
        config = cpu_config("timing", prior_name)
        config.pipeline.datamanager.data = scene
        changes = {"refresh_every": refresh, "loss_every": loss_every, "render_size": size}
        changes = {key: value for key, value in changes.items() if value is not None}
        config.pipeline.model.sample_loss = replace(config.pipeline.model.sample_loss, **changes)
        pipeline = config.pipeline.setup(device="cpu", test_mode="val")
        optimizers = Optimizers(config.optimizers, pipeline.get_param_groups())
        attributes = TrainingCallbackAttributes(optimizers=optimizers, grad_scaler=None, pipeline=pipeline, trainer=None)
        callbacks = pipeline.get_training_callbacks(attributes)
        if pipeline.model.guidance is not None:  # the timed blocks are one whole run (the weight may fade)
            pipeline.model.guidance.total_steps = blocks * steps
        return pipeline, optimizers, callbacks

    def train(pipeline, optimizers, callbacks, start: int) -> float:
        begin = time.process_time()
        for step in range(start, start + steps):
            pipeline.train()
            for callback in callbacks:
                callback.run_callback_at_location(step, TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
            optimizers.zero_grad_all()
            _, losses, _ = pipeline.get_train_loss_dict(step)
            functools.reduce(torch.add, losses.values()).backward()
            optimizers.optimizer_step_all()
            optimizers.scheduler_step_all(step)
            for callback in callbacks:
                callback.run_callback_at_location(step, TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
        return (time.process_time() - begin) / steps

    variants = {"reconfusion-baseline-cpu": build(None, None)}
    for r in refreshes:
        for every in loss_everys:
            for size in render_sizes:
                name = f"reconfusion-cpu, refresh {r or 'preset'}, loss every {every or 'preset'}, render size {size or 'preset'}"
                variants[name] = build(prior, r, every, size)
    seconds = {name: float("inf") for name in variants}
    for block in range(blocks):  # alternate: every variant runs its block before any runs the next one
        for name, variant in variants.items():
            seconds[name] = min(seconds[name], train(*variant, start=block * steps))
    base = seconds["reconfusion-baseline-cpu"]
    lines = ["| method | CPU s / step (1 thread, best block) | / baseline |", "|---|---|---|"]
    return lines + [f"| {name} | {value:.3f} | {value / base:.2f} |" for name, value in seconds.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--refresh", type=int, nargs="*", default=[], help="refresh_every values (default: the preset's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layout", choices=["object-360", "forward-facing"], default="object-360")
    parser.add_argument("--prior", default=None, help="prior folder (default: bundled, else a random tiny prior)")
    parser.add_argument("--loss-every", type=int, nargs="*", default=[], help="--step-timing: loss_every values")
    parser.add_argument("--render-size", type=int, nargs="*", default=[], help="--step-timing: render_size values")
    parser.add_argument("--scene", type=Path, default=None,
                        help="--step-timing: a scene folder (e.g. one a benchmark resized) instead of a procedural one")
    parser.add_argument("--step-timing", action="store_true", help="time training steps in-process instead")
    parser.add_argument("--output", type=Path, default=None, help="also write the Markdown result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        scene, prior, described = prepare(out, args.seed, args.layout, args.prior)
        length = f"blocks of {min(args.iterations, 100)} steps" if args.step_timing else f"{args.iterations} iterations"
        lines = [f"scene {args.layout} seed {args.seed}, 64x64, 3 training views, {length}; {described}", ""]
        if args.step_timing:
            if args.scene is not None:
                scene, lines[0] = args.scene, f"scene {args.scene}, 3 training views, {length}; {described}"
            return report(lines + step_timing(scene, prior, args.refresh or [None], args.loss_every or [None],
                               steps=min(args.iterations, 100), render_sizes=args.render_size or [None]), args.output)
        baseline = run("reconfusion-baseline-cpu", scene, args.iterations, out, [])
        rows = [("reconfusion-baseline-cpu", "-", baseline)]
        for refresh in args.refresh or [None]:
            extra = ["--pipeline.model.prior", prior]
            extra += [] if refresh is None else ["--pipeline.model.sample-loss.refresh-every", str(refresh)]
            rows.append(("reconfusion-cpu", "preset" if refresh is None else str(refresh),
                         run("reconfusion-cpu", scene, args.iterations, out / f"r{refresh}", extra)))  # fmt: skip
    lines += ["| method | refresh M | wall s | s/iteration | wall / baseline | CPU s | CPU / baseline | PSNR | SSIM | LPIPS |",
              "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for method, refresh, r in rows:
        lines.append(f"| {method} | {refresh} | {r['wall']:.1f} | {r['step']:.3f} | {r['wall'] / baseline['wall']:.2f} | "
                     f"{r['cpu']:.1f} | {r['cpu'] / baseline['cpu']:.2f} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['lpips']:.3f} |")  # fmt: skip
    report(lines + ["", f"LPIPS backend: {baseline.get('lpips_backend')}"], args.output)


def report(lines: list[str], output: Path | None) -> None:
    """Print the result; with ``--output`` also write it, headed by the command, machine and date."""
    print("\n".join(lines))
    if output is not None:
        command = " ".join(["python", *sys.argv])
        header = [f"`{command}`", "", f"{os.cpu_count()} CPU cores, {time.strftime('%Y-%m-%d %H:%M %Z')}", ""]
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text("\n".join(header + lines) + "\n")


if __name__ == "__main__":
    main()
