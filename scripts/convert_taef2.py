"""Convert the upstream TAEF2 state dicts into a diffusers-style folder for ``reconfusion.taef2.TAEF2``.

    python scripts/convert_taef2.py SRC_DIR OUT_DIR [--data DATA_DIR] [--overwrite]

SRC_DIR holds ``taef2_encoder.pth``, ``taef2_decoder.pth`` and ``LICENSE`` (e.g. ../shared/weights/taef2).
Every source tensor must land on a parameter of the same shape and every parameter must get one;
the weights are stored as fp16 safetensors (as upstream: lossless) and ``TAEF2.from_pretrained``
loads them as float32. With ``--data`` (the folder holding nerf_llff_data/ and nerf_synthetic/) it
also prints the round-trip PSNR and latent statistics on fern and lego. The folder is built in a
temporary sibling and renamed into place only when complete; an existing card (README.md) in
OUT_DIR is carried over.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from reconfusion.files import atomic_directory
from reconfusion.taef2 import TAEF2, latent_std, round_trip_psnr

PARTS = ("encoder", "decoder")
"""Upstream file ``taef2_<part>.pth`` holds the ``nn.Sequential`` state dict of ``TAEF2.<part>``."""
FERN = [f"nerf_llff_data/fern/images_8/image{i:03d}.png" for i in (0, 5, 10, 15)]
LEGO = [f"nerf_synthetic/lego/test/r_{i}.png" for i in (0, 50, 100, 150)]


def mapped_state_dict(src: Path, model: TAEF2) -> dict[str, torch.Tensor]:
    """The upstream tensors under the model's names, float32; raises on any unused, missing or misshapen one."""
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for part in PARTS:
        for key, tensor in torch.load(src / f"taef2_{part}.pth", weights_only=True, map_location="cpu").items():
            name = f"{part}.{key}"
            if name not in target:
                raise KeyError(f"{src}/taef2_{part}.pth: {key} has no counterpart {name} in TAEF2")
            if tensor.shape != target[name].shape:
                raise ValueError(f"{name}: source {tuple(tensor.shape)} vs model {tuple(target[name].shape)}")
            out[name] = tensor.float()
    missing = sorted(set(target) - set(out))
    if missing:
        raise KeyError(f"TAEF2 parameters without a source tensor: {missing}")
    return out


def convert(src: Path, out: Path, overwrite: bool = False) -> TAEF2:
    """Write the converted model (fp16 safetensors + LICENSE) to ``out``; return it in float32."""
    model = TAEF2()
    state = mapped_state_dict(src, model)
    model.load_state_dict(state, strict=True)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        model.half().save_pretrained(tmp, safe_serialization=True)
        shutil.copyfile(src / "LICENSE", tmp / "LICENSE")
        if (out / "README.md").is_file():  # keep the model card when replacing a converted folder
            shutil.copyfile(out / "README.md", tmp / "README.md")
        for path in tmp.iterdir():  # safetensors writes 0600 files; package files are world-readable
            os.chmod(path, 0o644)
        reloaded = TAEF2.from_pretrained(tmp)
        for name, tensor in reloaded.state_dict().items():
            if tensor.dtype != torch.float32 or not torch.equal(tensor, state[name]):
                raise RuntimeError(f"{name}: reloaded tensor differs from the source")
    return reloaded.eval()


def load_image(path: Path, size: int) -> torch.Tensor:
    """(3, size, size) in [0, 1]: RGBA composited on white, centre square crop, PIL LANCZOS resize."""
    image = Image.open(path)
    if image.mode == "RGBA":
        image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image)
    image = image.convert("RGB")
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.LANCZOS)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255.0


def load_images(data: Path, names: list[str], size: int) -> torch.Tensor:
    return torch.stack([load_image(data / name, size) for name in names])


def measure(model: TAEF2, data: Path, sizes=(64, 128, 256)) -> None:
    """Print per-scene, per-size round-trip PSNR and unscaled latent mean/std, then the pooled std."""
    print("| images | size | PSNR mean (per image) | latent mean | latent std |")
    print("|---|---|---|---|---|")
    stds = []
    for scene, names in (("fern", FERN), ("lego", LEGO)):
        for size in sizes:
            images = load_images(data, names, size)
            psnr = round_trip_psnr(model, images)
            mean, std = latent_std(model, images)
            stds.append(std)
            per = ", ".join(f"{p:.2f}" for p in psnr.tolist())
            print(f"| {scene} | {size} | {psnr.mean():.2f} dB ({per}) | {mean:+.3f} | {std:.3f} |")
    pooled = float(np.sqrt(np.mean(np.square(stds))))
    print(f"\nRMS of the {len(stds)} latent stds: {pooled:.3f}; 1 / that = {1.0 / pooled:.3f}")
    print(f"config scaling_factor = {model.config.scaling_factor}, shift_factor = {model.config.shift_factor}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("src", type=Path, help="folder with taef2_encoder.pth, taef2_decoder.pth, LICENSE")
    parser.add_argument("out", type=Path, help="output folder (created atomically)")
    parser.add_argument("--data", type=Path, help="folder with nerf_llff_data/ and nerf_synthetic/ to measure on")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = convert(args.src, args.out, overwrite=args.overwrite)
    files = sorted(p for p in args.out.iterdir() if p.is_file())
    print(f"wrote {args.out}: " + ", ".join(f"{p.name} ({p.stat().st_size:,} B)" for p in files))
    if args.data:
        measure(model, args.data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
