"""Stand-ins for a sparse-view NeRF's renderings where no real one exists (training scenes without a corpus fit,
the scene's own input views when the prior adapts to a scene)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def synthetic_rendering(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A stand-in for a sparse-view NeRF's rendering of ``image`` (float (H, W, 3) in [0, 1]) where no real one
    exists: detail lost (down- and upsampled by 2-6x), colours shifted (gain and offset per channel), a blotch of
    haze as floaters leave, and a little noise."""
    height, width = image.shape[:2]
    factor = rng.uniform(2.0, 6.0)
    small = (max(1, round(width / factor)), max(1, round(height / factor)))
    pixels = Image.fromarray((image * 255 + 0.5).astype(np.uint8))
    out = np.asarray(pixels.resize(small, Image.BILINEAR).resize((width, height), Image.BILINEAR), np.float32) / 255.0
    out = out * rng.uniform(0.85, 1.15, 3) + rng.uniform(-0.06, 0.06, 3)
    y, x = np.mgrid[0:height, 0:width]
    centre, radius = rng.uniform(0, 1, 2) * (height, width), rng.uniform(0.1, 0.4) * min(height, width)
    haze = rng.uniform(0.0, 0.6) * np.exp(-((y - centre[0]) ** 2 + (x - centre[1]) ** 2) / (2 * radius**2))
    out = out * (1 - haze[..., None]) + rng.uniform(0, 1, 3) * haze[..., None]
    return np.clip(out + rng.normal(0.0, rng.uniform(0.0, 0.03), out.shape), 0.0, 1.0).astype(np.float32)
