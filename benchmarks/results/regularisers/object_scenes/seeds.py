"""Table of the 3-view object fits over seeds: seed 42 from the ablation (../runs), the other seeds from this folder's
benchmark reports. Run from the repository root: .venv/bin/python benchmarks/results/regularisers/object_scenes/seeds.py"""

import json
import sys
from pathlib import Path

sys.path.insert(0, "benchmarks")
from regulariser_ablation import protocol_psnr  # noqa: E402

HERE = Path(__file__).parent
VARIANTS = ("today", "all-but-near-far-annealing")


def fits(variant: str) -> dict[tuple[str, int], dict]:
    found = {}
    for path in (HERE.parent / "runs" / variant / "runs").glob("*/3-views/baseline/result.json"):
        result = json.loads(path.read_text())
        found[(result["scene"], result.get("seed") or 42)] = result
    for result in json.loads((HERE / variant / "results.json").read_text()):
        found[(result["scene"], result["seed"])] = result
    return found


def main() -> None:
    today, regularised = (fits(v) for v in VARIANTS)
    lines = ["Protocol PSNR (dB; DTU masked) / LPIPS (whole image) at 3 views, 600 iterations, per seed: today's settings, every "
             "regulariser but near/far annealing, and the difference.", "",
             "| scene | seed | today | all but near/far annealing | difference |", "|---|---|---|---|---|"]  # fmt: skip
    differences = []
    for scene, seed in sorted(set(today) & set(regularised)):
        if scene not in ("lego", "scan24", "scan37"):
            continue
        a, b = today[(scene, seed)], regularised[(scene, seed)]
        differences.append(protocol_psnr(b) - protocol_psnr(a))
        lines.append(f"| {scene} | {seed} | {protocol_psnr(a):.2f} / {a['lpips']:.3f} | {protocol_psnr(b):.2f} / "
                     f"{b['lpips']:.3f} | {differences[-1]:+.2f} / {b['lpips'] - a['lpips']:+.3f} |")  # fmt: skip
    lines += ["", f"Mean difference over the {len(differences)} pairs: {sum(differences) / len(differences):+.2f} dB."]
    (HERE / "seeds.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
