"""``reconfusion demo``: the main job at small scale - a held-out procedural scene fitted from a few views
with and without the bundled prior on the CPU, the table printed, renders and plots written."""

from __future__ import annotations

import logging
from pathlib import Path

from reconfusion_benchmark.report import rich_table
from reconfusion_benchmark.runs import BenchmarkConfig, RunResult
from reconfusion_benchmark.sweep import run_benchmark

logger = logging.getLogger("reconfusion")


def demo_scene(folder: Path, seed: int, layout: str) -> Path:
    """The demo's procedural scene (24 views at 64x64), generated once."""
    scene = folder / f"scene_{seed:05d}"
    if (scene / "transforms.json").is_file():
        return scene
    from data_tools.synthetic import generate_scenes

    return generate_scenes(folder, num_scenes=1, num_views=24, resolution=64, layout=layout, seed=seed)[0]


def run_demo(out: Path, iterations: int, seed: int, layout: str, views: int) -> list[RunResult]:
    """Fit baseline and reconfusion (2 jobs, CPU preset), print the table; the report goes to OUT/report.md."""
    from rich.console import Console

    scene = demo_scene(out / "data", seed, layout)
    config = BenchmarkConfig(
        scenes=(scene,), views=(views,), methods=("baseline", "reconfusion"), out=out, preset="cpu",
        iterations=iterations, report=out / "report.md", title="reconfusion demo", jobs=2,
    )  # fmt: skip
    results = run_benchmark(config)
    Console().print(rich_table(results))
    logger.info("report %s; figures (plots, test-view grids) in %s", config.report, out / "figures")
    return results
