"""The benchmark's figures: metric-vs-views plots (matplotlib, Agg) and image grids of test views.

Renders come from ns-eval (``OUT/runs/SCENE/N-views/METHOD/renders/eval_img_XXXX.png``, each the ground
truth and the rendering side by side); the grids put the ground truth once, then one column per method.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from reconfusion_benchmark.runs import DEFAULT_SEED, METHODS, RunResult, group_key, run_folder, runs_by_scene

logger = logging.getLogger("reconfusion")

MIN_CELL = 128
"""Small renders are enlarged (nearest neighbour, integer factor) to at least this many pixels."""
MAX_ROWS = 4
"""Test views shown per grid."""
LABEL_HEIGHT = 16
PLOTS = {"psnr": ("PSNR (dB)", "psnr_vs_views.png"), "lpips": ("LPIPS", "lpips_vs_views.png")}


def _method_order(methods) -> list[str]:
    order = {name: i for i, name in enumerate(METHODS)}
    return sorted(set(methods), key=lambda m: (order.get(m, len(order)), m))


def write_plots(results: list[RunResult], folder: Path) -> list[Path]:
    """PSNR-vs-views and LPIPS-vs-views: one panel per group, mean +- std over its scenes (each first averaged over its seeds) per method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = sorted({r.group for r in results}, key=group_key)
    cells = runs_by_scene(results)
    paths = []
    for metric, (label, name) in PLOTS.items():
        figure = Figure(figsize=(4.2 * len(groups), 3.4), layout="constrained")
        FigureCanvasAgg(figure)  # the Agg raster backend, whatever matplotlib's default backend is
        axes = np.atleast_1d(figure.subplots(1, len(groups), squeeze=False)[0])
        for axis, group in zip(axes, groups):
            rows = [r for r in results if r.group == group]
            for method in _method_order(r.method for r in rows):
                views = sorted({r.views for r in rows if r.method == method})
                values = [[np.mean([getattr(r, metric) for r in runs]) for runs in cells[(group, v, method)].values()]
                          for v in views]  # fmt: skip
                axis.errorbar(views, [np.mean(v) for v in values], yerr=[np.std(v) for v in values],
                              marker="o", capsize=3, label=method)  # fmt: skip
            count = len({r.scene for r in rows})
            axis.set(title=f"{group} ({count} scene{'s' if count != 1 else ''})", xlabel="training views", ylabel=label)
            axis.set_xticks(sorted({r.views for r in rows}))
            axis.grid(alpha=0.3)
            axis.ticklabel_format(axis="y", useOffset=False)
            axis.legend(fontsize="small")
        path = Path(folder) / name
        figure.savefig(path, dpi=110)
        paths.append(path)
    return paths


def read_renders(run_folder: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ground truth, rendering) uint8 (H, W, 3) pairs of a run's test views, in test-view order."""
    pairs = []
    for path in sorted((run_folder / "renders").glob("eval_img_*.png")):
        image = np.asarray(Image.open(path).convert("RGB"))
        half = image.shape[1] // 2
        pairs.append((image[:, :half], image[:, half:]))
    return pairs


def _enlarge(image: np.ndarray) -> np.ndarray:
    factor = max(1, -(-MIN_CELL // max(image.shape[:2])))
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def _labelled_grid(columns: list[tuple[str, list[np.ndarray]]], gap: int = 4) -> Image.Image:
    """Columns of equally sized images under their labels, on white."""
    cells = [[_enlarge(image) for image in images] for _, images in columns]
    height, width = cells[0][0].shape[:2]
    rows = max(len(c) for c in cells)
    canvas = Image.new("RGB", (len(cells) * (width + gap) - gap, LABEL_HEIGHT + rows * (height + gap) - gap), "white")
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    for col, ((label, _), images) in enumerate(zip(columns, cells)):
        x = col * (width + gap)
        draw.text((x + 2, 2), label, fill="black", font=font)
        for row, image in enumerate(images):
            canvas.paste(Image.fromarray(image), (x, LABEL_HEIGHT + row * (height + gap)))
    return canvas


def renders_by_run(results: list[RunResult], out: Path) -> dict[tuple[str, int], dict[str, list]]:
    """(scene, views) -> method -> renders in OUT, of one seed per (scene, views): the one most methods ran with
    (the default seed on a tie). Read once per report, for the grids and the comparison."""
    found: dict[tuple[str, int], dict[str, list]] = defaultdict(dict)
    methods_of = defaultdict(lambda: defaultdict(int))
    for r in results:
        methods_of[(r.scene, r.views)][r.seed] += 1
    shown = {key: max(seeds, key=lambda s: (seeds[s], s == DEFAULT_SEED, -s)) for key, seeds in methods_of.items()}
    for r in results:
        if r.seed != shown[(r.scene, r.views)]:
            continue
        pairs = read_renders(run_folder(out, r.scene, r.views, r.method, r.seed))
        if pairs:
            found[(r.scene, r.views)][r.method] = pairs
    return found


def write_grids(renders: dict, results: list[RunResult], folder: Path) -> dict[tuple[str, int], Path]:
    """One grid per (scene, views): rows are test views, columns ground truth then each method. A (scene, views)
    whose renders are not in OUT (results merged from another machine) keeps the grid already in ``folder``."""
    grids = {}
    for (scene, views), by_method in sorted(renders.items()):
        methods = _method_order(by_method)
        truth = [gt for gt, _ in by_method[methods[0]][:MAX_ROWS]]
        columns = [("ground truth", truth)] + [(m, [im for _, im in by_method[m][:MAX_ROWS]]) for m in methods]
        path = Path(folder) / f"{scene}_{views}-views.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        _labelled_grid(columns).save(path)
        grids[(scene, views)] = path
    for key in sorted({(r.scene, r.views) for r in results} - set(grids)):
        earlier = Path(folder) / f"{key[0]}_{key[1]}-views.png"
        if earlier.is_file():
            grids[key] = earlier
    return grids


def write_comparison(renders: dict, results: list[RunResult], path: Path) -> Optional[Path]:
    """The first test view of one scene, rendered by every method, side by side: the scene with the most
    methods at its smallest view count (first by name). An existing image stays when the renders in OUT show
    fewer methods than the results hold (results merged from another machine)."""
    most = max(Counter((r.scene, r.views, r.seed) for r in results).values())
    if not renders or (path.is_file() and max(map(len, renders.values())) < most):
        return path if path.is_file() else None
    scene, views = min(renders, key=lambda key: (-len(renders[key]), key[1], key[0]))
    by_method = renders[(scene, views)]
    methods = _method_order(by_method)
    columns = [(f"{scene}, {views} views", [by_method[methods[0]][0][0]])]
    columns += [(m, [by_method[m][0][1]]) for m in methods]
    path.parent.mkdir(parents=True, exist_ok=True)
    _labelled_grid(columns).save(path)
    return path
