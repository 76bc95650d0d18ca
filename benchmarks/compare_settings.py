"""A method's per-scene numbers in an earlier report beside a later run's, on the same scenes: first written for
the baseline before and after the scene-aware settings (issue 11), also used for the same fits on two machines.

"Before" is read from the per-scene table of a report (BENCHMARKS.md unless ``--report``) as an earlier commit
wrote it (the report of ``reconfusion benchmark`` on that commit's code); "after" from the ``results.json`` of
a benchmark run with the same scenes, views, resolution and iterations. Both tables were written by the code
that measured them; this script only lines them up.

    .venv/bin/python benchmarks/compare_settings.py --before ec14f2b --after outputs/benchmark/results.json \\
        --scenes lego fern scene_900000 scene_900001 --output benchmarks/results/settings_comparison.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

METRICS = ("psnr", "ssim", "lpips")
DEFAULT_SEED = 42
"""Only runs of nerfstudio's default seed are compared (what reports before --seeds hold)."""


def rows_before(commit: str, method: str, report: str = "BENCHMARKS.md") -> dict[tuple[str, int], dict]:
    """(scene, views) -> metrics, from the per-scene table of ``report`` at ``commit``."""
    text = subprocess.run(["git", "show", f"{commit}:{report}"], check=True, capture_output=True, text=True).stdout
    rows, columns = {}, None
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[:3] == ["group", "scene", "views"]:  # the header of the per-scene table names its columns
            columns = {name: i for i, name in enumerate(cells)}
            continue
        if columns is None or len(cells) != len(columns) or cells[columns["method"]] != method:
            continue
        seed = int(cells[columns["seed"]]) if "seed" in columns else DEFAULT_SEED
        if seed != DEFAULT_SEED:
            continue
        cell = lambda name: cells[columns[name]]  # noqa: E731
        rows[(cell("scene"), int(cell("views")))] = {"psnr": float(cell("PSNR")), "ssim": float(cell("SSIM")),
                                                     "lpips": float(cell("LPIPS")), "resolution": cell("resolution"),
                                                     "test_views": cell("test views")}  # fmt: skip
    return rows


def rows_after(results: Path, method: str) -> dict[tuple[str, int], dict]:
    return {(r["scene"], r["views"]): r for r in json.loads(results.read_text())
            if r["method"] == method and r.get("seed", DEFAULT_SEED) == DEFAULT_SEED}  # fmt: skip


def table(before: dict, after: dict, scenes: list[str], only_views: list[int] | None = None) -> list[str]:
    lines = ["| scene | views | resolution | test views | PSNR before | PSNR after | SSIM before | SSIM after "
             "| LPIPS before | LPIPS after |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for scene in scenes:
        for views in sorted({v for s, v in before | after if s == scene and (not only_views or v in only_views)}):
            old, new = before.get((scene, views)), after.get((scene, views))
            cells = [f"{old[k]:.{3 if k != 'psnr' else 2}f}" if old else "-" for k in METRICS]
            fresh = [f"{new[k]:.{3 if k != 'psnr' else 2}f}" if new else "-" for k in METRICS]
            where = new or old
            lines.append(f"| {scene} | {views} | {where['resolution']} | {where['test_views']} | "
                         + " | ".join(f"{a} | {b}" for a, b in zip(cells, fresh)) + " |")  # fmt: skip
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="commit whose BENCHMARKS.md holds the old rows")
    parser.add_argument("--after", type=Path, required=True, help="results.json of the run on the current code")
    parser.add_argument("--scenes", nargs="+", required=True)
    parser.add_argument("--report", default="BENCHMARKS.md", help="the report at --before that holds the old rows")
    parser.add_argument("--method", nargs="+", default=["baseline"], help="one table per method")
    parser.add_argument("--views", type=int, nargs="+", help="only these numbers of views (default: all)")
    parser.add_argument("--title", default="The {method} before and after the scene-aware settings",
                        help="the page's title; {method} is replaced by the methods compared")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    command = shlex.join(["python", "benchmarks/compare_settings.py", *sys.argv[1:]])
    lines = [f"# {args.title.format(method=' and '.join(args.method))}", "",
             f"Before: {args.report} at commit {args.before}. After: {args.after}. Written by:", "",
             "```bash", command, "```"]  # fmt: skip
    for method in args.method:
        before, after = rows_before(args.before, method, args.report), rows_after(args.after, method)
        lines += ["", *([f"{method}:", ""] if len(args.method) > 1 else []), *table(before, after, args.scenes, args.views)]
    args.output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
