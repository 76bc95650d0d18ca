"""The exported prior's model card: data, steps, time and machine, held-out quality and how to reproduce it."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict
from pathlib import Path

import torch

from reconfusion.files import write_json
from reconfusion.prior import ReconFusionPrior
from train_prior.config import TrainConfig
from train_prior.evaluation import evaluate_prior


def machine_description() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def write_model_card(config: TrainConfig, step: int, train_seconds: float, num_processes: int) -> Path:
    """Evaluate the exported prior on config.eval_data and write README.md + metrics.json beside it."""
    folder = config.output_dir / "prior"
    data = "\n".join(f"  - `{d.path}` ({d.format}, weight {d.weight})" for d in config.all_datasets())
    lines = [
        f"# ReconFusion prior ({config.preset} preset)",
        "",
        "A PixelNeRF-conditioned latent diffusion prior trained by `train_prior`. Load it with",
        "`ReconFusionPrior.from_pretrained(folder)`.",
        "",
        "## Training",
        "",
        f"- data:\n{data}",
        f"- steps: {step}, batch {config.batch_size} x {num_processes} processes x {config.gradient_accumulation} accumulation,"
        f" resolution {config.resolution}, learning rate {config.learning_rate}, EMA {config.ema_decay}",
        f"- time: {train_seconds / 60:.1f} min on {machine_description()}",
    ]
    if config.eval_data:
        quality = evaluate_prior(ReconFusionPrior.from_pretrained(folder).to(_device()), config.eval_data)
        write_json(folder / "metrics.json", asdict(quality))
        paths = " ".join(str(p) for p in config.eval_data)
        lines += [
            "",
            "## Held-out quality",
            "",
            f"On {quality.examples} examples (3 observed views + 1 target) from scenes never used in training:",
            "",
            "| metric | value |",
            "|---|---|",
            f"| PixelNeRF RGB PSNR (latent resolution) | {quality.pixelnerf_psnr:.2f} dB |",
            f"| sample PSNR (10 DDIM steps from noise, guidance 3) | {quality.sample_psnr:.2f} dB |",
            f"| sample SSIM | {quality.sample_ssim:.3f} |",
            f"| refinement PSNR (from PixelNeRF RGB at t = 0.5) | {quality.refine_psnr:.2f} dB |",
            "",
            "Reproduce (prints the same numbers as JSON; GPU and CPU agree to sampling noise):",
            "",
            f"    python -m train_prior.evaluation {folder} --data {paths}",
        ]
    card = folder / "README.md"
    card.write_text("\n".join(lines) + "\n")
    return card


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
