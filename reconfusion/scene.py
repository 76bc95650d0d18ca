"""The one scene reader (and writer) that everything downstream uses.

On disk a scene is a folder with a nerfstudio ``transforms.json`` (OpenGL camera-to-world
``transform_matrix``, intrinsics at the top level or per frame, OpenCV distortion) and optional
``train_test_split_{N}.json`` files ``{"train_ids": [...], "test_ids": [...]}`` whose ids index the
frames sorted by ``file_path`` - the format the ReconFusion authors released their splits in
(``reconfusion data splits`` adds ``"protocol"``, the rule that chose the ids; readers ignore it).

Images may carry alpha (RGBA PNG: Blender renders, object masks of DTU and photogrammetry captures).
Alpha is kept on disk; ``reconfusion_background`` (top-level ``[r, g, b]`` in [0, 1]) declares the
colour such a scene is shown on, and :meth:`Scene.image` composes on it (white where undeclared).
``reconfusion_bounds`` (top-level, per frame ``[near, far]`` in world units, from LLFF's
``poses_bounds.npy``) is read when present. ``reconfusion_points`` names a ``.npz`` of sparse 3D points
with the frames that observed each (COLMAP's points and tracks, written by ``reconfusion data colmap`` and
``data import colmap``), for depth bounds and a sparse-depth loss.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reconfusion.cameras import check_poses, focal_from_fov
from reconfusion.files import (
    IMAGE_SUFFIXES,
    InputError,
    atomic_directory,
    composite,
    has_alpha,
    image_size,
    read_as_is,
    read_image,
    read_json,
    read_rgba,
    write_image,
    write_json,
)

TRANSFORMS = "transforms.json"
SPLIT_PATTERN = re.compile(r"train_test_split_(\d+)\.json$")
DISTORTION_KEYS = ("k1", "k2", "p1", "p2")
BACKGROUND_KEY = "reconfusion_background"
BOUNDS_KEY = "reconfusion_bounds"
POINTS_KEY = "reconfusion_points"
POINTS_FILE = "sparse_points.npz"
WHITE = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class Split:
    """Indices into a scene's frames (sorted by file name)."""

    train_ids: tuple[int, ...]
    """Views the scene model is fitted to."""
    test_ids: tuple[int, ...]
    """Held-out views the metrics are computed on."""


@dataclass(frozen=True)
class SparsePoints:
    """Sparse 3D points of a scene with the frames that observed them (a COLMAP model's points and tracks)."""

    xyz: np.ndarray
    """(P, 3) positions in the scene's world frame."""
    observations: np.ndarray
    """(M, 2) int: (frame index, point index), one row per observation; frames indexed as the scene's (sorted by
    file name)."""

    def seen_by(self, frames: Sequence[int], at_least: int = 2) -> np.ndarray:
        """Indices of the points observed by ``at_least`` of ``frames``."""
        mine = self.observations[np.isin(self.observations[:, 0], np.asarray(frames))]
        counts = np.bincount(mine[:, 1], minlength=len(self.xyz))
        return np.flatnonzero(counts >= at_least)

    def of_frames(self, frames: Sequence[int]) -> SparsePoints:
        """The points as a scene of ``frames`` alone sees them: their observations by those frames, renumbered to
        positions in ``frames``; points none of them observed are dropped."""
        position = {int(frame): i for i, frame in enumerate(frames)}
        mine = self.observations[np.isin(self.observations[:, 0], list(position))]
        kept, point_ids = np.unique(mine[:, 1], return_inverse=True)
        frame_ids = np.array([position[int(f)] for f in mine[:, 0]], dtype=np.int64)
        return SparsePoints(self.xyz[kept], np.stack([frame_ids, point_ids.reshape(-1)], axis=-1).astype(np.int64))


@dataclass(frozen=True)
class Scene:
    """A posed image collection; every array is indexed by frame, frames sorted by file name."""

    root: Path
    """The scene folder."""
    image_paths: tuple[Path, ...]
    """Absolute image paths."""
    c2w: np.ndarray
    """(N, 4, 4) OpenGL camera-to-world."""
    intrinsics: np.ndarray
    """(N, 4) fx, fy, cx, cy in pixels."""
    sizes: np.ndarray
    """(N, 2) width, height in pixels."""
    distortion: np.ndarray
    """(N, 4) OpenCV k1, k2, p1, p2."""
    splits: dict[int, Split] = field(default_factory=dict)
    """Sparse-view splits by number of training views."""
    depth_paths: tuple[Path | None, ...] = ()
    """Optional depth maps (.npy, metres along -z), one per frame or empty."""
    background: tuple[float, float, float] | None = None
    """Declared background colour (``reconfusion_background``); None where the scene declares none."""
    has_alpha: bool = False
    """Whether any image carries alpha (an object mask)."""
    bounds: np.ndarray | None = None
    """(N, 2) near/far per frame in world units (``reconfusion_bounds``), or None."""
    mask_paths: tuple[Path, ...] | None = None
    """Object masks kept in files of their own (a training dataset's), one per frame: the brightest channel
    of each is that frame's alpha; None where alpha, if any, is in the images."""
    name: str = ""
    """How messages name the scene (a training dataset's folder below its root); empty: the folder's path."""
    points: SparsePoints | None = None
    """Sparse 3D points with their observing frames (``reconfusion_points``), or None."""

    def __len__(self) -> int:
        return len(self.image_paths)

    @property
    def display_background(self) -> tuple[float, float, float]:
        """The colour images with alpha are composed on: the declared one, else white."""
        return self.background if self.background is not None else WHITE

    def image(self, index: int) -> np.ndarray:
        """Frame ``index`` as float32 (H, W, 3) in [0, 1], composed on :attr:`display_background`."""
        return composite(self.rgba(index), self.display_background)

    def rgba(self, index: int) -> np.ndarray:
        """Frame ``index`` as float32 (H, W, 4): alpha from its mask file, else from the image (1 where none)."""
        rgba = read_rgba(self.image_paths[index])
        if self.mask_paths is not None:
            rgba[..., 3] = read_rgba(self.mask_paths[index])[..., :3].max(axis=-1)
        return rgba

    def split(self, num_views: int) -> Split:
        if num_views not in self.splits:
            have = sorted(self.splits) or "none"
            raise InputError(
                f"{self.root}: no train_test_split_{num_views}.json (splits present: {have}); "
                f"create it with `reconfusion data splits {self.root} --views {num_views}`"
            )
        return self.splits[num_views]


def resolve_image_path(root: Path, file_path: str) -> Path | None:
    """The image a transforms.json ``file_path`` names; instant-ngp files may omit the extension."""
    candidate = (root / file_path).resolve()
    if candidate.is_file():
        return candidate
    for suffix in IMAGE_SUFFIXES:
        with_suffix = candidate.with_name(candidate.name + suffix)
        if with_suffix.is_file():
            return with_suffix
    return None


def _frame_intrinsics(frame: dict, meta: dict, path: Path, source: Path) -> tuple[list[float], list[int]]:
    def get(key: str, default=None):
        return frame.get(key, meta.get(key, default))

    width, height = get("w"), get("h")
    if width is None or height is None:
        width, height = image_size(path)
    fx = get("fl_x")
    if fx is None:
        if get("camera_angle_x") is None:
            raise InputError(f"{source}: frame {frame.get('file_path')} has no fl_x or camera_angle_x; add intrinsics")
        fx = focal_from_fov(float(get("camera_angle_x")), float(width))
    fy = get("fl_y")
    if fy is None:
        fy = focal_from_fov(float(get("camera_angle_y")), float(height)) if get("camera_angle_y") else fx
    cx, cy = get("cx", width / 2.0), get("cy", height / 2.0)
    return [float(fx), float(fy), float(cx), float(cy)], [int(width), int(height)]


def _check_sizes(paths: Sequence[Path], sizes: np.ndarray) -> None:
    for path, (width, height) in zip(paths, sizes):
        actual = image_size(path)
        if actual != (width, height):
            raise InputError(
                f"{path}: image is {actual[0]}x{actual[1]} but transforms.json says {width}x{height}; "
                "fix w/h (and the intrinsics) or resize the image"
            )


def check_intrinsics(intrinsics: np.ndarray, sizes: np.ndarray, source: str) -> None:
    """Focal lengths, principal points and image sizes finite, focal lengths and sizes positive."""
    intrinsics, sizes = np.asarray(intrinsics, np.float64), np.asarray(sizes, np.float64)
    finite = np.isfinite(intrinsics).all(-1) & np.isfinite(sizes).all(-1)
    bad = np.flatnonzero(~finite | (intrinsics[:, :2] <= 0).any(-1) | (sizes <= 0).any(-1))
    if bad.size:
        raise InputError(
            f"{source}: invalid intrinsics at frames {bad[:10].tolist()} (focal lengths and w/h must be finite "
            "and positive); fix fl_x/fl_y/camera_angle_x and w/h"
        )


def _intrinsics(frames: list[dict], meta: dict, paths: list[Path], source: Path) -> tuple[np.ndarray, ...]:
    """(N, 4) intrinsics, (N, 2) sizes and (N, 4) distortion of the frames, validated."""
    try:
        intr, sizes = zip(*(_frame_intrinsics(f, meta, p, source) for f, p in zip(frames, paths)))
        distortion = np.array([[float(f.get(k, meta.get(k, 0.0))) for k in DISTORTION_KEYS] for f in frames])
    except InputError:
        raise
    except (TypeError, ValueError, OverflowError) as err:
        raise InputError(f"{source}: intrinsics, w/h and distortion must be numbers ({err}); fix the file") from err
    intr, sizes = np.array(intr, dtype=np.float64), np.array(sizes, dtype=np.int64)
    check_intrinsics(intr, sizes, str(source))
    return intr, sizes, distortion


def scene_root(path: Path) -> Path:
    """The scene folder, given it or its transforms.json."""
    path = Path(path)
    return path.parent if path.name == TRANSFORMS else path


def load_scene(path: Path, read_splits: bool = True) -> Scene:
    """Read and validate a scene folder (or its transforms.json); ``read_splits=False`` skips split files."""
    root = scene_root(path)
    if not root.is_dir():
        raise InputError(f"{root}: scene folder not found; create it with `reconfusion data import` or `data colmap`")
    source = root / TRANSFORMS
    if not source.is_file():
        raise InputError(f"{source}: missing; a scene folder needs a nerfstudio transforms.json "
                         f"(pose a folder of photos with `reconfusion data colmap {root} SCENE`)")
    meta = read_json(source)
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not frames:
        raise InputError(f"{source}: no frames listed; the file needs a non-empty 'frames' list")
    if not isinstance(frames, list) or not all(isinstance(f, dict) for f in frames):
        raise InputError(f"{source}: 'frames' must be a list of objects with file_path and transform_matrix; fix it")
    frames = sorted(frames, key=lambda f: str(f.get("file_path", "")))
    paths = [resolve_image_path(root, str(f.get("file_path", ""))) for f in frames]
    missing = [f.get("file_path") for f, p in zip(frames, paths) if p is None]
    if missing:
        raise InputError(
            f"{source}: {len(missing)} listed images are missing (first: {missing[:3]}); "
            "add the images or remove their frames"
        )
    try:
        c2w = np.array([f["transform_matrix"] for f in frames], dtype=np.float64)
    except (KeyError, ValueError) as err:
        raise InputError(f"{source}: every frame needs a 4x4 transform_matrix ({err})") from err
    if c2w.shape[1:] not in ((4, 4), (3, 4)):
        raise InputError(f"{source}: transform_matrix must be 4x4 (or 3x4) for every frame, got {c2w.shape[1:]}")
    try:
        c2w = check_poses(c2w, str(source))
    except ValueError as err:
        raise InputError(str(err)) from err
    intr, sizes, distortion = _intrinsics(frames, meta, paths, source)
    _check_sizes(paths, sizes)
    depth_paths = tuple((root / f["depth_file_path"]) if "depth_file_path" in f else None for f in frames)
    order = sorted(range(len(meta["frames"])), key=lambda i: str(meta["frames"][i].get("file_path", "")))
    return Scene(
        root=root.resolve(),
        image_paths=tuple(paths),
        c2w=c2w,
        intrinsics=intr,
        sizes=sizes,
        distortion=distortion,
        splits=_read_splits(root, len(frames)) if read_splits else {},
        depth_paths=depth_paths if any(d is not None for d in depth_paths) else (),
        background=_background(meta, source),
        has_alpha=any(has_alpha(p) for p in paths),
        bounds=_bounds(meta, order, source),
        points=_points(root, meta, order, source),
    )


def _points(root: Path, meta: dict, order: list[int], source: Path) -> SparsePoints | None:
    """The scene's sparse points, their observations' frames renumbered from file order to sorted order."""
    name = meta.get(POINTS_KEY)
    if name is None:
        return None
    path = root / str(name)
    try:
        with np.load(path, allow_pickle=False) as data:
            xyz, observations = np.asarray(data["xyz"], np.float64), np.asarray(data["observations"], np.int64)
    except (OSError, KeyError, ValueError) as err:
        raise InputError(f"{path}: unreadable sparse points named by {source}'s {POINTS_KEY} ({err}); re-import the "
                         f"scene or remove {POINTS_KEY}") from err  # fmt: skip
    bad = (xyz.ndim != 2 or xyz.shape[-1] != 3 or observations.ndim != 2 or observations.shape[-1] != 2
           or (observations.size and (observations.min() < 0 or observations[:, 0].max() >= len(order)
                                      or observations[:, 1].max() >= len(xyz))))  # fmt: skip
    if bad or not np.isfinite(xyz).all():
        raise InputError(f"{path}: expected xyz (P, 3) finite and observations (M, 2) of valid (frame, point) ids; "
                         f"re-import the scene or remove {POINTS_KEY} from {source}")  # fmt: skip
    sorted_index = np.empty(len(order), np.int64)
    sorted_index[np.asarray(order)] = np.arange(len(order))
    return SparsePoints(xyz, np.stack([sorted_index[observations[:, 0]], observations[:, 1]], axis=-1))


def _background(meta: dict, source: Path) -> tuple[float, float, float] | None:
    value = meta.get(BACKGROUND_KEY)
    if value is None:
        return None
    try:
        colour = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        colour = ()
    if len(colour) != 3 or not all(0.0 <= v <= 1.0 for v in colour):
        raise InputError(f"{source}: {BACKGROUND_KEY} must be [r, g, b] with values in [0, 1], got {value!r}; fix it")
    return colour  # type: ignore[return-value]


def _bounds(meta: dict, order: list[int], source: Path) -> np.ndarray | None:
    """Per-frame near/far in the order of the sorted frames (stored in the order of ``frames``)."""
    value = meta.get(BOUNDS_KEY)
    if value is None:
        return None
    try:
        bounds = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        bounds = np.zeros((0,))
    if bounds.shape != (len(order), 2) or not np.all(np.isfinite(bounds)) or np.any(bounds <= 0):
        raise InputError(
            f"{source}: {BOUNDS_KEY} must hold a positive [near, far] pair per frame ({len(order)}); "
            "fix it or remove the key"
        )
    return bounds[order]


def _scene_folder(source: str) -> Path:
    """The scene folder of a split file or scene path named in a message."""
    return Path(source).parent if source.endswith(".json") else Path(source)


def validate_split(train_ids: Sequence[int], test_ids: Sequence[int], num_images: int, source: str) -> Split:
    """Check that ids are integers in range, unique, and that train and test do not overlap."""
    for name, ids in (("train_ids", train_ids), ("test_ids", test_ids)):
        if not isinstance(ids, (list, tuple)) or not all(
            isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids
        ):
            raise InputError(f"{source}: {name} must be a list of integers")
        out_of_range = [int(i) for i in ids if not 0 <= i < num_images]
        if out_of_range:
            raise InputError(
                f"{source}: {name} {out_of_range[:5]} out of range for {num_images} images "
                "(ids index the images sorted by file name); regenerate it with "
                f"`reconfusion data splits {_scene_folder(source)} --views {len(train_ids)} --overwrite`"
            )
        if len(set(ids)) != len(ids):
            raise InputError(f"{source}: {name} has repeated ids; each view may appear once")
    if not train_ids:
        raise InputError(f"{source}: train_ids is empty; a split needs at least one training view")
    overlap = sorted(set(train_ids) & set(test_ids))
    if overlap:
        raise InputError(f"{source}: ids {overlap[:5]} are in both train_ids and test_ids; a test view must be held out")
    return Split(tuple(int(i) for i in train_ids), tuple(int(i) for i in test_ids))


def _read_splits(root: Path, num_images: int) -> dict[int, Split]:
    splits = {}
    for path in sorted(root.glob("train_test_split_*.json")):
        match = SPLIT_PATTERN.search(path.name)
        if not match:
            continue
        payload = read_json(path)
        if not isinstance(payload, dict) or "train_ids" not in payload or "test_ids" not in payload:
            raise InputError(f"{path}: a split file needs 'train_ids' and 'test_ids' lists")
        splits[int(match.group(1))] = validate_split(payload["train_ids"], payload["test_ids"], num_images, str(path))
    return splits


def write_split(root: Path, num_views: int, split: Split, protocol: str | None = None) -> Path:
    """Write ``train_test_split_{num_views}.json`` atomically (with the protocol that chose it, if given)."""
    path = Path(root) / f"train_test_split_{num_views}.json"
    payload = {"train_ids": list(split.train_ids), "test_ids": list(split.test_ids)}
    write_json(path, payload if protocol is None else {**payload, "protocol": protocol})
    return path


def write_scene(
    out: Path,
    images: Sequence[np.ndarray | Path],
    c2w: np.ndarray,
    intrinsics: np.ndarray,
    sizes: np.ndarray | None = None,
    distortion: np.ndarray | None = None,
    splits: dict[int, Split] | None = None,
    depths: Sequence[np.ndarray] | None = None,
    points: SparsePoints | None = None,
    extra: dict | None = None,
    overwrite: bool = False,
    progress: str | None = None,
) -> Path:
    """Write a scene folder atomically; frame ``i`` becomes ``images/frame_{i:05d}.*``.

    ``images`` holds float arrays (written as PNG) or paths of files to copy unchanged; ``points`` (observations
    indexed by position in ``images``) are saved beside them. With ``progress``
    (a description), a progress bar counts the images written (not inside another live display).
    """
    c2w = check_poses(c2w, str(out))
    num = len(images)
    if not (len(c2w) == len(intrinsics) == num):
        raise ValueError(f"{out}: {num} images but {len(c2w)} poses and {len(intrinsics)} intrinsics")
    sizes = np.array([_size_of(img) for img in images]) if sizes is None else np.asarray(sizes)
    check_intrinsics(intrinsics, sizes, str(out))
    distortion = np.zeros((num, 4)) if distortion is None else np.asarray(distortion)
    frames = []
    with atomic_directory(out, overwrite=overwrite) as tmp:
        (tmp / "images").mkdir()
        numbered = enumerate(images)
        if progress is not None:
            from rich.progress import track

            numbered = track(numbered, description=progress, total=num, transient=True)
        for i, image in numbered:
            frames.append(_write_frame(tmp, i, image, c2w[i], intrinsics[i], sizes[i], distortion[i]))
            if depths is not None:
                np.save(tmp / "images" / f"depth_{i:05d}.npy", depths[i].astype(np.float32))
                frames[-1]["depth_file_path"] = f"images/depth_{i:05d}.npy"
        if points is not None:
            np.savez_compressed(tmp / POINTS_FILE, xyz=points.xyz.astype(np.float32), observations=points.observations)
            extra = {**(extra or {}), POINTS_KEY: POINTS_FILE}
        write_json(tmp / TRANSFORMS, {"camera_model": "OPENCV", **(extra or {}), "frames": frames})
        for num_views, split in (splits or {}).items():
            write_split(tmp, num_views, validate_split(split.train_ids, split.test_ids, num, str(out)))
    return Path(out)


def _size_of(image: np.ndarray | Path) -> tuple[int, int]:
    if isinstance(image, np.ndarray):
        return image.shape[1], image.shape[0]
    return image_size(Path(image))


def _write_frame(root: Path, index: int, image, c2w, intrinsics, size, distortion) -> dict:
    if not isinstance(image, np.ndarray) and not read_as_is(image):
        image = read_rgba(image) if has_alpha(image) else read_image(image)
    if isinstance(image, np.ndarray):
        name = f"images/frame_{index:05d}.png"
        write_image(root / name, image)
    else:
        name = f"images/frame_{index:05d}{Path(image).suffix.lower()}"
        shutil.copyfile(image, root / name)
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    frame = {"file_path": name, "transform_matrix": np.asarray(c2w).tolist()}
    frame.update(fl_x=fx, fl_y=fy, cx=cx, cy=cy, w=int(size[0]), h=int(size[1]))
    frame.update({k: float(v) for k, v in zip(DISTORTION_KEYS, distortion)})
    return frame
