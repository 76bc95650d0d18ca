"""nerfstudio dataparser for reconfusion scene folders with sparse-view splits.

Reads a scene with :func:`reconfusion.scene.load_scene` (transforms.json + train_test_split_{N}.json)
and hands nerfstudio the split's training views for ``train`` and its test views for ``val`` /
``test`` (so ``ns-eval`` scores exactly the split's test ids). Cameras are normalised as the prior's
training data are (:func:`reconfusion.cameras.normalize_cameras` of the training cameras: focus point
at the origin, camera centres in [-1, 1]^3), which also suits nerfacto's scene contraction; the
same transform is applied to the test cameras and saved as the dataparser transform.

The settings a fair fit needs (scene kind, near/far, scene box, background: :mod:`reconfusion.scene_fit`)
are chosen here from the training views and handed to the model in the metadata; the scene box is the
object's box for objects. Images with alpha keep it (no ``alpha_color``), so the model can train on
random backgrounds and score masked metrics.

Kept light on purpose: nerfstudio imports this module while it is still discovering its own
dataparsers, so it may only import nerfstudio's base classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Type

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.plugins.registry_dataparser import DataParserSpecification
from nerfstudio.utils.rich_utils import CONSOLE

from reconfusion.cameras import normalize_cameras
from reconfusion.files import InputError, read_as_is
from reconfusion.scene import Scene, Split, load_scene
from reconfusion.scene_fit import SceneFit, scene_fit

FIT_METADATA = "reconfusion_fit"
"""Metadata key of the :class:`SceneFit` (read by nerfstudio_plugin.model)."""
SPARSE_DEPTH_METADATA = "reconfusion_sparse_depth"
"""Metadata key of the rays to the scene's sparse points from the training views (:func:`sparse_depth_rays`)."""

DEFAULT_NUM_VIEWS = 3


@dataclass
class ReconFusionDataParserConfig(DataParserConfig):
    """A reconfusion scene folder: transforms.json plus train_test_split_{N}.json files."""

    _target: Type = field(default_factory=lambda: ReconFusionDataParser)
    data: Path = Path()
    """Scene folder (or its transforms.json)."""
    num_views: Optional[int] = None
    """Use train_test_split_{num_views}.json. None: 3 where that split exists (else the smallest split
    present); a scene without split files trains on every image and evaluates on them too."""
    scene_scale: float = 1.0
    """Half-side of the scene box around the normalised cameras for scenes without alpha (nerfacto
    contracts what lies beyond); objects get the bounding box of their masks' visual hull."""


def choose_split(scene: Scene, num_views: Optional[int]) -> tuple[Optional[int], Split]:
    """The split to use and its size; None when the scene has no split files (every image trains)."""
    if num_views is not None:
        return num_views, scene.split(num_views)
    if not scene.splits:
        every = tuple(range(len(scene)))
        return None, Split(train_ids=every, test_ids=every)
    chosen = DEFAULT_NUM_VIEWS if DEFAULT_NUM_VIEWS in scene.splits else min(scene.splits)
    return chosen, scene.splits[chosen]


def normalising_transform(c2w: np.ndarray) -> tuple[np.ndarray, float]:
    """(3x4 transform T, scale s) with normalised pose = s * (T @ pose) in nerfstudio's convention."""
    _, scale, focus = normalize_cameras(c2w)
    transform = np.concatenate([np.eye(3), -np.asarray(focus)[:, None]], axis=1)
    return transform, float(scale)


def build_cameras(scene: Scene, ids: tuple[int, ...], transform: np.ndarray, scale: float) -> Cameras:
    """nerfstudio cameras for frames ``ids``, posed in the normalised frame."""
    index = np.asarray(ids, dtype=np.int64)
    c2w = scene.c2w[index].copy()
    c2w[:, :3, 3] = scale * (c2w[:, :3, 3] + transform[:, 3])
    k = torch.as_tensor(scene.intrinsics[index], dtype=torch.float32)
    dist = torch.as_tensor(scene.distortion[index], dtype=torch.float32)
    zeros = torch.zeros_like(dist[:, 0])
    # nerfstudio's order: k1, k2, k3, k4, p1, p2 (camera_utils.get_distortion_params, per camera)
    distortion = torch.stack([dist[:, 0], dist[:, 1], zeros, zeros, dist[:, 2], dist[:, 3]], dim=-1)
    sizes = torch.as_tensor(scene.sizes[index], dtype=torch.int64)
    return Cameras(
        camera_to_worlds=torch.as_tensor(c2w[:, :3, :], dtype=torch.float32),
        fx=k[:, 0:1], fy=k[:, 1:2], cx=k[:, 2:3], cy=k[:, 3:4],
        width=sizes[:, 0:1], height=sizes[:, 1:2],
        distortion_params=distortion,
        camera_type=CameraType.PERSPECTIVE,
    )  # fmt: skip


class ReconFusionDataParser(DataParser):
    """See the module docstring."""

    config: ReconFusionDataParserConfig

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        if not str(self.config.data) or self.config.data == Path():
            raise InputError("no scene given; pass --data SCENE_FOLDER (a folder with transforms.json)")
        scene = load_scene(self.config.data)
        num_views, chosen = choose_split(scene, self.config.num_views)
        if split == "train":
            _announce(scene, num_views, chosen)
        ids = chosen.train_ids if split == "train" else chosen.test_ids
        if not ids:
            raise InputError(
                f"{scene.root}: train_test_split_{num_views}.json has no test_ids to evaluate on; "
                "regenerate the split with `reconfusion data splits`"
            )
        _check_pixel_formats([scene.image_paths[i] for i in ids])
        transform, scale = normalising_transform(scene.c2w[list(chosen.train_ids)])
        cameras = build_cameras(scene, ids, transform, scale)
        fit = fit_for(scene, chosen.train_ids, transform, scale, self.config.scene_scale)
        metadata = {
            FIT_METADATA: fit,
            SPARSE_DEPTH_METADATA: sparse_depth_rays(scene, chosen.train_ids, transform, scale),
            "reconfusion_num_views": num_views,
            "reconfusion_image_ids": list(ids),
            "reconfusion_train_ids": list(chosen.train_ids),
            "reconfusion_test_ids": list(chosen.test_ids),
        }
        return DataparserOutputs(
            image_filenames=[scene.image_paths[i] for i in ids],
            cameras=cameras,
            scene_box=SceneBox(aabb=torch.tensor(fit.aabb, dtype=torch.float32)),
            metadata=metadata,
            dataparser_transform=torch.as_tensor(transform, dtype=torch.float32),
            dataparser_scale=scale,
        )


def _check_pixel_formats(paths: list[Path]) -> None:
    """nerfstudio reads the raw pixel array: palette, grey + alpha, CMYK or 16-bit images would train wrongly."""
    unreadable = next((path for path in paths if not read_as_is(path)), None)
    if unreadable is not None:
        raise InputError(
            f"{unreadable}: not 8-bit RGB, RGBA or greyscale, which nerfstudio reads wrongly; convert the scene's "
            "images, e.g. `reconfusion data import nerfstudio SCENE NEW_SCENE` writes them as 8-bit PNG"
        )


def fit_for(scene: Scene, train_ids: tuple[int, ...], transform: np.ndarray, scale: float, half_side: float) -> SceneFit:
    """The scene's settings from its training views, in the normalised frame."""
    ids = list(train_ids)
    c2w = scene.c2w[ids].copy()
    c2w[:, :3, 3] = scale * (c2w[:, :3, 3] + transform[:, 3])
    alphas = [scene.rgba(i)[..., 3] for i in ids] if scene.has_alpha else None
    bounds = None if scene.bounds is None else scale * scene.bounds[ids]
    return scene_fit(c2w, scene.intrinsics[ids], alphas, bounds, scene.background, half_side)


def sparse_depth_rays(scene: Scene, train_ids: tuple[int, ...], transform: np.ndarray, scale: float) -> Optional[dict]:
    """Rays from each training camera to the sparse points it observed, for the points that two training views
    or more observed (so that the training views alone could have triangulated them): ``origins``,
    ``directions`` (unit), ``depths`` (distance along the ray) and ``camera_indices`` (position in
    ``train_ids``), in the normalised frame; None when the scene has no points or none qualify."""
    if scene.points is None:
        return None
    points, ids = scene.points, np.asarray(train_ids)
    observations = points.observations
    keep = np.isin(observations[:, 0], ids) & np.isin(observations[:, 1], points.seen_by(ids, at_least=2))
    if not keep.any():
        return None
    frames, point_ids = observations[keep].T
    cameras = np.argmax(frames[:, None] == ids[None, :], axis=1)  # position in train_ids
    centres = scale * (scene.c2w[ids][cameras, :3, 3] + transform[:, 3])
    targets = scale * (points.xyz[point_ids] + transform[:, 3])
    offsets = targets - centres
    depths = np.linalg.norm(offsets, axis=-1)
    as_tensor = lambda a, dtype=torch.float32: torch.as_tensor(a, dtype=dtype)  # noqa: E731
    return {"origins": as_tensor(centres), "directions": as_tensor(offsets / depths[:, None]),
            "depths": as_tensor(depths), "camera_indices": as_tensor(cameras, torch.long)}  # fmt: skip


def _announce(scene: Scene, num_views: Optional[int], split: Split) -> None:
    if num_views is None:
        CONSOLE.print(
            f"[bold yellow]{scene.root}: no train_test_split_*.json files; training on all {len(scene)} images "
            "(evaluation uses the same images). Write splits with `reconfusion data splits`."
        )
    else:
        CONSOLE.print(
            f"{scene.root}: split train_test_split_{num_views}.json, train ids {list(split.train_ids)}, "
            f"{len(split.test_ids)} test views"
        )


reconfusion_dataparser = DataParserSpecification(
    config=ReconFusionDataParserConfig(),
    description="reconfusion scene folder: transforms.json + train_test_split_{N}.json (sparse-view splits)",
)
