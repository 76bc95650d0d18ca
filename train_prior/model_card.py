"""The exported prior's model card: data, steps, time and machine, held-out quality and how to reproduce it."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, replace
from pathlib import Path

import torch

from reconfusion.files import read_json, write_json
from reconfusion.prior import ReconFusionPrior
from train_prior.config import DatasetConfig, TrainConfig
from train_prior.evaluation import evaluate_prior
from train_prior.monitoring import VALIDATION_TAGS, plot_loss_curves, validation_tags
from reconfusion.corpus import is_held_out, read_corpus
from reconfusion.scene import Scene
from train_prior.readers import READERS

LICENCE_NAMES = ("LICENSE", "LICENSE.md", "LICENSE.txt", "LICENCE", "COPYING")
MANIFEST = "manifest.json"
"""The training manifest beside the exported prior: one row per training scene, with source and licence."""


def _licence_near(folder: Path, root: Path) -> str | None:
    """The first licence file in ``folder`` or a parent of it up to ``root``'s parent."""
    stop = root.resolve().parent
    for parent in [folder.resolve(), *folder.resolve().parents]:
        found = next((parent / name for name in LICENCE_NAMES if (parent / name).is_file()), None)
        if found is not None or parent == stop:
            return str(found) if found is not None else None
    return None


def stated_licence(source: Path, levels: int = 4) -> str | None:
    """The licence a data README beside a parent of ``source`` states for it: the "licence" cell of the row of a
    Markdown table whose "folder" cell is the longest prefix of ``source``'s path below that README's folder
    (as ../shared/data/README.md lists its training sources); None when no README says."""
    for folder in list(Path(source).resolve().parents)[:levels]:
        readme = folder / "README.md"
        if not readme.is_file():
            continue
        rows = licence_rows(readme.read_text(errors="replace"))
        for below in (folder / "train", folder):
            try:
                relative = Path(source).resolve().relative_to(below).as_posix() + "/"
            except ValueError:
                continue
            matches = [key for key in rows if relative.startswith(key)]
            if matches:
                return f"{rows[max(matches, key=len)]}{STATED}{readme} states it)"
    return None


def licence_rows(markdown: str) -> dict[str, str]:
    """``folder/`` -> licence text of every Markdown table with a "folder" and a "licence" column."""
    rows: dict[str, str] = {}
    header: list[str] | None = None
    for line in markdown.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = [cell.lower() for cell in cells]
            continue
        folder = next((i for i, name in enumerate(header) if name == "folder"), None)
        licence = next((i for i, name in enumerate(header) if name.startswith("licence")), None)
        if folder is None or licence is None or set(cells[0]) <= set("-: ") or len(cells) != len(header):
            continue
        key = cells[folder].replace("`", "").split(" ")[0].rstrip("/") + "/"
        rows[key] = cells[licence]
    return rows


def _provenance(scene: Scene, root: Path) -> tuple[str, str]:
    """(source, licence) of a training scene: what generated it (procedural seed, rendered mesh) or where it
    lies, and the licence file found for it ("procedural" for generated scenes, "not found" otherwise)."""
    folder = scene.image_paths[0].parent
    transforms = folder.parent / "transforms.json"
    header = read_json(transforms) if transforms.is_file() else {}
    if "synthetic" in header:
        info = header["synthetic"]
        return f"{info.get('generator')}, {info.get('layout')}, seed {info.get('seed')}", "procedural (generated here)"
    if "mesh_render" in header:
        info = header["mesh_render"]
        return f"mesh {info.get('mesh')} ({info.get('generator')})", str(info.get("licence_file") or "not found")
    imported = header.get("reconfusion_import")
    if isinstance(imported, dict) and imported.get("source"):  # `reconfusion data import` / `data colmap`: the original
        original = Path(imported["source"])
        licence = stated_licence(original) or _licence_near(original, original.parent)
        return f"{imported.get('format')} import of {original}", licence or "not found beside the source (see where it came from)"
    return str(folder), _licence_near(folder, root) or "not found"


def _scenes_of(dataset: DatasetConfig, min_views: int) -> list[Scene]:
    """The scenes of a dataset; for a degraded-rendering corpus, the scenes its fits were made from."""
    if dataset.format != "degraded":
        return READERS[dataset.format](dataset.path, min_views=min_views)
    scenes = {fit.scene.root: fit.scene for fit in read_corpus(dataset.path)}
    return [replace(scene, name=root.name) for root, scene in scenes.items()]


def training_manifest(config: TrainConfig) -> list[dict]:
    """One row per training scene of ``config``'s datasets (its held-out scenes left out): dataset, scene, views,
    source and licence."""
    rows = []
    for dataset in config.all_datasets():
        for scene in _scenes_of(dataset, config.num_observed + 1):
            if is_held_out(scene.root.name, config.holdout_scenes):
                continue
            source, licence = _provenance(scene, Path(dataset.path))
            rows.append({"dataset": str(dataset.path), "format": dataset.format, "weight": dataset.weight,
                         "scene": scene.name, "views": len(scene), "source": source, "licence": licence})  # fmt: skip
    return rows


STATED = " (as "
"""What :func:`stated_licence` puts between a licence statement and the README it comes from."""


def _licence_label(licence: str) -> str:
    """A licence file as FOLDER/NAME, a statement of a data README as stated (markers as they are)."""
    if STATED in licence:
        return licence.split(STATED)[0] + " (data README)"
    if licence.startswith(("procedural", "not found")):
        return licence
    return f"{Path(licence).parent.name}/{Path(licence).name}"


def manifest_table(rows: list[dict]) -> list[str]:
    """Markdown lines summarising the manifest: one line per dataset and licence."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["format"], _licence_label(row["licence"])), []).append(row)
    lines = ["| dataset | format | scenes | views | licence |", "|---|---|---|---|---|"]
    for (dataset, fmt, licence), members in groups.items():
        lines.append(f"| `{dataset}` | {fmt} | {len(members)} | {sum(r['views'] for r in members)} | {licence} |")
    return lines


def machine_description() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def write_model_card(config: TrainConfig, step: int, train_seconds: float, num_processes: int) -> Path:
    """Evaluate the exported prior on config.eval_data and write README.md + metrics.json beside it."""
    folder = config.output_dir / "prior"
    data = "\n".join(f"  - `{d.path}` ({d.format}, weight {d.weight})" for d in config.all_datasets())
    manifest = training_manifest(config)
    write_json(folder / MANIFEST, manifest)
    lines = [
        f"# ReconFusion prior ({config.preset} preset)",
        "",
        "A PixelNeRF-conditioned latent diffusion prior trained by `train_prior`. Load it with",
        "`ReconFusionPrior.from_pretrained(folder)`.",
        "",
        "## Training",
        "",
        *([f"- fine-tuned from: `{config.init_from}` (its own card there lists what it was trained on)"]
          if config.init_from is not None else []),
        f"- data:\n{data}",
        f"- steps: {step}, batch {config.batch_size} x {num_processes} processes x {config.gradient_accumulation} accumulation,"
        f" resolution {config.resolution}, learning rate {config.learning_rate}, EMA {config.ema_decay}",
        f"- time: {train_seconds / 60:.1f} min on {machine_description()}",
        "",
        f"Training scenes and their licences (every scene with its source in `{MANIFEST}`):",
        "",
        *manifest_table(manifest),
    ]
    if plot_loss_curves(config.output_dir / "logs", folder / "loss_curves.png") is not None:
        lines += ["", "Training losses (tensorboard logs in `logs/` of the run):", "", "![loss curves](loss_curves.png)"]
    tags = VALIDATION_TAGS + tuple(tag for group in validation_tags(config).values() for tag in group)
    if plot_loss_curves(config.output_dir / "logs", folder / "validation.png", tags,
                        "restored - rendering (dB; LPIPS)", "linear") is not None:  # fmt: skip
        lines += ["", f"Restoration of the held-out scenes ({', '.join(config.holdout_scenes)}) during training, at "
                      "t = 0.4 (`--validate-every`):", "", "![validation](validation.png)"]  # fmt: skip
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
