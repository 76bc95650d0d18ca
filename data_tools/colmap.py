"""Pose a folder of photos with COLMAP (pycolmap) and write a scene folder.

SIFT features (on the GPU when pycolmap was built with CUDA and the device allows it), exhaustive or
sequential matching, incremental mapping on the CPU, one camera shared by all photos. The largest
reconstruction is kept and written with :func:`reconfusion.scene.write_scene`: OpenGL camera-to-world
poses, pinhole intrinsics and OpenCV distortion, with the registered photos copied as
``images/frame_{i:05d}.*`` in the order of their original file names. Photos that did not register
are left out and named in the log.

The COLMAP database and sparse models live in a temporary folder. pycolmap logs from C++ (glog), so
its output is redirected at the file-descriptor level into ``<out>/colmap.log`` (on failure:
``<out>.colmap.log`` next to the output folder); the terminal only sees the ``reconfusion`` logger.
The scene folder also gets ``colmap_image_names.json``, mapping each frame's ``file_path`` to the
photo it came from, plus the run's summary.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

import numpy as np
from tqdm.auto import tqdm

from data_tools.import_common import check_out, decoded_sizes, source_info
from reconfusion.cameras import colmap_to_opengl
from reconfusion.files import InputError, is_image_file, read_image, read_json, write_json
from reconfusion.scene import BOUNDS_KEY, TRANSFORMS, SparsePoints, write_scene

logger = logging.getLogger("reconfusion")

MIN_IMAGES = 3
IMAGE_NAMES_FILE = "colmap_image_names.json"
LOG_FILE = "colmap.log"
SUPPORTED_CAMERA_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")


@dataclass(frozen=True)
class ColmapResult:
    """What :func:`pose_images` produced."""

    scene_dir: Path
    """The scene folder written (transforms.json + images/)."""
    registered: int
    """Photos posed by the kept (largest) reconstruction."""
    total: int
    """Photos found in the input folder."""
    mean_reprojection_error: float
    """Mean reprojection error of the kept reconstruction, in pixels."""
    log_path: Path
    """pycolmap's full log."""


def pose_images(
    images: Path,
    out: Path,
    *,
    matcher: Literal["exhaustive", "sequential"] = "exhaustive",
    camera_model: str = "OPENCV",
    min_registered: int = 3,
    device: Literal["auto", "cpu", "cuda"] = "auto",
    overwrite: bool = False,
) -> ColmapResult:
    """Pose the photos in ``images`` with pycolmap and write the scene folder ``out``."""
    import pycolmap

    images, out = Path(images), Path(out)
    _check_options(out, matcher, camera_model, min_registered, overwrite)
    check_out(images, out)  # --overwrite replaces the output folder: never the photos' own
    colmap_device = _resolve_device(pycolmap, device)
    names = _list_images(images)
    _check_images(images, names)
    logger.info("COLMAP: posing %d photos from %s (%s matching, %s)", len(names), images, matcher, colmap_device.name)
    with tempfile.TemporaryDirectory(prefix="reconfusion-colmap-") as work_dir:
        work = Path(work_dir)
        log_path = work / LOG_FILE
        try:
            with _redirect_output(log_path) as terminal:
                recon = _reconstruct(pycolmap, images, names, work, matcher, camera_model, colmap_device, terminal)
            _check_registered(recon, len(names), min_registered, images)
        except Exception:
            kept = _keep_log(log_path, out.parent / f"{out.name}.colmap.log")
            logger.error("COLMAP failed; its log is in %s", kept)
            raise
        made_by = source_info("colmap", images, matcher=matcher, camera_model=camera_model)
        result = _write(recon, images, names, out, overwrite, log_path, made_by)
    logger.info(
        "COLMAP: registered %d/%d photos, mean reprojection error %.3f px; scene written to %s (log: %s)",
        result.registered, result.total, result.mean_reprojection_error, out, result.log_path,
    )
    return result


def _list_images(images: Path) -> list[str]:
    if not images.is_dir():
        raise InputError(f"{images}: photo folder not found; pass a folder of jpg/png photos")
    names = sorted(p.name for p in images.iterdir() if is_image_file(p))
    if not names:
        raise InputError(f"{images}: no images (jpg/png) in this folder; put the photos directly in it")
    if len(names) < MIN_IMAGES:
        raise InputError(
            f"{images}: {len(names)} photo(s) found, but COLMAP needs at least {MIN_IMAGES} photos "
            "of the scene from different viewpoints; add more overlapping photos"
        )
    return names


def _check_images(images: Path, names: list[str]) -> None:
    """Every photo decodes, and all have one size (they share one camera)."""
    first_size = None
    for name in names:
        height, width = read_image(images / name).shape[:2]  # InputError naming the file if it does not decode
        if first_size is None:
            first_size = (width, height)
        elif (width, height) != first_size:
            raise InputError(
                f"{images / name}: {width}x{height} pixels, but {names[0]} is {first_size[0]}x{first_size[1]}; "
                "all photos share one camera, so resize this photo or move it out of the folder"
            )


def _check_options(out: Path, matcher: str, camera_model: str, min_registered: int, overwrite: bool) -> None:
    if matcher not in ("exhaustive", "sequential"):
        raise InputError(f"matcher {matcher!r} is not supported; use 'exhaustive' or 'sequential'")
    if camera_model not in SUPPORTED_CAMERA_MODELS:
        raise InputError(
            f"camera model {camera_model!r} is not supported (a scene stores pinhole intrinsics with OpenCV "
            f"k1 k2 p1 p2 distortion); use one of {', '.join(SUPPORTED_CAMERA_MODELS)}"
        )
    if min_registered < MIN_IMAGES:
        raise InputError(f"min_registered={min_registered}: a scene needs at least {MIN_IMAGES} posed photos")
    blocked = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise InputError(f"{out}: {blocked} is a file, not a folder; choose another output folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out}: output folder exists and is not empty; choose another folder or pass --overwrite")


def _resolve_device(pycolmap, device: str):
    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"device {device!r} is not supported; use 'auto', 'cpu' or 'cuda'")
    if device == "cuda" and not pycolmap.has_cuda:
        raise InputError(
            "device 'cuda' asked for, but the installed pycolmap was built without CUDA; "
            "use --device cpu (or auto), or install a CUDA build of pycolmap"
        )
    use_cuda = pycolmap.has_cuda and device != "cpu"
    return pycolmap.Device.cuda if use_cuda else pycolmap.Device.cpu


def _reconstruct(pycolmap, images: Path, names: list[str], work: Path, matcher: str, camera_model: str, device,
                 terminal=None):
    """Features, matches and incremental mapping; the largest reconstruction, or None. Progress (stage, then
    photos registered) goes to ``terminal``."""
    database = work / "database.db"
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = camera_model
    pycolmap.set_random_seed(0)
    progress = tqdm(total=len(names) + 2, desc="COLMAP features", unit="step", file=terminal, disable=terminal is None)
    pycolmap.extract_features(
        database, images, image_names=names, camera_mode=pycolmap.CameraMode.SINGLE,
        reader_options=reader, device=device,
    )
    progress.set_description("COLMAP matching")
    progress.update(1)
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = 0  # seeded per image pair: the same matches whichever thread verifies it
    match = pycolmap.match_sequential if matcher == "sequential" else pycolmap.match_exhaustive
    match(database, verification_options=verification, device=device)
    progress.set_description("COLMAP mapping (photos registered)")
    progress.update(1)
    options = pycolmap.IncrementalPipelineOptions()
    options.random_seed = 0
    options.min_model_size = MIN_IMAGES

    def registered(count: int) -> None:
        progress.update(min(count, progress.total - progress.n))

    models = pycolmap.incremental_mapping(
        database, images, work / "sparse", options=options,
        initial_image_pair_callback=lambda: registered(2), next_image_callback=lambda: registered(1),
    )
    progress.close()
    if not models:
        return None
    return max(models.values(), key=lambda recon: recon.num_reg_images())


def _check_registered(recon, total: int, min_registered: int, images: Path) -> None:
    registered = 0 if recon is None else recon.num_reg_images()
    if registered < min_registered:
        raise InputError(
            f"{images}: COLMAP registered only {registered} of {total} photos (at least {min_registered} "
            "needed); take more photos with more overlap between neighbours (about 60-80%), avoid "
            "textureless or moving subjects, or try --matcher sequential for a video-like capture"
        )


def _camera_arrays(camera) -> tuple[list[float], list[float]]:
    """COLMAP camera -> (fx, fy, cx, cy) and OpenCV (k1, k2, p1, p2)."""
    model, params = camera.model.name, [float(v) for v in camera.params]
    if model == "SIMPLE_PINHOLE":
        (f, cx, cy), dist = params, [0.0, 0.0, 0.0, 0.0]
        return [f, f, cx, cy], dist
    if model == "PINHOLE":
        return params, [0.0, 0.0, 0.0, 0.0]
    if model == "SIMPLE_RADIAL":
        f, cx, cy, k = params
        return [f, f, cx, cy], [k, 0.0, 0.0, 0.0]
    if model == "RADIAL":
        f, cx, cy, k1, k2 = params
        return [f, f, cx, cy], [k1, k2, 0.0, 0.0]
    if model == "OPENCV":
        return params[:4], params[4:]
    raise InputError(f"COLMAP camera model {model} cannot be stored; use one of {', '.join(SUPPORTED_CAMERA_MODELS)}")


def _write(recon, images: Path, names: list[str], out: Path, overwrite: bool, log_path: Path | None,
           made_by: dict, image_sizes: dict[str, tuple[int, int]] | None = None) -> ColmapResult:
    """Write the scene of ``recon``'s registered photos among ``names`` (in ``images``); with ``image_sizes``
    (name -> width, height of the photos on disk), intrinsics are scaled from the model's camera to them."""
    by_name = {recon.images[i].name: recon.images[i] for i in recon.reg_image_ids()}
    posed = [name for name in names if name in by_name]  # sorted like the input, so frame i <-> posed[i]
    missing = [name for name in names if name not in by_name]
    if missing:
        logger.warning("COLMAP: %d photos did not register and are left out: %s", len(missing), ", ".join(missing))
    c2w, intrinsics, distortion, sizes, bounds = [], [], [], [], []
    for name in posed:
        image = by_name[name]
        pose = image.cam_from_world()
        c2w.append(colmap_to_opengl(pose.rotation.matrix(), np.asarray(pose.translation)))
        camera = recon.cameras[image.camera_id]
        intr, dist = _camera_arrays(camera)
        size = [camera.width, camera.height]
        if image_sizes is not None:  # pixel centres at +0.5 in both conventions: scaling is exact
            size = list(image_sizes[name])
            sx, sy = size[0] / camera.width, size[1] / camera.height
            intr = [intr[0] * sx, intr[1] * sy, intr[2] * sx, intr[3] * sy]
        intrinsics.append(intr)
        distortion.append(dist)
        sizes.append(size)
        bounds.append(_depth_bounds(recon, image))
    error = float(recon.compute_mean_reprojection_error())
    extra = {**made_by, **({BOUNDS_KEY: bounds} if all(b is not None for b in bounds) else {})}
    scene_dir = write_scene(
        out, [images / name for name in posed], np.array(c2w), np.array(intrinsics),
        sizes=np.array(sizes), distortion=np.array(distortion), points=_sparse_points(recon, [by_name[n] for n in posed]),
        extra=extra, overwrite=overwrite,
    )
    summary = {"source": str(images.resolve()), "registered": len(posed), "total": len(names),
               "mean_reprojection_error": error, "unregistered": missing}
    frames = read_json(scene_dir / TRANSFORMS)["frames"]  # written in the order of ``posed``
    frame_names = {frame["file_path"]: name for frame, name in zip(frames, posed)}
    write_json(scene_dir / IMAGE_NAMES_FILE, {**summary, "frames": frame_names})
    final_log = _keep_log(log_path, scene_dir / LOG_FILE) if log_path is not None else scene_dir / LOG_FILE
    return ColmapResult(scene_dir, len(posed), len(names), error, final_log)


# ------------------------------------------------------------------ an existing COLMAP model

MODEL_PARTS = ("cameras", "images", "points3D")


def import_colmap_model(src: Path, out: Path, *, downscale: int = 1, overwrite: bool = False) -> Path:
    """A capture folder holding a COLMAP model (``sparse/0/`` or ``sparse/``, binary or text) beside its photos
    (``images/``, or ``images_{downscale}/``) -> scene folder ``out``: intrinsics scaled to the photos read,
    distortion kept, depth bounds from the model's points (as :func:`pose_images` writes them)."""
    import pycolmap

    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise InputError(f"{src}: capture folder not found; pass the folder holding sparse/ and images/")
    check_out(src, out)
    model = _model_folder(src)
    try:
        recon = pycolmap.Reconstruction(str(model))
    except Exception as err:  # noqa: BLE001 - pycolmap raises plain RuntimeErrors on corrupt files
        raise InputError(f"{model}: COLMAP cannot read this model ({err}); re-export it with `colmap model_converter`") from err
    names = sorted(recon.images[i].name for i in recon.reg_image_ids())
    if not names:
        raise InputError(f"{model}: the model has no registered images; run COLMAP's mapper again or pose the photos with `reconfusion data colmap`")
    image_dir = _photo_folder(src, downscale)
    absent = [name for name in names if not (image_dir / name).is_file()]
    if absent:
        raise InputError(
            f"{image_dir}: {len(absent)} of the model's {len(names)} photos are missing (e.g. {absent[0]}); "
            "pass the --downscale of the images_N/ folder that holds them all"
        )
    sizes = dict(zip(names, map(tuple, decoded_sizes([image_dir / name for name in names]))))  # bad files fail here
    made_by = source_info("colmap", src, model=str(model.relative_to(src)) or ".", images=image_dir.name,
                          downscale=downscale, world="COLMAP units, not rescaled or recentred")  # fmt: skip
    result = _write(recon, image_dir, names, out, overwrite, None, made_by, sizes)
    logger.info("colmap: imported %d frames (%dx%d, from %s/) with the model in %s into %s",
                result.registered, *sizes[names[0]], image_dir.name, model, out)  # fmt: skip
    return result.scene_dir


def _model_folder(src: Path) -> Path:
    """The folder holding cameras / images / points3D (.bin or .txt): sparse/0, sparse, or the capture itself."""
    for folder in (src / "sparse" / "0", src / "sparse", src):
        present = [part for part in MODEL_PARTS if any((folder / f"{part}{ext}").is_file() for ext in (".bin", ".txt"))]
        if len(present) == len(MODEL_PARTS):
            return folder
        if present:
            missing = ", ".join(f"{part}.bin" for part in MODEL_PARTS if part not in present)
            raise InputError(f"{folder}: incomplete COLMAP model, {missing} (or .txt) missing; export the whole model")
    raise InputError(
        f"{src}: no COLMAP model (cameras, images and points3D as .bin or .txt in sparse/0/ or sparse/); "
        "pose the photos with `reconfusion data colmap PHOTOS OUT` instead"
    )


def _photo_folder(src: Path, downscale: int) -> Path:
    if downscale < 1:
        raise InputError(f"--downscale {downscale}: must be 1 (images/) or the N of an images_N/ folder")
    folder = src / ("images" if downscale == 1 else f"images_{downscale}")
    if not folder.is_dir():
        present = sorted(p.name for p in src.glob("images*") if p.is_dir())
        raise InputError(f"{folder}: photo folder not found" + (
            f"; folders present: {', '.join(present)} (images_N/ is --downscale N)" if present else ""))
    return folder


def _sparse_points(recon, images: list) -> SparsePoints:
    """The model's points and which of ``images`` (frame i = images[i]) observed each."""
    ids = sorted(recon.point3D_ids())
    column = {point_id: index for index, point_id in enumerate(ids)}
    xyz = np.array([recon.points3D[i].xyz for i in ids], np.float64).reshape(-1, 3)
    observations = [(frame, column[p.point3D_id]) for frame, image in enumerate(images)
                    for p in image.points2D if p.has_point3D()]  # fmt: skip
    return SparsePoints(xyz, np.array(observations, np.int64).reshape(-1, 2))


RELIABLE_TRACK_LENGTH = 3
"""Depth bounds prefer points seen by at least this many photos ..."""
RELIABLE_ERROR_PX = 1.0
"""... and reprojected within this many pixels."""


def _depth_bounds(recon, image) -> list[float] | None:
    """[near, far] of the points an image sees (0.1 and 99.9 percentiles of their depth, as LLFF's
    imgs2poses does), or None when it sees fewer than 10. Only reliable points count when there are 10 of
    them: a few spurious two-view points stretched fern's far bound by half (measured: 1.54x LLFF's)."""
    points = [recon.points3D[p.point3D_id] for p in image.points2D if p.has_point3D()]
    reliable = [p for p in points if p.track.length() >= RELIABLE_TRACK_LENGTH and p.error <= RELIABLE_ERROR_PX]
    pose = image.cam_from_world()
    for chosen in (reliable, points):
        xyz = np.array([p.xyz for p in chosen]).reshape(-1, 3)
        depths = xyz @ pose.rotation.matrix()[2] + float(np.asarray(pose.translation)[2])
        depths = depths[depths > 0]
        if len(depths) >= 10:
            return [float(np.percentile(depths, 0.1)), float(np.percentile(depths, 99.9))]
    return None


def _keep_log(log_path: Path, destination: Path) -> Path:
    if log_path.is_file():
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log_path, destination)
    return destination


def original_names(scene_dir: Path) -> dict[str, str]:
    """Frame ``file_path`` -> original photo name, as written by :func:`pose_images`."""
    payload = read_json(Path(scene_dir) / IMAGE_NAMES_FILE)
    if not isinstance(payload, dict) or not isinstance(payload.get("frames"), dict):
        raise InputError(f"{Path(scene_dir) / IMAGE_NAMES_FILE}: no 'frames' mapping; re-run `reconfusion data colmap`")
    return dict(payload["frames"])


@contextlib.contextmanager
def _redirect_output(log_path: Path) -> Iterator[TextIO]:
    """Send everything written to file descriptors 1 and 2 (C++ glog included) to ``log_path``; yields a stream
    to the terminal's stderr, for progress."""
    import pycolmap

    for level in (pycolmap.logging.Level.INFO, pycolmap.logging.Level.WARNING,
                  pycolmap.logging.Level.ERROR, pycolmap.logging.Level.FATAL):
        pycolmap.logging.set_log_destination(level, "")  # no glog files in /tmp; stderr is captured below
    _flush_all()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(log_path, "ab") as log, os.fdopen(os.dup(saved[1]), "w") as terminal:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                yield terminal
            finally:
                _flush_all()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        for fd in saved:
            os.close(fd)


def _flush_all() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)  # C stdio buffers (std::cout is synced with them)


__all__ = ["ColmapResult", "original_names", "pose_images"]
