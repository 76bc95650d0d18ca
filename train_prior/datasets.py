"""(observed views + target) examples for training the prior, drawn deterministically by index.

Example ``i`` depends only on (seed, i): which dataset (by weight), which scene, which views and
which crop. That makes data order part of the step count, so a resumed run sees exactly the
examples an uninterrupted run would, on any number of processes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from reconfusion.cameras import normalize_for_prior
from reconfusion.scene import Scene


@dataclass(frozen=True)
class WeightedSource:
    """Scenes of one dataset and its share of the examples."""

    scenes: Sequence[Scene]
    weight: float = 1.0


def _crop_and_resize(image: np.ndarray, intrinsics: np.ndarray, resolution: int, rng: np.random.Generator, crop_scale):
    """A random square crop (side a fraction of the short side) resized to ``resolution``, with intrinsics to match."""
    height, width = image.shape[:2]
    side = int(round(min(height, width) * rng.uniform(*crop_scale)))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    crop = image[top : top + side, left : left + side]
    resized = np.asarray(
        Image.fromarray((crop * 255 + 0.5).astype(np.uint8)).resize((resolution, resolution), Image.BICUBIC),
        dtype=np.float32,
    ) / 255.0
    scale = resolution / side
    fx, fy, cx, cy = intrinsics
    return resized, np.array([fx * scale, fy * scale, (cx - left) * scale, (cy - top) * scale])


class ViewCache:
    """Views decoded once and kept as uint8, downscaled (area average) to a short side of ``short_side`` (None:
    full size); the least recently used are dropped beyond ``megabytes``. Decoding and composing a full-size
    photograph costs about 0.2 s on a CPU core (measured on the Strecha scenes), a cached view almost nothing.
    Each process (each DataLoader worker) fills its own."""

    def __init__(self, short_side: int | None, megabytes: float):
        self.short_side, self.budget, self.used = short_side, megabytes * 2**20, 0
        self.views: OrderedDict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def get(self, scene: Scene, view: int) -> tuple[np.ndarray, np.ndarray]:
        """(RGB float32 in [0, 1] composed on the scene's background, intrinsics fx, fy, cx, cy) of a view."""
        key = (id(scene), view)
        if key in self.views:
            self.views.move_to_end(key)
            image, scale = self.views[key]
        else:
            image, scale = _downscale(scene.image(view), self.short_side)
            if image.nbytes <= self.budget:
                self.views[key] = image, scale
                self.used += image.nbytes
                while self.used > self.budget:
                    self.used -= self.views.popitem(last=False)[1][0].nbytes
        return image.astype(np.float32) / 255.0, scene.intrinsics[view] * np.tile(scale, 2)


def _downscale(image: np.ndarray, short_side: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``image`` (float in [0, 1]) as uint8 with its short side at most ``short_side``, and the (x, y) scale."""
    height, width = image.shape[:2]
    pixels = Image.fromarray((image * 255 + 0.5).astype(np.uint8))
    factor = 1.0 if short_side is None else short_side / min(height, width)
    if factor >= 1.0:
        return np.asarray(pixels), np.ones(2)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return np.asarray(pixels.resize(size, Image.BOX)), np.array([size[0] / width, size[1] / height])


def _choose_views(scene: Scene, num_observed: int, neighbourhood: int, rng: np.random.Generator):
    """A random target and ``num_observed`` distinct views among its nearest ``neighbourhood``."""
    target = int(rng.integers(len(scene)))
    centres = scene.c2w[:, :3, 3]
    distance = np.linalg.norm(centres - centres[target], axis=-1)
    distance[target] = np.inf
    candidates = np.argsort(distance, kind="stable")[: max(neighbourhood, num_observed)]
    candidates = candidates[np.isfinite(distance[candidates])]
    observed = rng.choice(candidates, size=num_observed, replace=False)
    return [int(v) for v in observed], target


class MultiviewDataset(torch.utils.data.Dataset):
    """Map-style dataset over all integers: item ``i`` is one (observed + target) example."""

    def __init__(
        self,
        sources: Sequence[WeightedSource],
        resolution: int,
        num_observed: int = 3,
        neighbourhood: int = 8,
        crop_scale: tuple[float, float] = (0.85, 1.0),
        seed: int = 0,
        cache_megabytes: float = 1024,
        shrink_views: bool = True,
    ):
        self.sources = [s for s in sources if s.scenes]
        weights = np.array([s.weight for s in self.sources], dtype=np.float64)
        if not self.sources or weights.sum() <= 0:
            raise ValueError("MultiviewDataset needs at least one source with scenes and a positive weight")
        self.probabilities = weights / weights.sum()
        self.resolution, self.num_observed, self.neighbourhood = resolution, num_observed, neighbourhood
        self.crop_scale, self.seed = crop_scale, seed
        # Shrunk to twice the resolution, crops (85-100% of the short side) still shrink 1.7-2x when resized.
        self.cache = ViewCache(2 * resolution if shrink_views else None, cache_megabytes)

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(index)])
        source = self.sources[int(rng.choice(len(self.sources), p=self.probabilities))]
        scene = source.scenes[int(rng.integers(len(source.scenes)))]
        observed, target = _choose_views(scene, self.num_observed, self.neighbourhood, rng)
        images, intrinsics = zip(
            *(_crop_and_resize(*self.cache.get(scene, v), self.resolution, rng, self.crop_scale) for v in [*observed, target])
        )
        obs_c2w, target_c2w, near, far = normalize_for_prior(scene.c2w[observed], scene.c2w[target][None])
        as_tensor = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
        return {
            "observed_images": as_tensor(np.stack(images[:-1])).permute(0, 3, 1, 2),
            "observed_c2w": as_tensor(obs_c2w),
            "observed_intrinsics": as_tensor(np.stack(intrinsics[:-1])),
            "target_image": as_tensor(images[-1]).permute(2, 0, 1),
            "target_c2w": as_tensor(target_c2w[0]),
            "target_intrinsics": as_tensor(intrinsics[-1]),
            "near": as_tensor(near),
            "far": as_tensor(far),
        }


class StepSampler(torch.utils.data.Sampler):
    """Indices for process ``rank`` of ``world``, from ``start_step`` on: step s, rank r gets a disjoint block."""

    def __init__(self, batch_size: int, rank: int = 0, world: int = 1, start_step: int = 0):
        self.batch_size, self.rank, self.world, self.start_step = batch_size, rank, world, start_step

    def __iter__(self) -> Iterator[int]:
        step = self.start_step
        while True:
            first = (step * self.world + self.rank) * self.batch_size
            yield from range(first, first + self.batch_size)
            step += 1
