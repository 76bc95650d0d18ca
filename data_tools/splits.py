"""Sparse-view split protocols -> ``train_test_split_{N}.json`` files.

Ids index a scene's frames sorted by file name (the format of the released ReconFusion splits).

- ``llff`` (RegNeRF): every 8th image (``i % 8 == 0``) is a test view; the ``N`` training views are
  ``round(linspace(0, M - 1, N))`` of the ``M`` remaining images, rounded half to even like Python's
  ``round`` (RegNeRF's ``internal/datasets.py``, LLFF loader).
- ``dtu`` (pixelNeRF split, as RegNeRF uses it): training views are the first ``N`` of
  ``DTU_TRAIN_IDS`` in that order; the test views are the 49 ids minus those nine and minus
  ``DTU_EXCLUDED_IDS`` (views that show little of the object), for every ``N``.
- ``blender``: the dataset's own test frames (all of them) are the test views; the ``N`` training views
  are chosen from its train frames by farthest-point sampling of camera centres, starting from the first
  train frame (RegNeRF instead takes the first ``N`` train frames, which cluster on lego).
- ``auto``: every 8th image tests; the training views are a farthest-point sample of the remaining
  camera centres, starting from the one closest to their mean.

Every protocol is deterministic; the ``N``-view training set of a farthest-point protocol is contained
in the larger ones.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from data_tools.importers import SUBSETS_KEY
from reconfusion.files import InputError, read_json
from reconfusion.scene import TRANSFORMS, Scene, Split, load_scene, validate_split, write_split

logger = logging.getLogger("reconfusion")

Protocol = Literal["llff", "dtu", "blender", "auto"]
HOLDOUT_EVERY = 8
DTU_TRAIN_IDS = (25, 22, 28, 40, 44, 48, 0, 8, 13)
DTU_EXCLUDED_IDS = (3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 36, 37, 38, 39)
DTU_NUM_IDS = 49


def holdout_ids(num_images: int, every: int = HOLDOUT_EVERY) -> list[int]:
    """Every ``every``-th image, starting at 0: the test views of the llff and auto protocols."""
    return list(range(0, num_images, every))


def _check_count(num_views: int, available: int, what: str) -> None:
    if num_views < 1:
        raise InputError(f"{num_views} training views requested; ask for at least 1")
    if num_views > available:
        raise InputError(f"{num_views} training views requested but only {available} {what}; ask for fewer views")


def llff_split(num_images: int, num_views: int) -> Split:
    """RegNeRF's LLFF split of ``num_images`` frames with ``num_views`` training views."""
    test = holdout_ids(num_images)
    rest = [i for i in range(num_images) if i % HOLDOUT_EVERY != 0]
    _check_count(num_views, len(rest), "non-test images (every 8th image is a test view)")
    picks = [round(float(x)) for x in np.linspace(0, len(rest) - 1, num_views)]
    return Split(tuple(rest[p] for p in picks), tuple(test))


def dtu_split(num_images: int, num_views: int) -> Split:
    """The fixed pixelNeRF / RegNeRF DTU split (needs the 49 standard views)."""
    if num_images < DTU_NUM_IDS:
        raise InputError(
            f"the DTU protocol needs the {DTU_NUM_IDS} standard views but the scene has {num_images}; "
            "use --protocol auto"
        )
    _check_count(num_views, len(DTU_TRAIN_IDS), "fixed DTU training views")
    skip = set(DTU_TRAIN_IDS) | set(DTU_EXCLUDED_IDS)
    return Split(DTU_TRAIN_IDS[:num_views], tuple(i for i in range(DTU_NUM_IDS) if i not in skip))


def _first_max(values: np.ndarray, tolerance: float) -> int:
    """Index of the largest value; values within ``tolerance`` of it count as ties (lowest index wins)."""
    return int(np.flatnonzero(values >= values.max() - tolerance)[0])


def farthest_point_sampling(points: np.ndarray, num: int, start: int) -> list[int]:
    """Indices of ``num`` rows of ``points`` (M, D), greedily farthest from those already chosen.

    Starts at row ``start``. Distances equal up to rounding (1e-9 of the point spread) are ties that
    go to the lowest index, so the result does not hinge on floating-point noise.
    """
    points = np.asarray(points, dtype=np.float64)
    if not 0 < num <= len(points):
        raise ValueError(f"cannot choose {num} of {len(points)} points")
    tolerance = 1e-9 * max(float(np.ptp(points, axis=0).max()), 1e-12)
    chosen = [int(start)]
    distance = np.linalg.norm(points - points[start], axis=-1)
    while len(chosen) < num:
        distance[chosen] = -np.inf
        nxt = _first_max(distance, tolerance)
        chosen.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(points - points[nxt], axis=-1))
    return chosen


def auto_split(centres: np.ndarray, num_views: int) -> Split:
    """Every 8th image tests; training views by farthest-point sampling of the other camera centres."""
    centres = np.asarray(centres, dtype=np.float64)
    test = holdout_ids(len(centres))
    rest = [i for i in range(len(centres)) if i % HOLDOUT_EVERY != 0]
    _check_count(num_views, len(rest), "non-test images (every 8th image is a test view)")
    candidates = centres[rest]
    spread = max(float(np.ptp(candidates, axis=0).max()), 1e-12)
    start = _first_max(-np.linalg.norm(candidates - candidates.mean(0), axis=-1), 1e-9 * spread)
    picks = farthest_point_sampling(candidates, num_views, start)
    return Split(tuple(sorted(rest[p] for p in picks)), tuple(test))


def blender_split(subsets: Sequence[str], centres: np.ndarray, num_views: int) -> Split:
    """The dataset's test frames test; training views by farthest-point sampling of its train frames."""
    train = [i for i, name in enumerate(subsets) if name == "train"]
    test = [i for i, name in enumerate(subsets) if name == "test"]
    if not test:
        raise InputError("the scene records no dataset test frames; use --protocol auto")
    _check_count(num_views, len(train), "dataset train frames")
    picks = farthest_point_sampling(np.asarray(centres, dtype=np.float64)[train], num_views, 0)
    return Split(tuple(sorted(train[p] for p in picks)), tuple(test))


def read_subsets(scene: Path) -> list[str]:
    """The per-frame dataset subsets an importer recorded, in sorted-frame (id) order."""
    source = Path(scene) / TRANSFORMS
    meta = read_json(source)
    subsets, frames = meta.get(SUBSETS_KEY), meta.get("frames", [])
    if subsets is None:
        raise InputError(
            f"{source}: no '{SUBSETS_KEY}' record of the dataset's train/test frames; import the scene with "
            "`reconfusion data import blender` (or nerfstudio with test_filenames) or use --protocol auto"
        )
    if len(subsets) != len(frames):
        raise InputError(f"{source}: '{SUBSETS_KEY}' has {len(subsets)} entries for {len(frames)} frames; re-import")
    order = sorted(range(len(frames)), key=lambda i: str(frames[i].get("file_path", "")))
    return [str(subsets[i]) for i in order]


def make_split(centres: np.ndarray, protocol: Protocol, num_views: int, subsets: Sequence[str] | None = None) -> Split:
    """One split of a scene with camera centres (N, 3) by ``protocol`` (``subsets`` for blender)."""
    num_images = len(centres)
    if protocol == "llff":
        return llff_split(num_images, num_views)
    if protocol == "dtu":
        return dtu_split(num_images, num_views)
    if protocol == "blender":
        return blender_split(subsets or [], centres, num_views)
    if protocol == "auto":
        return auto_split(centres, num_views)
    raise InputError(f"unknown split protocol {protocol!r}; choose llff, dtu, blender or auto")


def _check_existing(scene: Scene, num_views: int, split: Split) -> None:
    """An existing split file is only replaced by the same ids (or with --overwrite, which skips this)."""
    existing = scene.splits.get(num_views)
    if existing is not None and existing != split:
        raise InputError(
            f"{scene.root / f'train_test_split_{num_views}.json'}: exists with other ids (train "
            f"{list(existing.train_ids)}); pass --overwrite to replace it, or choose another --protocol/--views"
        )


def write_splits(scene: Path, protocol: Protocol, views: Sequence[int], overwrite: bool = False) -> list[Path]:
    """Write ``train_test_split_{N}.json`` into ``scene`` for every ``N`` in ``views``; returns the files.

    An existing split file with other ids is an error unless ``overwrite`` (which also replaces split
    files that do not load).
    """
    scene = Path(scene)
    loaded = load_scene(scene, read_splits=not overwrite)
    views = [int(v) for v in views]
    if not views:
        raise InputError(f"{scene}: no view counts given; pass e.g. --views 3 6 9")
    subsets = read_subsets(loaded.root) if protocol == "blender" else None
    centres = loaded.c2w[:, :3, 3]
    splits = {}
    for num_views in dict.fromkeys(views):
        try:
            split = make_split(centres, protocol, num_views, subsets)
        except InputError as err:
            raise InputError(f"{scene} ({len(loaded)} images, protocol {protocol}): {err}") from err
        splits[num_views] = validate_split(split.train_ids, split.test_ids, len(loaded), str(scene))
        _check_existing(loaded, num_views, splits[num_views])
    written = []
    for num_views, split in splits.items():
        written.append(write_split(loaded.root, num_views, split, protocol))
        logger.info(
            "%s: %s protocol, %d views: train %s, %d test views", written[-1], protocol, num_views,
            list(split.train_ids), len(split.test_ids),
        )
    return written
