"""Do the input views, warped into the target view with the rendering's depth, carry evidence that repairs it on
scenes a model never saw? NeRFLiX's route: restore a rendering from its nearest input views. This trains a small
pixel-space CNN for a few hundred steps per variant on a degraded-rendering corpus (held-out scenes left out) to
predict the photograph from the rendering alone, or from the rendering plus its three nearest training views
warped into it (colour, validity, difference to the rendering), and scores both on the evaluation corpus and on
the held-out scenes. No diffusion and no autoencoder: an upper bound of what the evidence offers a repairing prior
at this corpus size, not a prior. The warps alone (their mean where valid) are scored too.

    .venv/bin/python benchmarks/warped_views_fusion.py --corpus outputs/degraded outputs/degraded-arcs \\
        --evaluate outputs/degraded-eval --steps 700 --report docs/repair_prior/warped_views.md
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reconfusion.corpus import DegradedFit, is_held_out, read_corpus
from reconfusion.files import write_text
from reconfusion.metrics import psnr
from reconfusion.warping import warp_views

HELD_OUT = tuple((Path(__file__).parents[1] / "scripts" / "repair_holdout_scenes.txt").read_text().split())
"""The repairing prior's held-out training scenes (scripts/train_repair_prior.sh reads the same file), left out here too."""
NEAREST = 3
PATCH = 64


def warped_views(fit: DegradedFit, view: int, depth: np.ndarray, images: dict[int, torch.Tensor]) -> np.ndarray:
    """(H, W, 4 * NEAREST): the fit's nearest training views warped into ``view`` at the rendering's ``depth``
    (:func:`reconfusion.warping.warp_views`), each as colour and validity."""
    scene = fit.scene
    as_tensor = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    centres = scene.c2w[:, :3, 3]
    nearest = sorted(fit.train_ids, key=lambda v: np.linalg.norm(centres[v] - centres[view]))[:NEAREST]
    colours, valid = warp_views(
        as_tensor(scene.c2w[view])[None], as_tensor(scene.intrinsics[view])[None], as_tensor(depth)[None],
        [images[v].permute(2, 0, 1)[None] for v in nearest], as_tensor(scene.c2w[nearest])[None],
        as_tensor(scene.intrinsics[nearest])[None],
    )  # fmt: skip
    return torch.cat([colours[0], valid[0]], 1).permute(2, 3, 0, 1).reshape(*depth.shape, 4 * NEAREST).numpy()


def corpus_examples(roots: list[Path]) -> list[dict]:
    """Every (rendering, depth-warped views, photograph) of the corpora at every stop, float16."""
    examples = []
    for root in roots:
        for fit in read_corpus(root):
            images = {v: torch.as_tensor(fit.scene.image(v), dtype=torch.float32) for v in fit.train_ids}
            for stop in fit.stops:
                renders = fit.renders(stop)
                for rgb, depth, view in zip(renders["rgb"], renders["depth"], renders["ids"]):
                    photo = fit.scene.image(int(view))
                    if photo.shape[:2] != rgb.shape[:2] or min(rgb.shape[:2]) < PATCH:
                        continue
                    warps = warped_views(fit, int(view), depth.astype(np.float32), images)
                    examples.append({"scene": fit.scene.root.name, "rendering": (rgb / 255.0).astype(np.float16),
                                     "warps": warps.astype(np.float16), "photo": photo.astype(np.float16)})  # fmt: skip
            print(f"{fit.scene.root.name}: {len(examples)} examples so far", file=sys.stderr, flush=True)
    return examples


def inputs(example: dict, with_warps: bool, window: tuple[slice, slice] = (slice(None), slice(None))) -> np.ndarray:
    """The network's input channels over ``window`` of the example (all of it by default)."""
    rendering = example["rendering"][window].astype(np.float32)
    if not with_warps:
        return rendering
    warps = example["warps"][window].astype(np.float32)
    colours = warps.reshape(*warps.shape[:2], NEAREST, 4)[..., :3]
    differences = (colours - rendering[..., None, :]).reshape(*warps.shape[:2], 3 * NEAREST)
    return np.concatenate([rendering, warps, differences], -1)


def mean_warp(example: dict) -> np.ndarray:
    """The warped views' mean where any is valid, the rendering elsewhere."""
    warps = example["warps"].astype(np.float32).reshape(*example["warps"].shape[:2], NEAREST, 4)
    count = warps[..., 3].sum(-1, keepdims=True)
    mean = warps[..., :3].sum(-2) / np.maximum(count, 1)
    return np.where(count > 0, mean, example["rendering"].astype(np.float32))


def _block(width: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.GELU(), nn.Conv2d(width, width, 3, padding=1))


class Fusion(nn.Module):
    """A two-level residual U-Net in pixels whose output starts as the rendering (zero last layer)."""

    def __init__(self, channels: int):
        super().__init__()
        self.inp, self.b1 = nn.Conv2d(channels, 32, 3, padding=1), _block(32)
        self.down1, self.b2, self.b3 = nn.Conv2d(32, 64, 4, 2, 1), _block(64), _block(64)
        self.down2, self.b4, self.up2 = nn.Conv2d(64, 96, 4, 2, 1), _block(96), nn.ConvTranspose2d(96, 64, 4, 2, 1)
        self.up1, self.b5, self.out = nn.ConvTranspose2d(64, 32, 4, 2, 1), _block(32), nn.Conv2d(32, 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.inp(x)
        a = a + self.b1(a)
        b = self.down1(a)
        b = b + self.b2(b)
        c = self.down2(b)
        b = b + self.up2(c + self.b4(c))
        a = a + self.up1(b + self.b3(b))
        return x[:, :3] + self.out(a + self.b5(a))


def _tensor(arrays: list[np.ndarray]) -> torch.Tensor:
    return torch.as_tensor(np.stack(arrays), dtype=torch.float32).permute(0, 3, 1, 2)


def train(pool: list[dict], with_warps: bool, steps: int, seed: int) -> tuple[Fusion, float]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = Fusion(inputs(pool[0], with_warps).shape[-1])
    optimizer = torch.optim.AdamW(model.parameters(), 5e-4, weight_decay=1e-4)
    start = time.process_time()
    for step in range(steps):
        xs, ys = [], []
        for _ in range(16):
            example = pool[rng.integers(len(pool))]
            height, width = example["rendering"].shape[:2]
            top, left = rng.integers(height - PATCH + 1), rng.integers(width - PATCH + 1)
            window = (slice(top, top + PATCH), slice(left, left + PATCH))
            xs.append(inputs(example, with_warps, window))
            ys.append(example["photo"][window].astype(np.float32))
        loss = F.mse_loss(model(_tensor(xs)), _tensor(ys))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # one bad batch must not wreck a short run
        optimizer.step()
        if step % 100 == 0:
            print(f"{'with' if with_warps else 'without'} warps, step {step}: loss {loss.item():.4f}", file=sys.stderr, flush=True)
    return model, (time.process_time() - start) / 60


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(psnr(*(torch.as_tensor(x.astype(np.float32)).permute(2, 0, 1) for x in (a, b))))


@torch.no_grad()
def restored(model: Fusion, example: dict, with_warps: bool) -> np.ndarray:
    x = _tensor([inputs(example, with_warps)])
    height, width = x.shape[-2:]
    padded = F.pad(x, (0, (-width) % 4, 0, (-height) % 4), mode="replicate")
    return model(padded)[0, :, :height, :width].clamp(0, 1).permute(1, 2, 0).numpy()


def scores(examples: list[dict], models: dict[str, tuple[Fusion, bool]]) -> dict[str, dict[str, list[float]]]:
    """scene -> column -> PSNR per example (rendering, mean of the warps, each model's output)."""
    table: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for example in examples:
        row, photo = table[example["scene"]], example["photo"]
        row["rendering"].append(_psnr(example["rendering"], photo))
        row["mean of the warped views"].append(_psnr(mean_warp(example), photo))
        for name, (model, with_warps) in models.items():
            row[name].append(_psnr(restored(model, example, with_warps), photo))
    return table


def report_lines(title: str, table: dict[str, dict[str, list[float]]]) -> list[str]:
    columns = list(next(iter(table.values())))
    lines = [f"### {title}", "", "| scene | examples | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    every = {c: [p for row in table.values() for p in row[c]] for c in columns}
    for name, row in [*sorted(table.items()), ("all", every)]:
        base = np.mean(row["rendering"])
        cells = [f"{base:.2f}"] + [f"{np.mean(row[c]):.2f} ({np.mean(row[c]) - base:+.2f})" for c in columns[1:]]
        lines.append(f"| {name} | {len(row['rendering'])} | " + " | ".join(cells) + " |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, nargs="+", required=True, help="degraded-rendering corpora to train on")
    parser.add_argument("--evaluate", type=Path, required=True, help="the evaluation scenes' corpus (scored only)")
    parser.add_argument("--steps", type=int, default=700, help="training steps of each variant (16 patches each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args()
    training = corpus_examples(args.corpus)
    pool = [e for e in training if not is_held_out(e["scene"], HELD_OUT)]
    held_out = [e for e in training if is_held_out(e["scene"], HELD_OUT)]
    evaluation = corpus_examples([args.evaluate])
    models, minutes = {}, {}
    for name, with_warps in (("rendering alone", False), ("with warped views", True)):
        model, minutes[name] = train(pool, with_warps, args.steps, args.seed)
        models[name] = (model, with_warps)
    command = shlex.join([".venv/bin/python", "benchmarks/warped_views_fusion.py", *sys.argv[1:]])
    lines = [
        "# Warped input views as evidence for repairing renderings", "",
        f"Written by `{command}`.", "",
        "PSNR (dB) against the photograph at the corpus's size, and in brackets the change from the rendering. "
        f"Each variant trained on {len(pool)} examples of {len({e['scene'] for e in pool})} scenes for {args.steps} steps "
        f"of 16 patches of {PATCH} px (CPU minutes: " + ", ".join(f"{name} {m:.1f}" for name, m in minutes.items()) + ").", "",
        *report_lines("Evaluation scenes (never trained on)", scores(evaluation, models)),
    ]  # fmt: skip
    if held_out:  # the corpora may hold none of them
        lines += report_lines(f"Held-out training scenes ({', '.join(HELD_OUT)}, and their arcs)", scores(held_out, models))
    write_text(args.report, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
