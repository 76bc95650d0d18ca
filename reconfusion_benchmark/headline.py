"""The README's headline: what the method does today on real scenes, written into the README by the benchmark.

``reconfusion benchmark ... --readme README.md`` replaces the block between :data:`START` and :data:`END`
with one small table: per view count, the mean PSNR and LPIPS of the baseline and of reconfusion over
the real (non-procedural) scenes where both finished, and their paired difference with a 95% bootstrap
interval over scenes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from reconfusion_benchmark.blocks import markers, replace_block
from reconfusion_benchmark.paired import difference_cell, paired_means
from reconfusion_benchmark.runs import RunResult

BLOCK_NAME = "benchmark-headline"
START, END = markers(BLOCK_NAME)
METHOD = "reconfusion"


def is_real(result: RunResult) -> bool:
    return not result.group.startswith("procedural")


def headline_lines(results: list[RunResult], report: Path, base: Path) -> list[str]:
    """The block's Markdown (without the markers); a note when no real scene has both methods yet."""
    real = [r for r in results if is_real(r)]
    link = os.path.relpath(report, base)
    lines = [
        f"Real scenes, baseline (the same NeRF without the prior) against reconfusion, means over the scenes where "
        f"both finished; written by `reconfusion benchmark --readme`, details and commands in [{link}]({link}):",
        "",
        "| views | scenes | PSNR baseline | PSNR reconfusion | difference [95% CI] | LPIPS baseline | LPIPS reconfusion | difference [95% CI] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = 0
    for views in sorted({r.views for r in real}):
        psnr, lpips = (paired_means(real, views, METHOD, key) for key in ("psnr", "lpips"))
        if not psnr:
            continue
        cells = []
        for means, digits in ((psnr, 2), (lpips, 3)):
            ours, base = np.mean(list(means.values()), axis=0)
            cells += [f"{base:.{digits}f}", f"{ours:.{digits}f}", difference_cell([a - b for a, b in means.values()], digits)]
        lines.append(f"| {views} | {len(psnr)} ({', '.join(psnr)}) | " + " | ".join(cells) + " |")
        rows += 1
    return lines if rows else [f"No real scene has finished with both the baseline and {METHOD} yet ([{link}]({link}))."]


def update_readme(readme: Path, results: list[RunResult], report: Path) -> Path:
    """Replace the headline block of ``readme`` (InputError naming the fix when its markers are missing)."""
    return replace_block(readme, BLOCK_NAME, headline_lines(results, Path(report), Path(readme).parent))
