"""Writes table.md: every result.json below this folder beside the second edition's baseline on the same split.

    python benchmarks/results/session4-intermediate/make_table.py
"""

import glob
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]

base = {}
for f in glob.glob(str(REPO / "benchmarks/results/second-edition/runs/*/*/baseline/result.json")):
    r = json.load(open(f))
    base[(r["scene"], r["views"])] = r
lines = ["| folder | scene | views | method | PSNR | LPIPS | second-edition baseline PSNR | its LPIPS |",
         "|---|---|---|---|---|---|---|---|"]
for f in sorted(HERE.glob("*/runs/*/*/*/result.json")):
    r, b = json.loads(f.read_text()), None
    b = base.get((r["scene"], r["views"]), {"psnr": float("nan"), "lpips": float("nan")})
    lines.append(f"| {f.relative_to(HERE).parts[0]} | {r['scene']} | {r['views']} | {r['method']} | {r['psnr']:.2f} | "
                 f"{r['lpips']:.3f} | {b['psnr']:.2f} | {b['lpips']:.3f} |")
(HERE / "table.md").write_text("\n".join(lines) + "\n")
