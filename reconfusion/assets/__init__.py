"""Files shipped inside the package: the bundled default prior."""

from pathlib import Path

DEFAULT_PRIOR_PATH = Path(__file__).resolve().parent / "default_prior"
"""The tiny prior trained on procedural scenes by train_prior (see its model card, README.md inside)."""
