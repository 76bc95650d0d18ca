"""One fit of the degraded-rendering corpus (a child process of ``reconfusion data degrade``).

    python -m nerfstudio_plugin.degrade SCENE OUT --views N --stops 150 300 600

Fits ``reconfusion-baseline-cpu`` (the benchmark's CPU settings) on the scene's N-view split and, after each
stop's step, renders every test view of the split (colour and depth) into ``OUT/stop_SSSSSS.npz``; the whole
folder is written atomically, with ``fit.json`` (:mod:`reconfusion.corpus`) listing what it holds.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation

from nerfstudio_plugin.methods import cpu_config
from reconfusion.corpus import FIT_FILE, FORMAT, read_renders, stop_file, write_renders
from reconfusion.files import atomic_directory, write_json
from reconfusion.metrics import psnr
from reconfusion.scene import load_scene

NEVER = 1 << 30


def fit_config(scene: Path, views: int, iterations: int, seed: int, workdir: Path):
    """The baseline's CPU config on ``scene``'s ``views``-view split, with evaluation, logging and saving off."""
    config = cpu_config("reconfusion-baseline-cpu", None)
    datamanager = config.pipeline.datamanager
    datamanager.data = scene
    datamanager.dataparser = replace(datamanager.dataparser, data=scene, num_views=views)
    config.max_num_iterations = iterations
    config.output_dir, config.experiment_name, config.timestamp = workdir, "fit", "run"
    config.steps_per_eval_batch = config.steps_per_eval_image = config.steps_per_eval_all_images = NEVER
    config.steps_per_save = NEVER
    config.save_only_latest_checkpoint = True
    config.logging.local_writer.enable = False
    config.machine.seed = seed
    return config


def render_test_views(pipeline) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(rgb uint8 (H, W, 3), depth (H, W) in the scene's units) of each of the eval split's cameras."""
    model, dataset = pipeline.model, pipeline.datamanager.eval_dataset
    scale = float(pipeline.datamanager.train_dataparser_outputs.dataparser_scale)
    model.eval()
    rgbs, depths = [], []
    with torch.no_grad():
        for i in range(len(dataset.cameras)):
            outputs = model.get_outputs_for_camera(dataset.cameras[i : i + 1].to(model.device))
            rgbs.append((outputs["rgb"].clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8))
            depths.append(outputs["depth"][..., 0].cpu().numpy() / scale)
    model.train()
    return rgbs, depths


def degrade_fit(scene: Path, out: Path, views: int, stops: tuple[int, ...], seed: int = 0) -> dict:
    """Fit, render at every stop, write ``out`` atomically; returns its fit.json."""
    loaded = load_scene(scene)
    split = loaded.split(views)
    stops = tuple(sorted(set(stops)))
    timings: dict[int, float] = {}
    start = time.perf_counter()
    with atomic_directory(out, overwrite=True) as tmp:
        config = fit_config(scene, views, stops[-1], seed, tmp / "ns")

        def render(step: int) -> None:
            rgb, depth = render_test_views(trainer.pipeline)
            write_renders(stop_file(tmp, step + 1), split.test_ids, rgb, depth)
            timings[step + 1] = round(time.perf_counter() - start, 2)

        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        trainer = config.setup(local_rank=0, world_size=1)
        trainer.setup()
        trainer.callbacks.append(TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], render,
                                                  iters=tuple(s - 1 for s in stops)))  # fmt: skip
        trainer.train()
        shutil.rmtree(tmp / "ns", ignore_errors=True)
        truth = [loaded.image(v) for v in split.test_ids]
        quality = {str(stop): round(mean_psnr(stop_file(tmp, stop), truth), 3) for stop in stops}
        meta = {
            "format": FORMAT, "scene": os.path.relpath(Path(scene).resolve(), Path(out).resolve()), "views": views,
            "train_ids": list(split.train_ids), "held_out_ids": list(split.test_ids), "stops": list(stops),
            "iterations": stops[-1], "seed": seed, "method": config.method_name, "seconds_at_stop": timings,
            "seconds": round(time.perf_counter() - start, 2), "psnr_at_stop": quality,
            "threads": torch.get_num_threads(), "cpu_seconds": round(cpu_seconds(), 2),
        }  # fmt: skip
        write_json(tmp / FIT_FILE, meta)
    return meta


def mean_psnr(renders: Path, truth: list[np.ndarray]) -> float:
    """Mean over views of the PSNR of a stop's renderings against the photographs (H, W, 3), in the same order."""
    as_tensor = lambda image: torch.from_numpy(np.asarray(image, np.float32)).permute(2, 0, 1)  # noqa: E731
    rgb = read_renders(renders)["rgb"]
    return float(np.mean([float(psnr(as_tensor(r / 255.0), as_tensor(t))) for r, t in zip(rgb, truth)]))


def cpu_seconds() -> float:
    """CPU time of this process so far (user + system, imports included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scene", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--views", type=int, required=True)
    parser.add_argument("--stops", type=int, nargs="+", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    degrade_fit(args.scene, args.out, args.views, tuple(args.stops), args.seed)


if __name__ == "__main__":
    main()
