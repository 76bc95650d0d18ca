"""Forward time of one PixelNeRF render (inference, no gradient) on the CPU.

Default: the tiny preset's shapes - 64x64 observed images, 3 views, batch 1, rendered at the 16x16
latent resolution - with PixelNeRF's default (tiny) configuration.

    python benchmarks/bench_pixelnerf.py
    python benchmarks/bench_pixelnerf.py --latent-size 64 --image-size 512   # the sd preset's shapes
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
import tyro

from reconfusion.pixelnerf import PixelNeRF


@dataclass(frozen=True)
class BenchConfig:
    """What to time."""

    image_size: int = 64
    """Side of the observed images."""
    latent_size: int = 16
    """Side of the rendered (latent-resolution) output."""
    views: int = 3
    """Number of observed views."""
    batch: int = 1
    """Batch size."""
    repeats: int = 20
    """Timed renders (after two warm-up renders)."""
    threads: int = 2
    """torch CPU threads."""
    chunk: int = 8192
    """Rays per network evaluation."""


def _inputs(config: BenchConfig) -> tuple[torch.Tensor, ...]:
    """Random images and cameras on a circle of radius 1.5 looking at the origin (OpenGL c2w)."""
    generator = torch.Generator().manual_seed(0)
    b, v, s = config.batch, config.views, config.image_size
    images = torch.rand(b, v, 3, s, s, generator=generator)
    angles = torch.linspace(-0.6, 0.6, v + 1)
    c2w = torch.zeros(v + 1, 4, 4)
    c2w[:, 0, 0], c2w[:, 0, 2], c2w[:, 2, 0], c2w[:, 2, 2] = angles.cos(), angles.sin(), -angles.sin(), angles.cos()
    c2w[:, 1, 1], c2w[:, 3, 3] = 1.0, 1.0
    c2w[:, :3, 3] = 1.5 * c2w[:, :3, 2]
    focal = 1.2 * s
    intr = torch.tensor([focal, focal, s / 2, s / 2]).expand(b, v, 4)
    target_intr = intr[:, 0] * (config.latent_size / s)
    return images, c2w[None, :v].expand(b, -1, -1, -1), intr, c2w[None, v].expand(b, -1, -1), target_intr


def main(config: BenchConfig) -> None:
    """Print the median and minimum wall-clock time of one render."""
    torch.set_num_threads(config.threads)
    torch.manual_seed(0)
    model = PixelNeRF().eval()
    args = _inputs(config)
    times = []
    with torch.no_grad():
        for i in range(config.repeats + 2):
            start = time.perf_counter()
            model(*args, height=config.latent_size, width=config.latent_size, chunk=config.chunk)
            if i >= 2:
                times.append(time.perf_counter() - start)
    params = sum(p.numel() for p in model.parameters())
    settings = {k: v for k, v in model.config.items() if not k.startswith("_")}
    print(
        f"PixelNeRF forward ({params} params, config {settings}), images {config.image_size}x"
        f"{config.image_size}, {config.views} views, batch {config.batch}, output {config.latent_size}x"
        f"{config.latent_size}, {torch.get_num_threads()} threads: median {1e3 * statistics.median(times):.1f} ms, "
        f"min {1e3 * min(times):.1f} ms over {len(times)} renders"
    )


if __name__ == "__main__":
    main(tyro.cli(BenchConfig))
