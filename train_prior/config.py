"""Training configuration and its presets (``python -m train_prior {tiny-vae,tiny,small,sd} --help``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

DatasetFormat = Literal["scenes", "co3d", "realestate10k", "mvimgnet", "llff", "strecha", "degraded"]


@dataclass(frozen=True)
class DatasetConfig:
    """One training dataset and its share of the examples."""

    path: Path
    """Dataset root folder."""
    format: DatasetFormat = "scenes"
    """scenes: folders written by `reconfusion data` (any depth); or a CO3D v2 / RealEstate10K / MVImgNet root;
    llff: LLFF captures (poses_bounds.npy + images_K/, optional masks_K/); strecha: scenes with cameras/*.camera;
    degraded: a corpus of degraded renderings (`reconfusion data degrade`), for the repair preset."""
    weight: float = 1.0
    """Relative share of training examples drawn from this dataset."""


@dataclass(frozen=True)
class TrainConfig:
    """Train the prior (or, for the tiny preset, its autoencoder first) with Accelerate."""

    datasets: tuple[str, ...] = ()
    """Training datasets mixed by weight, each FORMAT:PATH or FORMAT:PATH@WEIGHT (weight 1 by default), e.g.
    --datasets llff:data/train/photos/maryRose strecha:data/train/photos/strecha@0.5 scenes:renders.
    Formats: scenes, co3d, realestate10k, mvimgnet, llff, strecha, degraded (the repair preset: a corpus of
    `reconfusion data degrade`; the other formats then pair each target with a synthetic degradation)."""
    data: tuple[Path, ...] = ()
    """Shorthand: scene folders (format "scenes", weight 1), added to --datasets."""
    eval_data: tuple[Path, ...] = ()
    """Held-out scene folders for the model card's quality numbers (never trained on)."""
    output_dir: Path = Path("runs/prior")
    """Checkpoints, tensorboard logs and the exported model go here; training resumes from it."""
    stage: Literal["vae", "prior"] = "prior"
    """vae: train the tiny preset's autoencoder; prior: train PixelNeRF + U-Net (+ image encoder)."""
    preset: Literal["tiny", "small", "repair", "sd"] = "tiny"
    """Model size: tiny (64x64, trainable on a CPU), small (128x128 on the bundled TAEF2), repair (small, repairing
    renderings: see reconfusion.presets.REPAIR_PRESET) or sd (512x512 from a Stable Diffusion folder)."""
    pretrained: str | None = None
    """sd preset: Stable Diffusion folder or hub id the U-Net and VAE start from."""
    vae: Path | None = None
    """tiny preset, prior stage: the autoencoder folder exported by the vae stage (its `vae/` output)."""
    init_from: Path | None = None
    """Prior stage: fine-tune this exported prior (e.g. reconfusion/assets/default_prior) instead of starting
    from fresh weights; its architecture and autoencoder (frozen) replace the preset's, and --resolution must
    be its resolution. A run that has checkpoints resumes from them instead."""
    holdout_scenes: tuple[str, ...] = ()
    """Scene folder names never trained on, in any dataset, nor their forward-facing arcs (NAME-arc) in a corpus
    (kept for validation: python -m train_prior.evaluation PRIOR --corpus CORPUS --scenes NAMES)."""
    validate_every: int = 0
    """repair preset with --holdout-scenes: every N steps, score the EMA weights' restoration of the held-out scenes'
    renderings in the degraded corpora (gain in dB and LPIPS change at t = 0.4, logged as validation/CORPUS/*, plotted
    in the model card); the scenes are those with fits at the first validation, kept for the whole run
    (OUT/validation_scenes.json); 0: never."""
    recolour: bool = True
    """repair preset: permute and scale the colour channels of each example, alike in all its images, so that the
    prior cannot memorise a scene's colours (train_prior.datasets.Recoloured)."""
    resolution: int = 64
    """Image side of training examples."""
    num_observed: int = 3
    """Observed views per example (the paper uses 3)."""
    steps: int = 10_000
    """Optimizer steps."""
    max_minutes: float = 0.0
    """Stop after this many minutes of training in this run (checkpoint, then export as if finished); 0: no limit."""
    batch_size: int = 16
    """Examples per process and micro-step."""
    gradient_accumulation: int = 1
    """Micro-steps per optimizer step."""
    learning_rate: float = 1e-4
    """Peak AdamW learning rate (the paper's)."""
    warmup_steps: int = 500
    """Linear learning-rate warm-up."""
    max_grad_norm: float = 1.0
    """Gradient clipping."""
    ema_decay: float = 0.999
    """EMA of the weights, exported at the end; 0 disables."""
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    """Mixed precision on GPU."""
    checkpoint_every: int = 500
    """Save the full training state every N steps (and at the end)."""
    keep_checkpoints: int = 3
    """Keep the last K checkpoints."""
    log_every: int = 25
    """Log losses, learning rate and examples/s every N steps."""
    image_every: int = 500
    """Log an image grid (observed | PixelNeRF RGB | sample | target) every N steps; 0 disables."""
    num_workers: int = 0
    """DataLoader worker processes per training process."""
    view_cache_mb: float = 1024
    """Decoded training views kept in memory per process (each DataLoader worker keeps its own), shrunk to twice
    the resolution; 0: decode every view each time it is drawn."""
    seed: int = 0
    """Seeds the example stream, the noise and the initial weights."""
    cpu: bool = False
    """Force CPU (also implied when no GPU is present; needed for multi-process gloo runs on CPU)."""

    def all_datasets(self) -> tuple[DatasetConfig, ...]:
        return tuple(parse_dataset(spec) for spec in self.datasets) + tuple(DatasetConfig(path=p) for p in self.data)


def parse_dataset(spec: str) -> DatasetConfig:
    """``FORMAT:PATH[@WEIGHT]`` -> DatasetConfig; ValueError with the fix when it does not parse."""
    formats = get_args(DatasetFormat)
    fmt, _, rest = spec.partition(":")
    path, at, weight = rest.rpartition("@") if "@" in rest else (rest, "", "1")
    try:
        value = float(weight)
    except ValueError:
        value = -1.0
    if fmt not in formats or not path or not value > 0:
        raise ValueError(
            f"--datasets {spec!r}: expected FORMAT:PATH or FORMAT:PATH@WEIGHT with FORMAT one of {', '.join(formats)} "
            "and a positive weight, e.g. llff:data/train/photos/maryRose@2"
        )
    return DatasetConfig(path=Path(path), format=fmt, weight=value)  # type: ignore[arg-type]


PRESETS: dict[str, tuple[str, TrainConfig]] = {
    "tiny-vae": (
        "Stage 1 of the tiny preset: a 4x-downsampling AutoencoderKL trained from scratch at 64x64.",
        TrainConfig(stage="vae", steps=3000, batch_size=16, learning_rate=2e-4, warmup_steps=100, ema_decay=0.0,
                    output_dir=Path("runs/tiny-vae")),
    ),
    "tiny": (
        "Stage 2 of the tiny preset: PixelNeRF + U-Net + image encoder at 64x64 on a frozen tiny VAE.",
        TrainConfig(stage="prior", steps=10_000, batch_size=16, learning_rate=3e-4, output_dir=Path("runs/tiny-prior")),
    ),
    "small": (
        "128x128 on the bundled pretrained TAEF2 autoencoder (16x16x32 latents): no VAE stage; CPU hours, GPU minutes.",
        TrainConfig(preset="small", stage="prior", resolution=128, steps=20_000, batch_size=16, learning_rate=3e-4,
                    output_dir=Path("runs/small-prior")),
    ),
    "repair": (
        "The repairing prior: 128x128 on the bundled TAEF2, restoring renderings noised to t <= 0.7 given the observed "
        "views (train it on a degraded-rendering corpus, --datasets degraded:CORPUS, plus scenes).",
        TrainConfig(preset="repair", stage="prior", resolution=128, steps=20_000, batch_size=8, learning_rate=3e-4,
                    warmup_steps=200, output_dir=Path("runs/repair-prior")),
    ),
    "sd": (
        "The paper-sized prior: 512x512 from a Stable Diffusion folder (GPU; mixed precision).",
        TrainConfig(preset="sd", stage="prior", resolution=512, batch_size=8, mixed_precision="bf16",
                    checkpoint_every=2000, output_dir=Path("runs/sd-prior")),
    ),
}

