"""reconfusion: sparse-view 3D reconstruction with a PixelNeRF-conditioned latent diffusion prior."""

__version__ = "0.1.0"
