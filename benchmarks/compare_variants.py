"""Variants of one benchmark method against the baseline, paired per (scene, views).

Each folder is the ``--out`` of a ``reconfusion benchmark`` run (only its ``runs/*/*-views/*/result.json``
are read). The table lists, for every (scene, views) that the baseline and every variant finished, the
baseline's PSNR and LPIPS and each variant's difference to them, then the means of those differences.

    .venv/bin/python benchmarks/compare_variants.py --baseline outputs/benchmark5 \\
        --variant "weight 0.3=outputs/benchmark5-nocheck" --variant "weight 3e-4=outputs/exp-tiny-lambda" \\
        --output benchmarks/results/sample_loss_weight.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path


def results(folder: Path, method: str) -> dict[tuple[str, int], dict]:
    """(scene, views) -> result of ``method`` in a benchmark output folder."""
    found = {}
    for path in sorted(folder.glob(f"runs/*/*-views/{method}/result.json")):
        result = json.loads(path.read_text())
        found[(result["scene"], result["views"])] = result
    return found


def table(baseline: dict, variants: dict[str, dict]) -> list[str]:
    keys = sorted(set(baseline).intersection(*variants.values()), key=lambda k: (k[1], k[0]))
    header = ["scene", "views", "baseline PSNR", "baseline LPIPS"]
    for label in variants:
        header += [f"{label}: PSNR", f"{label}: LPIPS"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    sums = {label: [0.0, 0.0] for label in variants}
    for scene, views in keys:
        base = baseline[(scene, views)]
        cells = [scene, str(views), f"{base['psnr']:.2f}", f"{base['lpips']:.3f}"]
        for label, runs in variants.items():
            psnr, lpips = runs[(scene, views)]["psnr"] - base["psnr"], runs[(scene, views)]["lpips"] - base["lpips"]
            sums[label][0] += psnr
            sums[label][1] += lpips
            cells += [f"{psnr:+.2f}", f"{lpips:+.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if keys:
        means = ["mean difference", "", "", ""]
        for psnr, lpips in sums.values():
            means += [f"{psnr / len(keys):+.2f}", f"{lpips / len(keys):+.3f}"]
        lines.append("| " + " | ".join(means) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="benchmark folder with the baseline's runs")
    parser.add_argument("--variant", action="append", required=True, metavar="LABEL=FOLDER",
                        help="a benchmark folder with the method's runs under other settings (repeat)")
    parser.add_argument("--method", default="reconfusion")
    parser.add_argument("--seed", type=int, default=42, help="pair the runs of this nerfstudio seed (default 42's)")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    suffix = "" if args.seed == 42 else f"-seed{args.seed}"  # how the benchmark names other seeds' run folders
    variants = {}
    for item in args.variant:
        label, sep, folder = item.partition("=")
        if not sep or not Path(folder).is_dir():
            parser.error(f"--variant {item}: expected LABEL=FOLDER with an existing benchmark folder")
        variants[label] = results(Path(folder), args.method + suffix)
    command = shlex.join(["python", "benchmarks/compare_variants.py", *sys.argv[1:]])
    lines = [f"# {args.method}: variants against the baseline (differences, paired per scene)", "",
             "Written by:", "", "```bash", command, "```", "",
             *table(results(args.baseline, "baseline" + suffix), variants)]  # fmt: skip
    text = "\n".join(lines) + "\n"
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
