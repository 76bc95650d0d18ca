"""What this installation can use: versions, CUDA, pycolmap CUDA, LPIPS backends."""

from __future__ import annotations

import importlib.metadata

import torch

import reconfusion


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def describe_environment() -> dict[str, str]:
    """A flat description for `reconfusion info` and for reports."""
    info = {"reconfusion": reconfusion.__version__}
    for package in ("torch", "diffusers", "accelerate", "nerfstudio", "pycolmap", "open_clip_torch", "lpips"):
        info[package] = _version(package)
    info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available"
    try:
        import pycolmap

        info["pycolmap cuda"] = str(bool(getattr(pycolmap, "has_cuda", False)))
    except ImportError:
        info["pycolmap cuda"] = "pycolmap not importable"
    return info
