"""Which classifier-free guidance scale should the sample loss use with a repairing prior? Scores each prior's
restoration of a degraded-rendering corpus (``train_prior.evaluation``'s measure, on the same examples) at each
guidance scale and writes one table: restored minus rendering, PSNR (dB) and LPIPS, overall and per scene.

    .venv/bin/python benchmarks/guidance_scale.py outputs/repair-prior-3/prior outputs/repair-prior-warped/prior \\
        --corpus outputs/degraded-eval --scales 1 3 --examples 24 --report docs/repair_prior/guidance_scale.md
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from reconfusion.files import write_text
from reconfusion.prior import ReconFusionPrior
from train_prior.evaluation import evaluate_restoration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("priors", type=Path, nargs="+", help="prior folders (save_pretrained)")
    parser.add_argument("--corpus", type=Path, required=True, help="a degraded-rendering corpus of held-out scenes")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument("--examples", type=int, default=24)
    parser.add_argument("--t", type=float, default=0.2, help="noise level the renderings are noised to")
    parser.add_argument("--scenes", nargs="*", default=(), help="score only these scenes of the corpus")
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--title", default="Guidance scale of a repairing prior", help="the report's heading")
    args = parser.parse_args()
    rows, scenes = {}, {}
    for folder in args.priors:
        prior = ReconFusionPrior.from_pretrained(folder)
        for scale in args.scales:
            scores = evaluate_restoration(prior, args.corpus, ts=(args.t,), examples=args.examples, guidance_scale=scale,
                                          scenes=tuple(args.scenes))  # fmt: skip
            rows[(str(folder), scale)] = scores
            for score in scores:
                scenes.setdefault(score.source.split(",")[0], None)
            print(f"{folder} at guidance {scale:g}: {scores[0].gain_db:+.2f} dB", file=sys.stderr, flush=True)
    names = [s for s in scenes if s != "all"]
    command = shlex.join([".venv/bin/python", "benchmarks/guidance_scale.py", *sys.argv[1:]])
    lines = [
        f"# {args.title}", "",
        f"Written by `{command}`.", "",
        f"Restored minus rendering at t = {args.t:g} on `{args.corpus}` ({args.examples} examples, the same for every "
        "row): PSNR in dB / LPIPS. Per scene, the mean over its examples (fits finished and stopped early).", "",
        "| prior | guidance | all | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names),
    ]  # fmt: skip
    for (folder, scale), scores in rows.items():
        cells = []
        for name in ["all", *names]:
            members = [s for s in scores if s.source.split(",")[0] == name]
            count = sum(s.examples for s in members)
            gain = sum(s.gain_db * s.examples for s in members) / count
            lpips = sum((s.restored_lpips - s.rendering_lpips) * s.examples for s in members) / count
            cells.append(f"{gain:+.2f} / {lpips:+.3f}")
        lines.append(f"| `{folder}` | {scale:g} | " + " | ".join(cells) + " |")
    write_text(args.report, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
