"""What nerfstudio 1.1.5 needs to work offline and under torch >= 2.6 (DESIGN.md, machine realities).

- torch >= 2.6 loads checkpoints with ``weights_only=True``. nerfstudio 1.1.5 checkpoints hold numpy
  scalars (its learning-rate schedules return ``np.float64``, which land in the schedulers' state), so
  ``ns-eval`` and resuming fail with an UnpicklingError. :func:`register_checkpoint_globals` allows
  exactly those numpy types; it runs when the plugin is imported, which nerfstudio does for every
  ``ns-*`` command when it discovers the entry points.
- Every stock nerfstudio model builds torchmetrics' LPIPS in ``populate_modules``, which downloads
  AlexNet weights: offline that is a URLError before training starts. :func:`without_stock_lpips`
  suppresses that construction; our model builds its perceptual metric lazily from
  :mod:`reconfusion.metrics` instead.
- ``ns-render`` insists on an ``ffmpeg`` on PATH (even for ``--output-format images``) and writes videos
  through mediapy, which runs ``ffmpeg``. Where the system has none, :func:`provide_ffmpeg` puts the
  binary from the imageio-ffmpeg wheel (a dependency, so ``setup.sh`` installs it) on PATH under the
  name ``ffmpeg``; it runs when this module is imported, i.e. before any ``ns-*`` command starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import numpy as np
import torch


def _numpy_checkpoint_globals() -> list:
    # numpy 2 moved numpy.core to numpy._core; checkpoints name whichever wrote them, so allow both names.
    scalar = importlib.import_module("numpy._core.multiarray" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core.multiarray").scalar
    types = [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), np.dtype]
    for name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType"):
        dtype_class = getattr(getattr(np, "dtypes", None), name, None)
        if dtype_class is not None:
            types.append(dtype_class)
    return types


def register_checkpoint_globals() -> None:
    """Allow the numpy scalar types found in nerfstudio checkpoints in weights-only ``torch.load``."""
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:  # torch < 2.4 has no weights-only default to satisfy
        add(_numpy_checkpoint_globals())


class _NoStockLPIPS:
    """Stands in for torchmetrics' LPIPS while a stock nerfstudio model is constructed."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __call__(self, *args, **kwargs):
        raise RuntimeError("the stock LPIPS metric was replaced by reconfusion.metrics; use the model's metric")


@contextlib.contextmanager
def without_stock_lpips() -> Iterator[None]:
    """Within the block, ``torchmetrics...LearnedPerceptualImagePatchSimilarity`` builds nothing."""
    import torchmetrics.image.lpip as lpip_module

    original = lpip_module.LearnedPerceptualImagePatchSimilarity
    lpip_module.LearnedPerceptualImagePatchSimilarity = _NoStockLPIPS
    try:
        yield
    finally:
        lpip_module.LearnedPerceptualImagePatchSimilarity = original


def _link_ffmpeg(exe: str, folder: Path) -> Path:
    """``folder/ffmpeg`` -> ``exe``, made atomically (a private name renamed into place), so concurrent
    processes can race on it safely."""
    link = folder / "ffmpeg"
    if not os.path.exists(link):  # False for a dangling link too, which is then replaced
        folder.mkdir(parents=True, exist_ok=True)
        private = folder / f".ffmpeg.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            private.unlink()
        private.symlink_to(exe)
        os.replace(private, link)
    return link


def provide_ffmpeg() -> Optional[str]:
    """Make ``ffmpeg`` on PATH resolve, using imageio-ffmpeg's binary where the system has no ffmpeg.

    Its file is not named ``ffmpeg``, so a symlink of that name goes in a folder (in the user's cache,
    else the temp dir) that is prepended to ``PATH``; subprocesses inherit it. The folder is keyed by
    the binary's path, so several environments never share one link. A system ffmpeg wins; without
    imageio-ffmpeg, or where no folder is writable, PATH is left alone. Returns what ``ffmpeg`` now is.
    """
    if (found := shutil.which("ffmpeg")) is not None:
        return found
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # not installed, or its binary is missing: ns-render will say ffmpeg is absent
        return None
    key = "ffmpeg-" + hashlib.sha256(os.path.realpath(exe).encode()).hexdigest()[:16]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    user = getattr(os, "getuid", lambda: "user")()
    for root in (Path(cache) / "reconfusion", Path(tempfile.gettempdir()) / f"reconfusion-{user}"):
        try:
            folder = _link_ffmpeg(exe, root / key).parent
        except OSError:
            continue
        os.environ["PATH"] = os.pathsep.join(filter(None, [str(folder), os.environ.get("PATH")]))
        return shutil.which("ffmpeg")
    return None


provide_ffmpeg()
