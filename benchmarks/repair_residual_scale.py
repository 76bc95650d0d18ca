"""Does the repairing prior's correction point the right way? Its one-step prediction of the photograph's latent
is the rendering's latent plus a residual; this scores rendering + s * residual against the photograph for a
few scales s on a degraded-rendering corpus (s = 0: the rendering through the autoencoder; s = 1: the prior's
own prediction). A residual that helps at some s < 1 but not at 1 points the right way with too much
confidence; one that hurts at every s > 0 is wrong for those scenes. The prior's correction in pixels (its
prediction minus the round trip) is also split at a Gaussian blur of sigma px: the round trip plus only the
correction's coarse part ("< sigma px"), or plus only its fine part ("> sigma px").

    .venv/bin/python benchmarks/repair_residual_scale.py outputs/repair-prior-2/prior --corpus outputs/degraded-eval \\
        --examples 48 --t 0.4 --report docs/repair_prior/residual_scale.md
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections import defaultdict
from pathlib import Path

import torch

SCALES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25)
BANDS = (2.0, 4.0)
"""Gaussian sigmas (pixels at the prior's resolution) that split the correction into coarse and fine parts."""


def band_variants(round_trip: torch.Tensor, restored: torch.Tensor) -> dict[str, torch.Tensor]:
    """The round trip plus the coarse or the fine part of the correction ``restored - round_trip``, per sigma."""
    from torchvision.transforms.functional import gaussian_blur

    correction = restored - round_trip
    variants = {}
    for sigma in BANDS:
        coarse = gaussian_blur(correction, kernel_size=2 * int(3 * sigma) + 1, sigma=sigma)
        variants[f"< {sigma:g} px"] = (round_trip + coarse).clamp(0, 1)
        variants[f"> {sigma:g} px"] = (round_trip + correction - coarse).clamp(0, 1)
    return variants


@torch.no_grad()
def scores_by_scene(prior, corpus: Path, examples: int, t: float, seed: int = 12345) -> dict[str, dict]:
    """scene ("all" too) -> {"rendering": [PSNR], s: [(PSNR, LPIPS)]} over the examples."""
    from reconfusion.metrics import load_lpips, psnr
    from train_prior.evaluation import restoration_examples

    dataset, described = restoration_examples(corpus, prior.resolution, examples, seed)
    lpips = load_lpips("auto").to(prior.device)
    steps = prior.scheduler.config.num_train_timesteps
    found: dict[str, dict] = defaultdict(lambda: defaultdict(list))
    for start in range(0, examples, 8):
        items = [dataset[i] for i in range(start, min(examples, start + 8))]
        batch = {key: torch.stack([item[key] for item in items]).to(prior.device) for key in items[0]}
        views = [batch[k] for k in ("observed_images", "observed_c2w", "observed_intrinsics", "target_c2w",
                                    "target_intrinsics")]  # fmt: skip
        cond = prior.condition(*views, near=batch["near"], far=batch["far"], stratified=False,
                               rendering=batch["rendering"])  # fmt: skip
        timesteps = torch.full((len(items),), int(t * steps) - 1, device=prior.device)
        noise = torch.randn(cond.rendering.shape, generator=torch.Generator().manual_seed(seed + start))
        noisy = prior.scheduler.add_noise(cond.rendering, noise.to(cond.rendering), timesteps)
        residual = prior.repaired_latents(noisy, timesteps, cond.features, cond.tokens, cond.rendering) - cond.rendering
        photo = batch["target_image"]
        rendering_psnr = psnr(batch["rendering"], photo).flatten()
        images = {s: prior.decode_latents(cond.rendering + s * residual).float() for s in SCALES}
        images |= band_variants(images[0.0], images[1.0])
        per_scale = {s: (psnr(image, photo).flatten(), lpips(image, photo).flatten()) for s, image in images.items()}
        for j in range(len(items)):
            for scene in ("all", described[start + j]["scene"]):
                found[scene]["rendering"].append(float(rendering_psnr[j]))
                for s, (p, l) in per_scale.items():
                    found[scene][s].append((float(p[j]), float(l[j])))
    return found


def table(found: dict[str, dict]) -> str:
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    columns = [key for key in found["all"] if key != "rendering"]
    lines = ["| scene | examples | rendering PSNR | " + " | ".join(c if isinstance(c, str) else f"s = {c}" for c in columns)
             + " |", "|---|---|---|" + "---|" * len(columns)]  # fmt: skip
    for scene in ["all", *sorted(k for k in found if k != "all")]:
        row = found[scene]
        cells = [f"{mean([p for p, _ in row[s]]) - mean(row['rendering']):+.2f} / {mean([l for _, l in row[s]]):.3f}"
                 for s in columns]  # fmt: skip
        lines.append(f"| {scene} | {len(row['rendering'])} | {mean(row['rendering']):.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prior", type=Path)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--examples", type=int, default=48)
    parser.add_argument("--t", type=float, default=0.4, help="noise level of the rendering's latent fed to the U-Net")
    parser.add_argument("--report", type=Path)
    args = parser.parse_args()
    from reconfusion.files import write_text
    from reconfusion.prior import ReconFusionPrior

    device = "cuda" if torch.cuda.is_available() else "cpu"
    prior = ReconFusionPrior.from_pretrained(args.prior).eval().to(device)
    if not prior.config.repairs:
        raise SystemExit(f"{args.prior}: not a repairing prior (repair preset); it has no residual to scale")
    text = (f"# Scaling the repairing prior's residual\n\nWritten by `{shlex.join(['python', *sys.argv])}`.\n\n"
            f"One-step prediction at t = {args.t}: PSNR gain over the rendering (dB) / LPIPS of rendering + s * "
            "residual against the photograph.\n\n" + table(scores_by_scene(prior, args.corpus, args.examples, args.t)))
    print(text)
    if args.report:
        write_text(args.report, text + "\n")


if __name__ == "__main__":
    main()
