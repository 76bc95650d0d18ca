"""The sparse-view regularisers, measured: today's NeRF, each regulariser added alone, and all together.

Each variant is one ``reconfusion benchmark --methods baseline`` run with its own ``--ns-train-args`` and its
own output folder (OUT/VARIANT), so it resumes where it stopped (finished fits are skipped); variants run in
the order listed, today and all-together first. ``--report`` only reads the finished runs and writes a table
of the protocol's metric per scene (PSNR; masked PSNR on DTU as RegNeRF reports it), each variant's
difference to today, means per scene group, and the CPU seconds of each fit, with a bar chart.

    .venv/bin/python benchmarks/regulariser_ablation.py --scenes outputs/bench-data/{fern,horns,trex,scan24,scan37,lego,juicebox} \\
        --views 3 --iterations 600 --max-test-views 8 --out outputs/ablation --jobs 2
    .venv/bin/python benchmarks/regulariser_ablation.py --report --out outputs/ablation \\
        --output benchmarks/results/regularisers/README.md
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

FLAG = "--pipeline.model.regularisers."
OFF = {"coarse-to-fine": {"coarse-to-fine": "None"}, "occlusion": {"occlusion-weight": "0"},
       "depth-smoothness": {"depth-smoothness-weight": "0"}, "near-far-annealing": {"anneal-near-far": "None"}}
ON = {"coarse-to-fine": {"coarse-to-fine": "0.5"}, "occlusion": {"occlusion-weight": "0.05"},
      "depth-smoothness": {"depth-smoothness-weight": "0.1", "depth-smoothness-start-weight": "400"},
      "near-far-annealing": {"anneal-near-far": "0.1"}}
"""Each regulariser's settings, off and on (the weights and schedules are those of FreeNeRF / RegNeRF where they
carry over: see reconfusion/regularisers.py)."""
CONSTANT_DEPTH_WEIGHT = {"depth-smoothness-weight": "0.1"}
"""The depth-smoothness weight without RegNeRF's decaying schedule (measured first: too weak to act)."""


def arguments(on: tuple[str, ...], depth: dict | None = None) -> str:
    """ns-train arguments that set every regulariser, those named in ``on`` on and the others off (explicitly, so
    that a variant means the same whatever the preset's defaults are)."""
    chosen = {name: (ON[name] if name in on else OFF[name]) for name in OFF}
    if depth is not None and "depth-smoothness" in on:
        chosen["depth-smoothness"] = depth
    return " ".join(f"{FLAG}{flag} {value}" for settings in chosen.values() for flag, value in settings.items())


VARIANTS = {
    "today": arguments(()),
    "all": arguments(tuple(ON)),
    "all-constant-depth-weight": arguments(tuple(ON), CONSTANT_DEPTH_WEIGHT),
    "all-but-near-far-annealing": arguments(("coarse-to-fine", "occlusion", "depth-smoothness")),
    "depth-smoothness": arguments(("depth-smoothness",)),
    "near-far-annealing": arguments(("near-far-annealing",)),
    "coarse-to-fine": arguments(("coarse-to-fine",)),
    "occlusion": arguments(("occlusion",)),
}
"""Variant name -> ns-train arguments."""
BIN = Path(sys.executable).parent


def run(args: argparse.Namespace) -> None:
    for name in args.variants:
        command = [str(BIN / "reconfusion"), "benchmark", "--scenes", *map(str, args.scenes), "--views",
                   *map(str, args.views), "--methods", "baseline", "--out", str(args.out / name), "--preset", "cpu",
                   "--iterations", str(args.iterations), "--max-test-views", str(args.max_test_views),
                   "--jobs", str(args.jobs), f"--ns-train-args={VARIANTS[name]}"]  # fmt: skip
        print("$", shlex.join(command), flush=True)
        subprocess.run(command, check=True)


def protocol_psnr(result: dict) -> float:
    """The metric the protocol reports: masked PSNR for DTU (RegNeRF), PSNR otherwise."""
    return result["psnr_masked"] if result.get("group") == "dtu" and "psnr_masked" in result else result["psnr"]


def finished(out: Path) -> dict[str, dict[tuple[str, int], dict]]:
    """variant -> (scene, views) -> result of its finished baseline runs."""
    found: dict[str, dict[tuple[str, int], dict]] = {}
    for name in VARIANTS:
        for path in sorted((out / name).glob("runs/*/*-views/baseline/result.json")):
            result = json.loads(path.read_text())
            found.setdefault(name, {})[(result["scene"], result["views"])] = result
    return found


def report(out: Path, output: Path, command: str) -> str:
    results = finished(out)
    today = results.get("today", {})
    variants = [name for name in VARIANTS if name in results and name != "today"]
    keys = sorted(today, key=lambda k: (k[1], results["today"][k]["group"], k[0]))
    lines = ["# Sparse-view regularisers: ablation", "", "Written by `benchmarks/regulariser_ablation.py`; the fits "
             "(resumable, finished ones are skipped), then this report:", "",
             "```bash", *scene_commands(out), *fit_commands(results, out), command, "```", "",
             "The baseline (`reconfusion-baseline-cpu`, no prior) with today's settings and with each regulariser "
             "alone, then all together; one seed (42). PSNR in dB at the protocol's resolution (the images' stored "
             "size, column resolution; DTU masked as RegNeRF reports it); each variant's cell is its PSNR and, in "
             "brackets, the difference to today's fit of the same scene. Variants' ns-train arguments:", ""]  # fmt: skip
    lines += [f"- {name}: `{VARIANTS[name]}`" for name in ["today", *variants]]
    lines += ["", f"Every finished fit's result.json is kept in `{output.parent / 'runs'}`; on a fresh clone, "
              f"`mkdir -p {out} && cp -r {output.parent / 'runs'}/* {out}/` lets the fitting command skip them."]
    lines += ["", "| scene | group | views | resolution | test views | today | " + " | ".join(variants) + " |",
              "|---|---|---|---|---|---|" + "---|" * len(variants)]  # fmt: skip
    sums: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
    for key in keys:
        base = today[key]
        cells = [key[0], base["group"], str(key[1]), base["resolution"], str(base["test_views"]), f"{protocol_psnr(base):.2f}"]
        for name in variants:
            other = results[name].get(key)
            if other is None:
                cells.append("-")
                continue
            diff = protocol_psnr(other) - protocol_psnr(base)
            cells.append(f"{protocol_psnr(other):.2f} ({diff:+.2f})")
            sums.setdefault((name, base["group"], key[1]), []).append((diff, other["lpips"] - base["lpips"]))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Mean difference to today per group (scenes where both finished): PSNR dB / LPIPS (scenes):", "",
              "| group | views | " + " | ".join(variants) + " |", "|---|---|" + "---|" * len(variants)]  # fmt: skip
    for group, views in sorted({(today[k]["group"], k[1]) for k in keys}):
        cells = [group, str(views)]
        for name in variants:
            diffs = sums.get((name, group, views), [])
            psnr, lpips = (sum(d[i] for d in diffs) / len(diffs) for i in (0, 1)) if diffs else (0.0, 0.0)
            cells.append(f"{psnr:+.2f} / {lpips:+.3f} ({len(diffs)})" if diffs else "-")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "CPU cost: mean wall-clock seconds of a fit (ns-train, 1 thread) and of its evaluation (ns-eval). They "
              "depend on how many fits shared the cores while they ran (`concurrency` in each result.json counts only "
              "the fits of one sweep): compare variants only from sweeps run alone.", "",
              "| variant | fits | fit s | eval s |", "|---|---|---|---|"]  # fmt: skip
    for name in [n for n in ["today", *variants] if n in results]:
        runs = list(results[name].values())
        fit_s = sum(r["fit_seconds"] for r in runs) / len(runs)
        eval_s = sum(r.get("eval_seconds") or 0.0 for r in runs) / len(runs)
        lines.append(f"| {name} | {len(runs)} | {fit_s:.0f} | {eval_s:.0f} |")
    lines += ["", "What each loss term weighed (mean of its logged values over the second half of training, over the "
              "variant's fits whose tensorboard events are still in OUT): a regulariser far below the colour loss "
              "barely acts.", "", "| variant | " + " | ".join(LOSS_TERMS) + " |", "|---|" + "---|" * len(LOSS_TERMS)]  # fmt: skip
    for name in ["today", *variants]:
        means = logged_losses(out / name)
        if means:
            lines.append(f"| {name} | " + " | ".join(f"{means[t]:.2g}" if t in means else "-" for t in LOSS_TERMS) + " |")
    if sums:
        plot(sums, variants, output.parent / "ablation.png")
        lines += ["", "![mean PSNR difference to today per group](ablation.png)", ""]
    copy_results(out, output.parent / "runs")
    text = "\n".join(lines)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    return text


def fit_commands(results: dict[str, dict[tuple[str, int], dict]], out: Path) -> list[str]:
    """One fitting command per view count, with the scenes and variants that have finished runs at it."""
    commands = []
    for views in sorted({key[1] for runs in results.values() for key in runs}):
        runs = {name: [r for key, r in found.items() if key[1] == views] for name, found in results.items()}
        names = [name for name in VARIANTS if runs.get(name)]
        every = [r for name in names for r in runs[name]]
        scenes = sorted({r["source"]["scene"] for r in every if "scene" in r.get("source", {})})
        settings = every[0]["settings"]
        commands.append(shlex.join(["python", "benchmarks/regulariser_ablation.py", "--scenes", *scenes, "--variants",
                                    *names, "--views", str(views), "--iterations", str(settings.get("iterations")),
                                    "--max-test-views", str(settings.get("max_test_views")), "--out", str(out),
                                    "--jobs", "2"]))  # fmt: skip
    return commands


def scene_commands(out: Path) -> list[str]:
    """The `reconfusion data` commands that made the scenes, as the benchmark report writes them."""
    from reconfusion_benchmark.report import data_commands
    from reconfusion_benchmark.runs import read_result

    return data_commands([read_result(path) for path in sorted(out.glob("*/runs/*/*-views/baseline/result.json"))])


LOSS_TERMS = ("rgb_loss", "depth_smoothness_loss", "occlusion_loss", "sparse_depth_loss")


def logged_losses(folder: Path) -> dict[str, float]:
    """Loss term -> mean over the fits in ``folder`` of its values logged in the second half of training."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    per_term: dict[str, list[float]] = {}
    for events in folder.glob("runs/*/*-views/baseline/ns/fit/*/run/events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for term in LOSS_TERMS:
            tag = f"Train Loss Dict/{term}"
            if tag in accumulator.Tags().get("scalars", []):
                values = [event.value for event in accumulator.Scalars(tag)]
                per_term.setdefault(term, []).append(sum(values[len(values) // 2 :]) / max(len(values) - len(values) // 2, 1))
    return {term: sum(v) / len(v) for term, v in per_term.items()}


def plot(sums: dict[tuple[str, str, int], list[tuple[float, float]]], variants: list[str], path: Path) -> None:
    """Bars of each variant's mean PSNR difference to today per group (paired by scene)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(group, views) for _, group, views in sums})
    figure, axis = plt.subplots(figsize=(2.0 + 1.2 * len(groups) * max(len(variants), 1) / 3, 3.6))
    width = 0.8 / max(len(variants), 1)
    for i, name in enumerate(variants):
        means = [sum(d for d, _ in sums.get((name, *g), [])) / max(len(sums.get((name, *g), [])), 1)
                 if sums.get((name, *g)) else float("nan") for g in groups]  # fmt: skip
        axis.bar([g + i * width for g in range(len(groups))], means, width, label=name)
    axis.axhline(0.0, color="black", linewidth=0.8)
    axis.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], [f"{g} ({v} views)" for g, v in groups])
    axis.set_ylabel("PSNR - today's (dB; DTU masked)")
    axis.set_title("baseline NeRF: each variant against today's settings, paired by scene")
    axis.legend(fontsize=7)
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def copy_results(out: Path, destination: Path) -> None:
    """The finished runs' result.json files (small), so that a next session's sweep skips them."""
    for path in out.glob("*/runs/*/*-views/baseline/result.json"):
        target = destination / path.relative_to(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=Path, nargs="+")
    parser.add_argument("--views", type=int, nargs="+", default=[3])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--max-test-views", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("outputs/ablation"))
    parser.add_argument("--report", action="store_true", help="only write the report from the finished runs")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/regularisers/README.md"))
    parser.add_argument("--into", type=Path, help="also write the report as the 'regularisers' block of this file "
                        "(e.g. BENCHMARKS.md; a regenerated benchmark report keeps it)")
    args = parser.parse_args()
    if not args.report:
        if not args.scenes:
            parser.error("--scenes is required to run the ablation (or pass --report)")
        run(args)
    text = report(args.out, args.output, shlex.join(["python", "benchmarks/regulariser_ablation.py", *sys.argv[1:]]))
    if args.into:
        from reconfusion_benchmark.blocks import replace_block

        figure = os.path.relpath(args.output.parent / "ablation.png", args.into.parent)
        replace_block(args.into, "regularisers", ["#" + text.replace("](ablation.png)", f"]({figure})")], append=True)
    print(text)


if __name__ == "__main__":
    main()
