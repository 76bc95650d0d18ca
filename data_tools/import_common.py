"""What every importer shares: checked output folders and poses, image lists and sizes, the source record."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from reconfusion.cameras import check_poses
from reconfusion.files import InputError, is_image_file, read_image
from reconfusion.scene import Scene, load_scene

SOURCE_KEY = "reconfusion_import"


def check_out(src: Path, out: Path) -> None:
    src_abs, out_abs = src.resolve(), out.resolve()
    if src_abs == out_abs or out_abs in src_abs.parents or src_abs in out_abs.parents:
        raise InputError(f"{out}: the output folder must not contain or lie inside the source {src}; choose another")


def rigid(c2w: np.ndarray, source: Path) -> np.ndarray:
    """check_poses, with its ValueError turned into the InputError of bad user input."""
    try:
        return check_poses(c2w, str(source))
    except InputError:
        raise
    except ValueError as err:
        raise InputError(str(err)) from err


def load_source(src: Path) -> Scene:
    try:
        return load_scene(src)
    except InputError:
        raise
    except ValueError as err:
        raise InputError(str(err)) from err


def list_images(folder: Path) -> list[Path]:
    images = sorted(p for p in folder.iterdir() if is_image_file(p))
    if not images:
        raise InputError(f"{folder}: no images (png/jpg) found; put the scene's images there")
    return images


def decoded_sizes(paths: Sequence[Path]) -> np.ndarray:
    """(N, 2) width, height; every image is decoded once so broken files fail here, not later."""
    return np.array([read_image(p).shape[1::-1] for p in paths], dtype=np.int64)


def source_info(format: str, src: Path, **more) -> dict:
    return {SOURCE_KEY: {"format": format, "source": str(src.resolve()), **more}}
