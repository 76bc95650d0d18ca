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
import torch.nn.functional as F
from PIL import Image

from reconfusion.cameras import normalize_for_prior
from reconfusion.corpus import DegradedFit
from reconfusion.degradation import synthetic_rendering
from reconfusion.scene import Scene
from reconfusion.warping import warp_views

WARP_KEYS = ("warped_images", "warped_valid")
"""An example's observed views warped into its target (a repairing prior with warped views; see PriorBatch)."""


def warps_of(batch: dict) -> dict:
    """The warped views of a batch or example, as keyword arguments of the prior's condition and sample."""
    return {key: batch[key] for key in WARP_KEYS if key in batch}


@dataclass(frozen=True)
class WeightedSource:
    """Scenes of one dataset and its share of the examples."""

    scenes: Sequence[Scene]
    weight: float = 1.0


def _crop_box(height: int, width: int, rng: np.random.Generator, crop_scale) -> tuple[int, int, int]:
    """(top, left, side) of a random square crop whose side is a fraction of the short side."""
    side = int(round(min(height, width) * rng.uniform(*crop_scale)))
    return int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1)), side


def _resize_crop(image: np.ndarray, intrinsics: np.ndarray, box: tuple[int, int, int], resolution: int):
    """The square crop ``box`` of ``image`` resized to ``resolution``, with intrinsics to match."""
    top, left, side = box
    crop = image[top : top + side, left : left + side]
    resized = np.asarray(
        Image.fromarray((crop * 255 + 0.5).astype(np.uint8)).resize((resolution, resolution), Image.BICUBIC),
        dtype=np.float32,
    ) / 255.0
    scale = resolution / side
    fx, fy, cx, cy = intrinsics
    return resized, np.array([fx * scale, fy * scale, (cx - left) * scale, (cy - top) * scale])


def _crop_and_resize(image: np.ndarray, intrinsics: np.ndarray, resolution: int, rng: np.random.Generator, crop_scale):
    """A random square crop (side a fraction of the short side) resized to ``resolution``, with intrinsics to match."""
    return _resize_crop(image, intrinsics, _crop_box(*image.shape[:2], rng, crop_scale), resolution)


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
        synthetic_renderings: bool = False,
        warped_views: int = 0,
    ):
        self.sources = [s for s in sources if s.scenes]
        weights = np.array([s.weight for s in self.sources], dtype=np.float64)
        if not self.sources or weights.sum() <= 0:
            raise ValueError("MultiviewDataset needs at least one source with scenes and a positive weight")
        self.probabilities = weights / weights.sum()
        self.resolution, self.num_observed, self.neighbourhood = resolution, num_observed, neighbourhood
        self.crop_scale, self.seed, self.synthetic_renderings = crop_scale, seed, synthetic_renderings
        self.warped_views = warped_views
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
        example = _example(images[:-1], intrinsics[:-1], scene.c2w[observed], images[-1], intrinsics[-1], scene.c2w[target])
        if self.synthetic_renderings:
            example["rendering"] = _as_tensor(synthetic_rendering(images[-1], rng)).permute(2, 0, 1)
        if self.warped_views:  # no depth to warp with: the views show nothing of the target
            side = self.resolution
            example["warped_images"] = torch.zeros(self.warped_views, 3, side, side)
            example["warped_valid"] = torch.zeros(self.warped_views, 1, side, side)
        return example


def _as_tensor(array) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array), dtype=torch.float32)


def _example(observed_images, observed_intrinsics, observed_c2w, target_image, target_intrinsics, target_c2w) -> dict:
    """The tensors of one example (PriorBatch's fields), cameras normalised as the prior expects."""
    obs_c2w, target_c2w, near, far = normalize_for_prior(np.asarray(observed_c2w), np.asarray(target_c2w)[None])
    return {
        "observed_images": _as_tensor(np.stack(observed_images)).permute(0, 3, 1, 2),
        "observed_c2w": _as_tensor(obs_c2w),
        "observed_intrinsics": _as_tensor(np.stack(observed_intrinsics)),
        "target_image": _as_tensor(target_image).permute(2, 0, 1),
        "target_c2w": _as_tensor(target_c2w[0]),
        "target_intrinsics": _as_tensor(target_intrinsics),
        "near": _as_tensor(near),
        "far": _as_tensor(far),
    }


class DegradedDataset(torch.utils.data.Dataset):
    """Examples of the degraded-rendering corpus (:mod:`reconfusion.corpus`), drawn deterministically by index: a
    fit (by its share of the examples), a stop and a held-out view; the observed views are the fit's training
    views nearest to the target; target and rendering share one random crop. With ``warped_views``, that many of
    the observed views (nearest first) are warped into the target with the rendering's stored depth, at full size
    before the crop."""

    def __init__(self, fits: Sequence[DegradedFit], resolution: int, num_observed: int = 3,
                 crop_scale: tuple[float, float] = (0.85, 1.0), seed: int = 0, cache_megabytes: float = 1024,
                 warped_views: int = 0):  # fmt: skip
        self.fits = [fit for fit in fits if fit.examples and len(fit.train_ids) >= num_observed]
        if not self.fits:
            raise ValueError(f"no fit of the corpus has {num_observed} training views and held-out renderings")
        counts = np.array([fit.examples for fit in self.fits], dtype=np.float64)
        self.probabilities = counts / counts.sum()
        self.resolution, self.num_observed, self.crop_scale, self.seed = resolution, num_observed, crop_scale, seed
        self.warped_views = warped_views
        self.cache = ViewCache(None, cache_megabytes)
        self.renders: OrderedDict[tuple[int, int], dict] = OrderedDict()

    def __len__(self) -> int:
        return 2**62

    def _renders(self, fit_index: int, stop: int) -> dict:
        key = (fit_index, stop)
        if key not in self.renders:
            self.renders[key] = self.fits[fit_index].renders(stop)
            if len(self.renders) > 512:
                self.renders.popitem(last=False)
        self.renders.move_to_end(key)
        return self.renders[key]

    def _draw(self, index: int) -> tuple[np.random.Generator, int, int, int]:
        """(the example's generator after drawing them, fit index, stop, position among the stop's renderings)."""
        rng = np.random.default_rng([self.seed, int(index)])
        fit_index = int(rng.choice(len(self.fits), p=self.probabilities))
        fit = self.fits[fit_index]
        stop = fit.stops[int(rng.integers(len(fit.stops)))]
        return rng, fit_index, stop, int(rng.integers(len(fit.held_out_ids)))

    def describe(self, index: int) -> dict:
        """Where example ``index`` comes from: scene, training views, stop (and whether it stopped early), view, and
        the fit's index in :attr:`fits`."""
        _, fit_index, stop, position = self._draw(index)
        fit = self.fits[fit_index]
        return {"scene": fit.scene.root.name, "views": fit.views, "stop": stop, "early": stop < fit.iterations,
                "view": fit.held_out_ids[position], "fit": fit_index}  # fmt: skip

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng, fit_index, stop, position = self._draw(index)
        fit = self.fits[fit_index]
        renders = self._renders(fit_index, stop)
        target = int(renders["ids"][position])
        centres = fit.scene.c2w[:, :3, 3]
        trained = np.array(fit.train_ids)
        nearest = trained[np.argsort(np.linalg.norm(centres[trained] - centres[target], axis=-1), kind="stable")]
        observed = [int(v) for v in nearest[: self.num_observed]]
        warped = [int(v) for v in nearest[: self.warped_views]]
        fetched = {v: self.cache.get(fit.scene, v) for v in (*observed, *warped)}
        views = [_crop_and_resize(*fetched[v], self.resolution, rng, self.crop_scale) for v in observed]
        photo, intrinsics = self.cache.get(fit.scene, target)
        box = _crop_box(*photo.shape[:2], rng, self.crop_scale)
        target_image, target_intrinsics = _resize_crop(photo, intrinsics, box, self.resolution)
        rendering = _resize_crop(renders["rgb"][position].astype(np.float32) / 255.0, intrinsics, box, self.resolution)[0]
        example = _example([v[0] for v in views], [v[1] for v in views], fit.scene.c2w[observed], target_image,
                           target_intrinsics, fit.scene.c2w[target])  # fmt: skip
        example["rendering"] = _as_tensor(rendering).permute(2, 0, 1)
        if self.warped_views:
            depth = renders["depth"][position].astype(np.float32)
            example.update(self._warped(fit, target, intrinsics, depth, {v: fetched[v] for v in warped}, box))
        return example

    def _warped(self, fit: DegradedFit, target: int, intrinsics: np.ndarray, depth: np.ndarray,
                views: dict[int, tuple[np.ndarray, np.ndarray]], box) -> dict:  # fmt: skip
        """``views`` (view -> image, intrinsics) warped into the target at ``depth`` at full size, then cropped to
        ``box`` and resized with their validity as premultiplied alpha (so that invalid pixels do not bleed into
        valid ones)."""
        images, view_intrinsics = zip(*views.values())
        colours, valid = warp_views(
            _as_tensor(fit.scene.c2w[target])[None], _as_tensor(intrinsics)[None], _as_tensor(depth)[None],
            [_as_tensor(image).permute(2, 0, 1)[None] for image in images],
            _as_tensor(fit.scene.c2w[np.asarray(list(views))])[None], _as_tensor(np.stack(view_intrinsics))[None],
        )  # fmt: skip
        top, left, side = box
        window = torch.cat([colours[0] * valid[0], valid[0]], 1)[..., top : top + side, left : left + side]
        small = F.interpolate(window, size=(self.resolution,) * 2, mode="bilinear", antialias=True, align_corners=False)
        alpha = small[:, 3:].clamp(0, 1)
        return {"warped_images": (small[:, :3] / alpha.clamp(min=1e-3) * (alpha > 1e-3)).clamp(0, 1),
                "warped_valid": alpha}


class Mixture(torch.utils.data.Dataset):
    """Item ``i`` of one of several datasets, chosen by weight from (seed, i)."""

    def __init__(self, datasets: Sequence[torch.utils.data.Dataset], weights: Sequence[float], seed: int = 0):
        weights = np.asarray(weights, dtype=np.float64)
        if len(datasets) != len(weights) or not len(datasets) or weights.min() < 0 or weights.sum() <= 0:
            raise ValueError("Mixture needs one positive weight per dataset")
        self.datasets, self.probabilities, self.seed = list(datasets), weights / weights.sum(), seed

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        choice = np.random.default_rng([self.seed, int(index), 1]).choice(len(self.datasets), p=self.probabilities)
        return self.datasets[int(choice)][index]


class Recoloured(torch.utils.data.Dataset):
    """Item ``i`` of ``dataset`` with its colour channels permuted and scaled (gains 0.75-1.25), alike in every image
    of the example (observed views, target, rendering), drawn from (seed, i): a repairing prior then cannot tell a
    training scene by its colours and paint them into another, and has to take colours from the observed views."""

    def __init__(self, dataset: torch.utils.data.Dataset, seed: int = 0):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(index), 2])
        order, gain = torch.as_tensor(rng.permutation(3)), _as_tensor(rng.uniform(0.75, 1.25, 3))[:, None, None]
        example = dict(self.dataset[index])
        for key in ("observed_images", "target_image", "rendering", "warped_images"):
            if key in example:
                example[key] = (example[key].index_select(-3, order) * gain).clamp(0.0, 1.0)
        return example


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
