"""The one file helper: image reading/writing and atomic outputs.

Nothing is ever half-written: files go to a temporary name and are renamed, folders are built in
a temporary sibling folder and renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".JPG", ".JPEG", ".PNG")


def is_image_file(path: Path) -> bool:
    """A visible file with an image suffix in any case (hidden ones are e.g. macOS's ._IMG_0001.JPG metadata)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()


class InputError(ValueError):
    """Bad user input: the message names the file and the fix."""


def read_rgba(path: Path) -> np.ndarray:
    """Read an image as float32 (H, W, 4) in [0, 1]; alpha is 1 where the file has no alpha channel."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: image file not found; check the path or the scene's transforms.json")
    with opened_image(path) as img:
        img.load()
        if img.mode in SIXTEEN_BIT_GREY:  # convert("RGBA") would clip these to 0-255 of 65535
            grey = np.asarray(img, dtype=np.float32) / 65535.0
            return np.stack([grey, grey, grey, np.ones_like(grey)], axis=-1)
        return np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0


@contextlib.contextmanager
def opened_image(path: Path) -> Iterator[Image.Image]:
    """``Image.open``, with a file that does not decode (then or while read) reported as bad input naming it."""
    try:
        with Image.open(path) as img:
            yield img
    except Image.DecompressionBombError as err:
        raise InputError(f"{path}: too large to read safely ({err}); downscale it, e.g. to 4000 px across") from err
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise InputError(f"{path}: image does not decode ({err}); replace or remove this file") from err


SIXTEEN_BIT_GREY = ("I;16", "I;16B", "I;16L", "I")
"""Pillow's modes of 16-bit greyscale PNGs (``I`` in older Pillow versions)."""
READ_AS_IS = ("RGB", "RGBA", "L")
"""Pixel formats nerfstudio reads correctly from the raw array; scenes re-encode other images (palette,
greyscale with alpha, CMYK, 16-bit) to 8-bit PNG."""


def read_as_is(path: Path) -> bool:
    """Whether an image file is in one of the READ_AS_IS formats (and can be copied into a scene unchanged)."""
    with opened_image(path) as img:
        return img.mode in READ_AS_IS


def composite(rgba: np.ndarray, background: tuple[float, float, float]) -> np.ndarray:
    """The one place images are composed on a background: (H, W, 4) -> (H, W, 3), float32."""
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    return np.ascontiguousarray(rgb * alpha + np.asarray(background, np.float32) * (1.0 - alpha), dtype=np.float32)


def read_image(path: Path, background: tuple[float, float, float] | None = None) -> np.ndarray:
    """Read an image as float32 (H, W, 3) in [0, 1].

    RGBA images are composited over ``background`` (an RGB triple in [0, 1]); without a background
    the alpha channel is dropped.
    """
    rgba = read_rgba(path)
    if background is not None:
        return composite(rgba, background)
    return np.ascontiguousarray(rgba[..., :3])


def has_alpha(path: Path) -> bool:
    """Whether an image file carries transparency (an alpha channel or a transparent palette entry)."""
    with opened_image(path) as img:
        return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file without decoding its pixels."""
    with opened_image(path) as img:
        return img.size


def to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(np.asarray(image, np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_image(path: Path, image: np.ndarray) -> None:
    """Write a float image in [0, 1] (H, W, 3), RGBA (H, W, 4) or a uint8 image, atomically."""
    data = image if np.asarray(image).dtype == np.uint8 else to_uint8(image)
    path = Path(path)
    with atomic_file(path) as tmp:
        Image.fromarray(data).save(tmp, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically."""
    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write text atomically."""
    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def read_json(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err}); fix or regenerate the file") from err
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err.reason}); save it again as UTF-8") from err


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError, PermissionError) as err:
        raise InputError(
            f"{path}: cannot create its folder ({err.strerror}: {err.filename}); choose another output path"
        ) from err


def _in_writable_folder(make_temporary, path: Path, suffix: str):
    """``tempfile.mkstemp`` / ``mkdtemp`` next to ``path``; a folder we may not write to is the user's to fix."""
    try:
        return make_temporary(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as err:
        raise InputError(f"{path.parent}: cannot write here ({err.strerror}); choose another output folder, "
                         "or copy the input somewhere writable") from err


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    _make_parent(path)
    fd, name = _in_writable_folder(tempfile.mkstemp, path, ".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; finished outputs follow the umask
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder in a temporary sibling and move it to ``out`` only when the block succeeds.

    An existing non-empty ``out`` is an error unless ``overwrite`` is set, in which case it is
    replaced only after the new folder is complete.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; choose another output folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out}: output folder exists and is not empty; choose another folder or pass --overwrite")
    _make_parent(out)
    tmp = Path(_in_writable_folder(tempfile.mkdtemp, out, ".partial"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, trash / out.name)
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def read_scalars(log_dir: Path, tags: tuple[str, ...]) -> dict[str, tuple[list[int], list[float]]]:
    """(steps, values) of each tag found in the tensorboard event files under ``log_dir`` (all resumed runs)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # its directory watcher logs every file it passes
    series: dict[int, dict[str, float]] = {}
    for events in sorted({p.parent for p in Path(log_dir).rglob("events.out.tfevents.*")}):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})  # every value, not a sample
        accumulator.Reload()
        for tag in set(tags) & set(accumulator.Tags().get("scalars", [])):
            for event in accumulator.Scalars(tag):
                series.setdefault(event.step, {})[tag] = event.value  # a resumed run's steps replace the old ones
    steps = sorted(series)
    return {tag: ([s for s in steps if tag in series[s]], [series[s][tag] for s in steps if tag in series[s]]) for tag in tags}
