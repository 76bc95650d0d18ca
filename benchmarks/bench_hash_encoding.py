"""nerfstudio's pure-torch hash encoding against nerfstudio_plugin.hash_encoding.FastHashEncoding, in one run.

Times a training step (forward + backward of 1024 rays) and a rendering pass (forward of 4096 rays, no
gradient) of the CPU preset's model, alternating the two encodings, and prints the ratios.

    .venv/bin/python benchmarks/bench_hash_encoding.py --repeats 5
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.field_components.encodings import HashEncoding

from nerfstudio_plugin import methods
from nerfstudio_plugin.hash_encoding import FastHashEncoding


def rays(count: int, generator: torch.Generator) -> RayBundle:
    directions = torch.randn(count, 3, generator=generator)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    return RayBundle(
        origins=torch.tensor([0.0, 0.0, 2.0]).expand(count, 3).clone(), directions=directions,
        pixel_area=torch.full((count, 1), 1e-4), camera_indices=torch.zeros(count, 1, dtype=torch.long),
    )  # fmt: skip


def set_encoding(model: torch.nn.Module, fast: bool) -> None:
    for module in model.modules():
        if isinstance(module, HashEncoding):
            module.__class__ = FastHashEncoding if fast else HashEncoding


def seconds(model, fast: bool, train: bool, generator: torch.Generator) -> float:
    set_encoding(model, fast)
    model.train(train)
    bundle = rays(1024 if train else 4096, generator)
    start = time.perf_counter()
    if train:
        model(bundle)["rgb"].sum().backward()
    else:
        with torch.no_grad():
            model(bundle)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = replace(methods.cpu_config("bench", None).pipeline.model, near_plane=0.1, far_plane=4.0)
    model = config.setup(scene_box=SceneBox(torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=3, metadata={})
    generator = torch.Generator().manual_seed(0)
    for train in (True, False):
        times = {False: [], True: []}
        for repeat in range(args.repeats + 1):
            for fast in (False, True):
                elapsed = seconds(model, fast, train, generator)
                if repeat:  # the first round warms up
                    times[fast].append(elapsed)
        stock, fast = (sorted(times[k])[len(times[k]) // 2] for k in (False, True))
        what = "training step, 1024 rays" if train else "rendering, 4096 rays"
        print(f"{what}: stock {stock:.3f} s, fast {fast:.3f} s (median of {args.repeats}), {stock / fast:.2f}x faster, "
              f"{args.threads} thread(s)")


if __name__ == "__main__":
    main()
