"""Paired statistics of the benchmark: reconfusion (or another method) against the baseline fitted on the
same scene with the same seed, per scene, with a percentile-bootstrap interval over scenes."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from reconfusion_benchmark.runs import RunResult


def paired_means(
    rows: list[RunResult], views: int, method: str, key: str, seed: int | None = None
) -> dict[str, tuple[float, float]]:
    """scene -> (method's, baseline's) mean of ``key``, in scene order, over the seeds where both finished
    (only ``seed`` when given): each run is paired with the baseline fitted with the same seed."""
    ours, base = (
        {(r.scene, r.seed): getattr(r, key) for r in rows if (r.views, r.method) == (views, m)} for m in (method, "baseline")
    )  # fmt: skip
    pairs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for scene, run_seed in sorted(ours.keys() & base.keys()):
        if seed is None or run_seed == seed:
            pairs[scene].append((ours[(scene, run_seed)], base[(scene, run_seed)]))
    return {scene: tuple(np.mean(values, axis=0).tolist()) for scene, values in pairs.items()}


def paired_differences(
    rows: list[RunResult], views: int, method: str, key: str, seed: int | None = None
) -> list[float]:
    """(method - baseline) per scene, in scene order, from :func:`paired_means`."""
    return [a - b for a, b in paired_means(rows, views, method, key, seed).values()]


def paired_difference(rows: list[RunResult], views: int, method: str, key: str) -> float | None:
    """Mean over the scenes where both ``method`` and the baseline finished of (method - baseline)."""
    differences = paired_differences(rows, views, method, key)
    return float(np.mean(differences)) if differences else None


def bootstrap_interval(values: list[float], level: float = 0.95, draws: int = 2000) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean (seeded, so reports are reproducible); None below 2 values."""
    if len(values) < 2:
        return None
    rng = np.random.default_rng(0)
    means = np.asarray(values)[rng.integers(0, len(values), size=(draws, len(values)))].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    return float(np.percentile(means, tail)), float(np.percentile(means, 100.0 - tail))


def signed(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:+.{digits}f}"


def difference_cell(differences: list[float], digits: int) -> str:
    """Mean paired difference, with its 95% bootstrap interval over scenes where there are several."""
    if not differences:
        return "-"
    interval = bootstrap_interval(differences)
    mean = signed(float(np.mean(differences)), digits)
    return mean if interval is None else f"{mean} [{interval[0]:+.{digits}f}, {interval[1]:+.{digits}f}]"
