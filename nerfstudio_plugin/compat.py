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
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator

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
