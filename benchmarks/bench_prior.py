"""Time the tiny prior: one 10-step sample, one PixelNeRF render, one training step.

    python benchmarks/bench_prior.py                   # CPU, and CUDA when available
    python benchmarks/bench_prior.py --devices cpu --repeats 3

Weights are random (timings do not depend on them). Each number is the median of ``repeats`` timed
calls after one warm-up call; CUDA timings synchronise before reading the clock.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from dataclasses import dataclass

import torch
import tyro

from reconfusion.presets import TinyPreset
from reconfusion.prior import PriorBatch, ReconFusionPrior


@dataclass(frozen=True)
class BenchPriorConfig:
    """What to time."""

    devices: tuple[str, ...] = ("cpu", "cuda")
    """Devices to time on; cuda is skipped where unavailable."""
    repeats: int = 5
    """Timed calls per measurement (median reported)."""
    views: int = 3
    """Observed views per example."""
    train_batch: int = 16
    """Batch size of the timed training step."""
    threads: int = 2
    """CPU threads (the development machines have 2 cores)."""


def _look_at(angle: float) -> torch.Tensor:
    pos = torch.tensor([math.sin(angle), 0.4, math.cos(angle)])
    back = pos / pos.norm()
    right = torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0]), back)
    right = right / right.norm()
    c2w = torch.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, torch.linalg.cross(back, right), back, pos
    return c2w


def make_batch(size: int, views: int, resolution: int, device: str) -> PriorBatch:
    c2w = torch.stack([torch.stack([_look_at(0.5 * (i + j)) for j in range(views + 1)]) for i in range(size)])
    k = torch.tensor([1.2, 1.2, 0.5, 0.5]) * resolution
    batch = PriorBatch(
        observed_images=torch.rand(size, views, 3, resolution, resolution),
        observed_c2w=c2w[:, :views],
        observed_intrinsics=k.expand(size, views, 4).clone(),
        target_image=torch.rand(size, 3, resolution, resolution),
        target_c2w=c2w[:, views],
        target_intrinsics=k.expand(size, 4).clone(),
        near=torch.full((size,), 0.1),
        far=torch.full((size,), 3.0),
    )
    return PriorBatch(**{name: value.to(device) for name, value in batch.__dict__.items()})


def timed(fn, device: str, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after a warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_device(config: BenchPriorConfig, device: str) -> dict[str, float]:
    torch.manual_seed(0)
    prior = ReconFusionPrior.from_preset("tiny").to(device).eval()
    res, latent = prior.resolution, prior.latent_resolution
    one = make_batch(1, config.views, res, device)
    cams = (one.observed_images, one.observed_c2w, one.observed_intrinsics, one.target_c2w, one.target_intrinsics)
    gen = torch.Generator(device).manual_seed(0)
    init = one.target_image
    scale = latent / res
    target_k_latent = one.target_intrinsics * torch.tensor([scale, scale, scale, scale], device=device)

    def render(size: int, k: torch.Tensor):
        with torch.no_grad():
            prior.pixelnerf(*cams[:4], k, height=size, width=size, near=0.1, far=3.0)

    results = {
        f"sample, 10 DDIM steps, guidance 3 (batch 1, {res}x{res})": timed(
            lambda: prior.sample(*cams, init_images=init, t_start=0.7, num_steps=10, guidance_scale=3.0, generator=gen),
            device, config.repeats,
        ),
        f"sample, 10 DDIM steps, no guidance (batch 1, {res}x{res})": timed(
            lambda: prior.sample(*cams, init_images=init, t_start=0.7, num_steps=10, guidance_scale=1.0, generator=gen),
            device, config.repeats,
        ),
        f"PixelNeRF render at latent resolution {latent}x{latent} (batch 1)": timed(
            lambda: render(latent, target_k_latent), device, config.repeats
        ),
        f"PixelNeRF render at {res}x{res} (batch 1)": timed(
            lambda: render(res, one.target_intrinsics), device, config.repeats
        ),
    }  # fmt: skip
    prior.train()
    batch = make_batch(config.train_batch, config.views, res, device)
    optimizer = torch.optim.AdamW([p for p in prior.parameters() if p.requires_grad], lr=1e-4)

    def train_step():
        losses = prior.loss(batch, generator=gen)
        optimizer.zero_grad()
        losses.total.backward()
        optimizer.step()

    results[f"training step: loss + backward + AdamW (batch {config.train_batch})"] = timed(
        train_step, device, config.repeats
    )
    return results


def main(config: BenchPriorConfig) -> None:
    torch.set_num_threads(config.threads)
    logging.basicConfig(level=logging.WARNING)
    sizes = {
        name: sum(p.numel() for p in module.parameters())
        for name, module in ReconFusionPrior.from_preset("tiny")._components().items()
        if isinstance(module, torch.nn.Module)
    }
    print(f"tiny preset {TinyPreset().resolution}x{TinyPreset().resolution}, parameters: {sizes}")
    for device in config.devices:
        if device == "cuda" and not torch.cuda.is_available():
            print("cuda: not available, skipped")
            continue
        label = torch.cuda.get_device_name(0) if device == "cuda" else f"cpu ({config.threads} threads)"
        print(f"\n{label}, torch {torch.__version__}, median of {config.repeats}:")
        for name, seconds in bench_device(config, device).items():
            print(f"  {name:<70s} {seconds * 1000:9.1f} ms")


if __name__ == "__main__":
    main(tyro.cli(BenchPriorConfig))
