"""One-line errors under ns-train / ns-eval / ns-render for bad input found by this plugin.

nerfstudio calls our dataparser and model deep inside its own entry points, so an
:class:`reconfusion.files.InputError` (a missing scene folder, a split that names missing images, a prior
that does not load) would reach the user as a traceback. :func:`install` wraps ``sys.excepthook`` so that
such an error prints ``ns-train: error: FILE: what is wrong; how to fix it`` on one line of stderr and
exits with status 2, like the ``reconfusion`` command; any other exception keeps its traceback. It also
silences two warnings nerfstudio raises after the plugin loads that no user can act on (torch's deprecation of
``torch.cuda.amp.GradScaler``; the DataLoader's worker count, fixed in nerfstudio's data manager), so that a
bad input's error is not buried under them; those raised while nerfstudio imports come before any plugin code.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from reconfusion.files import InputError


def _one_line_input_errors(previous):
    def hook(kind, error, traceback) -> None:
        if not issubclass(kind, InputError):
            return previous(kind, error, traceback)
        sys.stdout.flush()
        sys.stderr.write(f"{Path(sys.argv[0]).name}: error: {' '.join(str(error).split())}\n")
        sys.stderr.flush()
        os._exit(2)  # the interpreter would exit with 1 after a hook returns

    hook.reconfusion = True  # type: ignore[attr-defined]
    return hook


def install() -> None:
    """Install the hook once per process (nerfstudio may import the plugin several times)."""
    if not getattr(sys.excepthook, "reconfusion", False):
        sys.excepthook = _one_line_input_errors(sys.excepthook)
        warnings.filterwarnings("ignore", message=r"`torch\.cuda\.amp\.GradScaler", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r"This DataLoader will create \d+ worker processes", category=UserWarning)
