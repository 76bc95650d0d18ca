"""Throughput of the procedural scene generator, and its contact sheet.

    python benchmarks/bench_synthetic.py                       # views/s at 64x64, both layouts
    python benchmarks/bench_synthetic.py --contact-sheet docs/synthetic_contact_sheet.png

Prints views per second of rendering alone (wall clock, and per CPU-second of this process, which a
busy machine disturbs less), and of ``generate_scenes`` end to end (rendering, PNG, depth and JSON
writing). Target: at least 50 views/s at 64x64 on 2 cores.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro
from PIL import Image, ImageDraw

from data_tools.synthetic import LAYOUTS, generate_scenes, render_scene
from data_tools.synthetic_scenes import sample_scene
from reconfusion.files import to_uint8, write_image


@dataclass(frozen=True)
class BenchConfig:
    """Benchmark settings."""

    resolution: int = 64
    """Square image side in pixels."""
    views: int = 24
    """Views per scene."""
    scenes: int = 8
    """Scenes per layout (seeds 0..scenes-1)."""
    supersample: int = 2
    """Sub-pixel samples per side at edges (adaptive anti-aliasing; generate_scenes uses 2, 1 = off)."""
    contact_sheet: Path | None = None
    """Also write a contact sheet PNG here."""
    sheet_scenes: int = 8
    """Scenes (rows) per layout on the contact sheet."""
    sheet_views: int = 6
    """Views (columns) per scene on the contact sheet, spread over 24 rendered views."""
    sheet_resolution: int = 96
    """Image side on the contact sheet."""


def _time_rendering(cfg: BenchConfig, layout: str) -> tuple[float, float]:
    """(views/s wall clock, views/s per CPU second) of render_scene over cfg.scenes seeds."""
    wall = cpu = 0.0
    for seed in range(cfg.scenes):
        spec = sample_scene(seed, layout=layout, num_views=cfg.views, resolution=cfg.resolution)
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        render_scene(spec, supersample=cfg.supersample)
        wall += time.perf_counter() - start_wall
        cpu += time.process_time() - start_cpu
    views = cfg.scenes * cfg.views
    return views / wall, views / cpu


def _time_generation(cfg: BenchConfig, layout: str) -> float:
    """views/s of generate_scenes end to end, writing into a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generate_scenes(Path(tmp) / "out", num_scenes=cfg.scenes, num_views=cfg.views,
                        resolution=cfg.resolution, layout=layout, seed=0)
        return cfg.scenes * cfg.views / (time.perf_counter() - start)


def contact_sheet(cfg: BenchConfig) -> Image.Image:
    """One panel per layout: a row per scene (seeds 0..), ``sheet_views`` views around each scene."""
    size, gap, header = cfg.sheet_resolution, 8, 20
    rendered_views = max(24, cfg.sheet_views)
    picks = np.linspace(0, rendered_views, cfg.sheet_views, endpoint=False).astype(int)
    panel_width = cfg.sheet_views * size
    sheet = Image.new("RGB", (len(LAYOUTS) * (panel_width + gap) - gap, header + cfg.sheet_scenes * size), "white")
    draw = ImageDraw.Draw(sheet)
    for column, layout in enumerate(LAYOUTS):
        left = column * (panel_width + gap)
        draw.text((left + 4, 4), f"{layout}: {cfg.sheet_scenes} scenes (rows) x {cfg.sheet_views} views", fill="black")
        for row in range(cfg.sheet_scenes):
            spec = sample_scene(row, layout=layout, num_views=rendered_views, resolution=size)
            images = render_scene(spec).images[picks]
            strip = to_uint8(np.concatenate(list(images), axis=1))
            sheet.paste(Image.fromarray(strip), (left, header + row * size))
    return sheet


def main(cfg: BenchConfig) -> None:
    print(f"synthetic scenes: {cfg.scenes} scenes x {cfg.views} views at {cfg.resolution}x{cfg.resolution}, "
          f"adaptive {cfg.supersample}x{cfg.supersample} supersampling")
    for layout in LAYOUTS:
        sample_scene(0, layout=layout, num_views=2, resolution=8)  # warm-up: imports, caches
        wall, per_cpu = _time_rendering(cfg, layout)
        end_to_end = _time_generation(cfg, layout)
        print(f"  {layout:15s} render: {wall:7.1f} views/s (wall), {per_cpu:7.1f} views per CPU-second; "
              f"generate_scenes with file writing: {end_to_end:7.1f} views/s")
    if cfg.contact_sheet is not None:
        write_image(cfg.contact_sheet, np.asarray(contact_sheet(cfg)))
        print(f"contact sheet: {cfg.contact_sheet}")


if __name__ == "__main__":
    main(tyro.cli(BenchConfig))
