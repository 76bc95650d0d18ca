"""Test PSNR against training iterations: the measurement the CPU iteration budget is chosen from.

Fits each scene once with ``reconfusion benchmark`` (baseline method, CPU preset), asking nerfstudio to
score every test view of the split every ``--eval-every`` steps, then reads those scores from the
runs' tensorboard events. Writes a plot and a Markdown table (with the command) that names, per scene,
the first evaluated step within ``--tolerance`` dB of the best one.

    .venv/bin/python benchmarks/convergence.py --scenes outputs/bench-data/lego outputs/bench-data/fern \\
        --iterations 2000 --eval-every 200 --plot benchmarks/results/convergence.png \\
        --output benchmarks/results/convergence.md
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

TAG = "Eval Images Metrics Dict (all images)/psnr"
BIN = Path(sys.executable).parent


def fit(args: argparse.Namespace) -> None:
    command = [str(BIN / "reconfusion"), "benchmark", "--scenes", *map(str, args.scenes), "--views", str(args.views),
               "--methods", args.method, "--out", str(args.out), "--preset", "cpu", "--iterations",
               str(args.iterations), "--max-side", str(args.max_side), "--max-test-views", str(args.max_test_views),
               "--jobs", str(args.jobs), f"--ns-train-args=--steps-per-eval-all-images {args.eval_every}"]  # fmt: skip
    subprocess.run(command, check=True)


def curve(run_folder: Path) -> list[tuple[int, float]]:
    """(step, mean test PSNR) from a run's tensorboard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points = {}
    for events in run_folder.glob("ns/fit/*/run/events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        if TAG in accumulator.Tags().get("scalars", []):
            points.update({event.step: event.value for event in accumulator.Scalars(TAG)})
    return sorted(points.items())


def enough(points: list[tuple[int, float]], tolerance: float) -> int | None:
    """The first step whose PSNR is within ``tolerance`` of the best."""
    if not points:
        return None
    best = max(value for _, value in points)
    return next(step for step, value in points if value >= best - tolerance)


def write(curves: dict[str, list[tuple[int, float]]], args: argparse.Namespace, command: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for name, points in curves.items():
        if points:
            axis.plot(*zip(*points), marker="o", label=name)
    axis.set_xlabel("iteration")
    axis.set_ylabel("test PSNR (dB)")
    axis.set_title(f"{args.method}, CPU preset, {args.views} views")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.plot, dpi=120)
    lines = ["# Convergence: test PSNR against iterations", "", "Written by `benchmarks/convergence.py`:", "",
             "```bash", command, "```", "",
             f"{args.method}, CPU preset, {args.views} training views, "
             f"{f'images at most {args.max_side} px' if args.max_side else 'images at their full (the protocol) size'}, "
             f"at most {args.max_test_views} test views per scene, mean test PSNR (dB) scored by nerfstudio every "
             f"{args.eval_every} steps of one {args.iterations}-step fit per scene (learning rates decaying over "
             f"{args.iterations} x 200,000 / 30,000 steps, nerfacto's proportion). The last column is where the CPU "
             "preset's iteration budget comes from.", "", f"![curves]({Path(args.plot).name})", "",
             "| scene | " + " | ".join(str(s) for s, _ in max(curves.values(), key=len)) + f" | first within {args.tolerance} dB of best |",
             "|---|" + "---|" * (len(max(curves.values(), key=len)) + 1)]  # fmt: skip
    for name, points in curves.items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.2f}" for _, v in points) + f" | {enough(points, args.tolerance)} |")
    Path(args.output).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=Path, nargs="+", required=True)
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--method", default="baseline")
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--max-side", type=int, default=128)
    parser.add_argument("--max-test-views", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--tolerance", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=Path("outputs/convergence"))
    parser.add_argument("--plot", default="benchmarks/results/convergence.png")
    parser.add_argument("--output", default="benchmarks/results/convergence.md")
    args = parser.parse_args()
    fit(args)
    curves = {scene.name: curve(args.out / "runs" / scene.name / f"{args.views}-views" / args.method) for scene in args.scenes}
    write(curves, args, shlex.join(["python", "benchmarks/convergence.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
