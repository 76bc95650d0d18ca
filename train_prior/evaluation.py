"""Held-out quality of a prior: autoencoder, PixelNeRF and sample quality on scenes it never saw.

``python -m train_prior.evaluation PRIOR_DIR --data HELDOUT_SCENES`` prints the numbers the model
card reports (the model card is written by the same function). ``--compare OTHER_PRIOR`` scores a
second prior on the same examples - drawn at the larger of the two resolutions and area-downsampled
for the smaller - adds each prior's sample PSNR / LPIPS at the smaller resolution, where both can be
compared, and ``--image`` writes a side-by-side of samples: other prior | this prior | ground truth.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import tyro
from tyro.conf import Positional

from reconfusion.files import InputError, write_image, write_json, write_text
from reconfusion.metrics import load_lpips, psnr, ssim
from reconfusion.prior import ReconFusionPrior
from train_prior.datasets import MultiviewDataset, WeightedSource, warps_of
from train_prior.readers import read_scene_folders


@dataclass(frozen=True)
class PriorQuality:
    """Means over held-out examples (3 observed views + 1 target each), at the prior's resolution."""

    examples: int
    """How many examples were scored."""
    resolution: int
    """The prior's image side; every image below is at it unless named otherwise."""
    autoencoder_psnr: float
    """PSNR of the target after the autoencoder's round trip D(E(x)): the ceiling of any sample."""
    pixelnerf_psnr: float
    """PSNR of PixelNeRF's RGB (latent resolution) against the downsampled target."""
    sample_psnr: float
    """PSNR of a 10-step guided sample from pure noise against the target."""
    sample_ssim: float
    """SSIM of the same samples."""
    sample_lpips: float
    """LPIPS of the same samples (the backend is in ``lpips_backend``)."""
    refine_psnr: float
    """PSNR of a sample started at t = 0.5 from PixelNeRF's RGB upsampled (an annealed-loss-like refinement)."""
    lpips_backend: str = ""
    """Which LPIPS network scored ``sample_lpips``."""
    common_resolution: int | None = None
    """With --compare: the smaller of the two priors' resolutions, where the next two are scored."""
    sample_psnr_common: float | None = None
    """Sample PSNR with sample and target area-downsampled to ``common_resolution``."""
    sample_lpips_common: float | None = None
    """Sample LPIPS at ``common_resolution``."""


def heldout_dataset(data: tuple[Path, ...], resolution: int, seed: int) -> MultiviewDataset:
    scenes = [scene for root in data for scene in read_scene_folders(root)]
    # Full-size views, read each time as before (examples rarely share views): the numbers stay as they were.
    return MultiviewDataset([WeightedSource(scenes)], resolution=resolution, seed=seed, crop_scale=(1.0, 1.0),
                            cache_megabytes=0, shrink_views=False)  # fmt: skip


def resized_batch(batch: dict[str, torch.Tensor], resolution: int) -> dict[str, torch.Tensor]:
    """The same examples at ``resolution`` (images area-averaged, intrinsics scaled)."""
    side = batch["target_image"].shape[-1]
    if side == resolution:
        return batch
    scale, out = resolution / side, dict(batch)
    for key in ("observed_images", "target_image"):
        images = batch[key]
        flat = images.flatten(0, -4) if images.dim() > 4 else images
        out[key] = F.interpolate(flat, size=(resolution, resolution), mode="area").view(*images.shape[:-2], resolution, resolution)
    for key in ("observed_intrinsics", "target_intrinsics"):
        out[key] = batch[key] * scale
    return out


@torch.no_grad()
def evaluate_prior(prior: ReconFusionPrior, data: tuple[Path, ...], examples: int = 64, batch_size: int = 16,
                   seed: int = 12345) -> PriorQuality:
    """Score ``prior`` on ``examples`` deterministic examples drawn from the scene folders ``data``."""
    return compare_priors({"prior": prior}, data, examples, batch_size, seed)[0]["prior"]


@torch.no_grad()
def compare_priors(priors: dict[str, ReconFusionPrior], data: tuple[Path, ...], examples: int = 64,
                   batch_size: int = 16, seed: int = 12345) -> tuple[dict[str, PriorQuality], dict[str, torch.Tensor]]:
    """Score every prior on the same examples; also the first batch's samples (and ``"target"``) at the largest
    resolution, for a side-by-side image."""
    largest = max(p.resolution for p in priors.values())
    common = min(p.resolution for p in priors.values()) if len(priors) > 1 else None
    dataset = heldout_dataset(data, largest, seed)
    lpips = load_lpips("auto")
    totals: dict[str, dict[str, float]] = {name: {} for name in priors}
    shown: dict[str, torch.Tensor] = {}
    for first in range(0, examples, batch_size):
        items = [dataset[i] for i in range(first, min(first + batch_size, examples))]
        batch = {k: torch.stack([item[k] for item in items]) for k in items[0]}
        for name, prior in priors.items():
            prior.eval()
            own = {k: v.to(prior.device) for k, v in resized_batch(batch, prior.resolution).items()}
            scores, sample = _score_batch(prior, own, seed + first, lpips, common)
            for key, value in scores.items():
                totals[name][key] = totals[name].get(key, 0.0) + value * len(items)
            if first == 0:
                shown[name] = F.interpolate(sample.float().cpu(), size=(largest, largest), mode="bilinear", align_corners=False)
        shown.setdefault("target", batch["target_image"])
    qualities = {
        name: PriorQuality(examples=examples, resolution=priors[name].resolution, lpips_backend=lpips.backend,
                           common_resolution=common, **{k: v / examples for k, v in sums.items()})
        for name, sums in totals.items()
    }  # fmt: skip
    return qualities, shown


def _score_batch(prior: ReconFusionPrior, batch: dict, seed: int, lpips, common: int | None) -> tuple[dict[str, float], torch.Tensor]:
    views = (batch["observed_images"], batch["observed_c2w"], batch["observed_intrinsics"],
             batch["target_c2w"], batch["target_intrinsics"])
    target = batch["target_image"]
    condition = prior.condition(*views, near=batch["near"], far=batch["far"], stratified=False)
    small_target = F.interpolate(target, size=condition.rgb.shape[-2:], mode="area")
    generator = torch.Generator(device=prior.device).manual_seed(seed)
    sample = prior.sample(*views, near=batch["near"], far=batch["far"], generator=generator).float()
    coarse = F.interpolate(condition.rgb, size=target.shape[-2:], mode="bilinear", align_corners=False)
    refined = prior.sample(*views, init_images=coarse, t_start=0.5, near=batch["near"], far=batch["far"],
                           generator=generator)
    round_trip = prior.decode_latents(prior.encode_images(target)).float().clamp(0, 1)
    lpips = lpips.to(sample.device)
    scores = {
        "autoencoder_psnr": float(psnr(round_trip, target).mean()),
        "pixelnerf_psnr": float(psnr(condition.rgb.clamp(0, 1), small_target).mean()),
        "sample_psnr": float(psnr(sample, target).mean()),
        "sample_ssim": float(ssim(sample, target).mean()),
        "sample_lpips": float(lpips(sample, target).mean()),
        "refine_psnr": float(psnr(refined, target).mean()),
    }
    if common is not None:
        small_sample, small = (F.interpolate(x, size=(common, common), mode="area") for x in (sample, target))
        scores["sample_psnr_common"] = float(psnr(small_sample, small).mean())
        scores["sample_lpips_common"] = float(lpips(small_sample, small).mean())
    return scores, sample


def side_by_side(columns: list[torch.Tensor], path: Path, rows: int = 4) -> Path:
    """A PNG with one row per example and the given (B, 3, S, S) image batches as columns."""
    grid = torch.cat([torch.cat(list(column[:rows].clamp(0, 1)), dim=-2) for column in columns], dim=-1)
    write_image(path, np.ascontiguousarray(grid.permute(1, 2, 0).numpy()))
    return path


# ------------------------------------------------------------------ restoration of degraded renderings


@dataclass(frozen=True)
class RestorationScore:
    """A prior on degraded renderings of one source at one noise level (means over its examples)."""

    source: str
    """Scene and views of the fits, and whether their renderings come from fits stopped early; "all" for every example."""
    t: float
    """Noise level the rendering was noised to before the prior's DDIM steps back to 0."""
    examples: int
    rendering_psnr: float
    """PSNR of the rendering the prior was given, against the photograph."""
    restored_psnr: float
    """PSNR of the prior's output."""
    rendering_lpips: float
    restored_lpips: float
    pixelnerf_psnr: float
    """PixelNeRF's RGB alone (latent resolution, against the area-downsampled photograph)."""
    round_trip_psnr: float
    """The rendering through the prior's autoencoder, D(E(rendering)): what a prior that changes nothing returns."""
    target_psnr: float = float("nan")
    """PSNR of the sample loss's residual target, rendering + restored - D(E(rendering)): the prior's change
    without the autoencoder's own loss, which is what a fit is pulled towards (at coverage weight 1)."""
    blend_weight: float = float("nan")
    """The share w of that change, rendering + w (target - rendering), that scores best on these examples (of 0,
    0.05, ..., 1): how far the change can be trusted as a whole (0: not at all). The sample loss's coverage
    weight is such a share per pixel."""
    blended_psnr: float = float("nan")
    """PSNR at ``blend_weight``: what a single trust in the change could reach (chosen on the examples
    themselves, so an upper bound), at least the better of rendering and target."""

    @property
    def gain_db(self) -> float:
        return self.restored_psnr - self.rendering_psnr


def restoration_examples(corpus: Path, resolution: int, examples: int, seed: int, scenes: tuple[str, ...] = (),
                         warped_views: int = 0):  # fmt: skip
    """(dataset, descriptions) of ``examples`` whole-view examples (square crops of the full short side), of the
    named ``scenes`` only if any are named, with ``warped_views`` observed views warped into each."""
    from reconfusion.corpus import read_corpus
    from train_prior.datasets import DegradedDataset

    fits = read_corpus(corpus)
    names = {fit.scene.root.name for fit in fits}
    missing = sorted(set(scenes) - names)
    if missing:
        raise InputError(f"{corpus}: no finished fit of {' '.join(missing)}; its scenes are: {' '.join(sorted(names))}")
    chosen = [fit for fit in fits if not scenes or fit.scene.root.name in scenes]
    dataset = DegradedDataset(chosen, resolution, crop_scale=(1.0, 1.0), seed=seed, cache_megabytes=256,
                              warped_views=warped_views)  # fmt: skip
    return dataset, [dataset.describe(i) for i in range(examples)]


def adapted_to_fit(prior: ReconFusionPrior, fit, steps: int) -> ReconFusionPrior:
    """A copy of ``prior`` adapted to the training views of a corpus fit (:mod:`reconfusion.adaptation`), as a fit
    of that scene with ``--pipeline.model.prior-adaptation.steps`` would adapt it; the prior itself if 0 steps."""
    import copy

    from reconfusion.adaptation import AdaptationConfig, adapt_prior
    from reconfusion.observations import square_views

    if steps <= 0:
        return prior
    ids = list(fit.train_ids)
    images = [torch.from_numpy(np.ascontiguousarray(fit.scene.image(v))).permute(2, 0, 1).float() for v in ids]
    c2w = torch.as_tensor(fit.scene.c2w[ids], dtype=torch.float32)
    observations = square_views(images, c2w, torch.as_tensor(fit.scene.intrinsics[ids], dtype=torch.float32),
                                prior.resolution)  # fmt: skip
    adapted = copy.deepcopy(prior)
    with torch.enable_grad():
        adapt_prior(adapted, observations, AdaptationConfig(steps=steps))
    return adapted


@torch.no_grad()
def evaluate_restoration(prior: ReconFusionPrior, corpus: Path, ts: tuple[float, ...] = (0.2, 0.4, 0.6),
                         examples: int = 48, batch_size: int = 8, seed: int = 12345, num_steps: int | None = None,
                         guidance_scale: float | None = None, sheet: Path | None = None,
                         scenes: tuple[str, ...] = (), adapt_steps: int = 0,
                         without_warps: bool = False) -> list[RestorationScore]:
    """Restoration gain of a prior on a degraded-rendering corpus of held-out scenes: per noise level, per source
    and over all, the prior's output against the rendering it was given (a repairing prior also sees the rendering
    as its condition; any other starts from it, as the sample loss uses it). DDIM steps and guidance default to
    the sample loss's. ``sheet``: rendering | restored at each t | photograph of the first examples; ``scenes``:
    score these scenes of the corpus only; ``adapt_steps``: adapt the prior to each fit's training views first;
    ``without_warps``: withhold the warped observed views from a prior that takes them (what they bring)."""
    from reconfusion.guidance import SampleLossConfig, default_guidance_scale, residual_target

    num_steps, guidance_scale = num_steps or SampleLossConfig().num_steps, guidance_scale or default_guidance_scale(prior)
    dataset, described = restoration_examples(corpus, prior.resolution, examples, seed, scenes, prior.config.warped_views)
    order = sorted(range(examples), key=lambda i: described[i]["fit"])  # one adaptation per fit
    sources = [f"{d['scene']}, {d['views']} views" + (", stopped early" if d["early"] else "")
               for d in (described[i] for i in order)]  # fmt: skip
    lpips = load_lpips("auto")
    per_example: dict[str, list[torch.Tensor]] = {}
    shown: list[list[torch.Tensor]] = []
    prior.eval()
    batches = [order[k : k + batch_size] for k in range(0, examples, batch_size)]
    batches = [[i for i in chunk if described[i]["fit"] == fit] for chunk in batches
               for fit in dict.fromkeys(described[i]["fit"] for i in chunk)]  # fmt: skip
    scene_prior, adapted_fit = prior, None
    for members in batches:
        fit = described[members[0]]["fit"]
        if adapt_steps and fit != adapted_fit:
            scene_prior, adapted_fit = adapted_to_fit(prior, dataset.fits[fit], adapt_steps), fit
        items = [dataset[i] for i in members]
        batch = {k: torch.stack([item[k] for item in items]).to(prior.device) for k in items[0]}
        views = (batch["observed_images"], batch["observed_c2w"], batch["observed_intrinsics"], batch["target_c2w"],
                 batch["target_intrinsics"])  # fmt: skip
        photo, rendering = batch["target_image"], batch["rendering"]
        warps = {} if without_warps else warps_of(batch)
        latents = prior.encode_images(rendering)  # once: the autoencoder is frozen, adapted or not
        round_trip = prior.decode_latents(latents).float()
        rgb = scene_prior.condition(*views, near=batch["near"], far=batch["far"], stratified=False,
                                    rendering=rendering, rendering_latents=latents, **warps).rgb  # fmt: skip
        scores = {"pixelnerf_psnr": psnr(rgb.clamp(0, 1), F.interpolate(photo, size=rgb.shape[-2:], mode="area")),
                  "rendering_psnr": psnr(rendering, photo), "rendering_lpips": lpips.to(photo.device)(rendering, photo),
                  "round_trip_psnr": psnr(round_trip, photo)}
        restored_views = []
        for t in ts:
            generator = torch.Generator(device=prior.device).manual_seed(seed + members[0])
            restored = scene_prior.sample(*views, init_images=rendering, init_latents=latents, t_start=t,
                                          num_steps=num_steps, guidance_scale=guidance_scale, near=batch["near"],
                                          far=batch["far"], generator=generator, **warps).float()  # fmt: skip
            scores[f"restored_psnr@{t}"], scores[f"restored_lpips@{t}"] = psnr(restored, photo), lpips(restored, photo)
            target = residual_target(rendering, restored, round_trip)
            scores[f"target_psnr@{t}"] = psnr(target, photo)
            scores.update({f"{key}@{t}": value for key, value in _blend_terms(rendering, target, photo).items()})
            restored_views.append(restored)
        for key, value in scores.items():
            per_example.setdefault(key, []).append(value.float().flatten().cpu())
        if sum(len(columns[0]) for columns in shown) < 8:  # the sheet's rows
            shown.append([rendering.cpu(), *(r.cpu() for r in restored_views), photo.cpu()])
    values = {key: torch.cat(parts) for key, parts in per_example.items()}
    groups = {"all": list(range(examples))}
    for index, source in enumerate(sources):
        groups.setdefault(source, []).append(index)
    rows = []
    for source, members in groups.items():
        pick = torch.tensor(members)
        mean = lambda key: float(values[key][pick].mean())  # noqa: E731
        for t in ts:
            weight, blended = best_blend(*(values[f"{key}@{t}"][pick] for key in ("error", "cross", "change")))
            rows.append(RestorationScore(source, t, len(members), mean("rendering_psnr"), mean(f"restored_psnr@{t}"),
                                         mean("rendering_lpips"), mean(f"restored_lpips@{t}"), mean("pixelnerf_psnr"),
                                         mean("round_trip_psnr"), mean(f"target_psnr@{t}"), weight, blended))  # fmt: skip
    if sheet is not None:
        side_by_side([torch.cat(column) for column in zip(*shown)], sheet, rows=8)
    return rows


def _blend_terms(rendering: torch.Tensor, target: torch.Tensor, photo: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per example, the means from which the squared error of rendering + w (target - rendering) follows for any w:
    error - 2 w cross + w^2 change."""
    error, change = (rendering - photo).float().flatten(1), (target - rendering).float().flatten(1)
    return {"error": error.pow(2).mean(1), "cross": -(error * change).mean(1), "change": change.pow(2).mean(1)}


def best_blend(error: torch.Tensor, cross: torch.Tensor, change: torch.Tensor) -> tuple[float, float]:
    """(w, mean PSNR) of the w in 0, 0.05, ..., 1 whose blends score the best mean PSNR over the examples."""
    weights = torch.linspace(0, 1, 21, dtype=torch.float64)[:, None]
    mse = (error.double() - 2 * weights * cross.double() + weights**2 * change.double()).clamp_min(1e-12)
    scores = (-10 * torch.log10(mse)).mean(1)
    best = int(scores.argmax())
    return float(weights[best]), float(scores[best])


def restoration_table(rows: list[RestorationScore]) -> str:
    """Markdown: one line per (source, t) with the gain in dB."""
    lines = ["| source | t | examples | rendering PSNR | restored PSNR | gain (dB) | rendering LPIPS | restored LPIPS | "
             "PixelNeRF PSNR | autoencoder round trip PSNR | residual target PSNR | best share of its change | "
             "PSNR there |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r.source} | {r.t:.1f} | {r.examples} | {r.rendering_psnr:.2f} | {r.restored_psnr:.2f} | "
                     f"{r.gain_db:+.2f} | {r.rendering_lpips:.3f} | {r.restored_lpips:.3f} | {r.pixelnerf_psnr:.2f} | "
                     f"{r.round_trip_psnr:.2f} | {r.target_psnr:.2f} | {r.blend_weight:.2f} | {r.blended_psnr:.2f} |")
    return "\n".join(lines)


def main(prior: Positional[Path], data: tuple[Path, ...] = (), corpus: Path | None = None, examples: int = 64,
         seed: int = 12345, compare: Path | None = None, image: Path | None = None,
         ts: tuple[float, ...] = (0.2, 0.4, 0.6), report: Path | None = None, num_steps: int | None = None,
         guidance_scale: float | None = None, scenes: tuple[str, ...] = (), adapt_steps: int = 0,
         without_warps: bool = False) -> None:
    """Print the held-out quality of the prior saved in PRIOR as JSON; with --corpus, the restoration gain of a
    repairing prior on degraded renderings of held-out scenes.

    Args:
        prior: A prior folder written by train_prior (save_pretrained).
        data: Held-out scene folders (never used for training).
        corpus: A degraded-rendering corpus of held-out scenes (`reconfusion data degrade --scenes EVAL_SCENES
            --out FOLDER`, fitted on their training views only): score restoration instead.
        examples: Number of (3 observed + 1 target) examples scored.
        seed: Chooses the examples and the sampling noise.
        compare: Another prior folder (e.g. the previous bundled prior) scored on the same examples.
        image: With --compare: write samples of the first examples here (rows), as compare | prior | ground truth;
            with --corpus: rendering | restored at each t | photograph.
        ts: With --corpus: the noise levels the renderings are noised to.
        report: With --corpus: also write the table (Markdown) and the scores (JSON beside it) here.
        num_steps: With --corpus: DDIM steps from t to 0 (default: the sample loss's).
        guidance_scale: With --corpus: classifier-free guidance scale (default: the sample loss's).
        scenes: With --corpus: score only these scenes of it (e.g. a training run's --holdout-scenes).
        adapt_steps: With --corpus: first adapt the prior to each fit's training views, leave-one-out, for this
            many steps (as a fit with --pipeline.model.prior-adaptation.steps does), then score that fit's examples.
        without_warps: With --corpus: withhold the observed views warped into the target from a prior that takes
            them (it repairs as if no view showed the target), to measure what they bring.
    """
    device = "cuda" if torch.cuda.is_available() else "cpu"
    priors = {"prior": ReconFusionPrior.from_pretrained(prior).to(device)}
    if corpus is not None:
        from reconfusion.guidance import default_guidance_scale

        guidance_scale = guidance_scale or default_guidance_scale(priors["prior"])
        rows = evaluate_restoration(priors["prior"], corpus, ts, examples, seed=seed, num_steps=num_steps,
                                    guidance_scale=guidance_scale, sheet=image, scenes=scenes,
                                    adapt_steps=adapt_steps, without_warps=without_warps)  # fmt: skip
        table = restoration_table(rows)
        print(table)
        if report is not None:
            command = shlex.join(["python", "-m", "train_prior.evaluation", *sys.argv[1:]])
            write_text(report, f"Restoration by `{prior}` on `{corpus}` (guidance scale {guidance_scale:g}), written by "
                               f"`{command}` (columns of the sheet: rendering | restored at t = {', '.join(map(str, ts))} | "
                               f"photograph):\n\n{table}\n")  # fmt: skip
            write_json(report.with_suffix(".json"), [dict(asdict(r), gain_db=r.gain_db) for r in rows])
        return
    if not data:
        raise SystemExit("train_prior.evaluation: error: pass --data HELDOUT_SCENES or --corpus DEGRADED_CORPUS")
    if compare is not None:
        priors["compare"] = ReconFusionPrior.from_pretrained(compare).to(device)
    qualities, shown = compare_priors(priors, data, examples=examples, seed=seed)
    if image is not None:
        order = [name for name in ("compare", "prior") if name in shown] + ["target"]
        print(f"wrote {side_by_side([shown[name] for name in order], image)} (columns: {' | '.join(order)})")
    result = {name: asdict(quality) for name, quality in qualities.items()}
    print(json.dumps(result if compare is not None else result["prior"], indent=2))


def entrypoint() -> None:
    """Bad input (a missing folder, a corpus without fits, a prior that does not repair) is one line on stderr."""
    from reconfusion.cli import one_line

    try:
        tyro.cli(main)
    except InputError as err:
        sys.stderr.write(f"train_prior.evaluation: error: {one_line(str(err))}\n")
        sys.exit(2)


if __name__ == "__main__":
    entrypoint()
