"""Files shipped inside the package: the bundled default prior and the TAEF2 autoencoder."""

from pathlib import Path

DEFAULT_PRIOR_PATH = Path(__file__).resolve().parent / "default_prior"
"""The tiny prior trained on procedural scenes by train_prior (see its model card, README.md inside)."""

TAEF2_PATH = Path(__file__).resolve().parent / "taef2"
"""TAEF2, a tiny autoencoder for the FLUX.2 latent space: load with ``reconfusion.taef2.TAEF2.from_pretrained``
(weights, licence and card, README.md, inside)."""
