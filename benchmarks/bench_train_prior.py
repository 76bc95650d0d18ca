"""Examples/s of the tiny prior stage on this machine's CPU with 1 and 2 data-parallel processes.

    python benchmarks/bench_train_prior.py --steps 8 --batch-size 4

Each run trains from scratch on freshly generated procedural scenes and reports the examples/s that
train_prior itself logged to tensorboard over its last logging window (start-up excluded).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import tyro
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from data_tools.synthetic import generate_scenes
from reconfusion.prior import ReconFusionPrior

REPO = Path(__file__).resolve().parents[1]


def _examples_per_second(output_dir: Path) -> float:
    values = []
    for events in output_dir.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        if "examples_per_s" in accumulator.Tags().get("scalars", []):
            values.append(accumulator.Scalars("examples_per_s")[-1].value)
    if not values:
        raise RuntimeError(f"no examples_per_s logged under {output_dir}")
    return values[-1]


def _train(processes: int, root: Path, steps: int, batch_size: int) -> float:
    out = root / f"run_{processes}"
    args = ["-m", "train_prior", "tiny", "--data", str(root / "scenes"), "--vae", str(root / "vae"),
            "--output-dir", str(out), "--steps", str(steps), "--batch-size", str(batch_size),
            "--log-every", str(steps // 2), "--image-every", "0", "--checkpoint-every", str(10 * steps), "--cpu"]
    if processes == 1:
        command = [sys.executable, *args]
    else:
        accelerate = str(Path(sys.executable).with_name("accelerate"))
        command = [accelerate, "launch", "--config_file", str(REPO / "train_prior/launch/cpu_2proc.yaml"),
                   "--num_processes", str(processes), *args]
    subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return _examples_per_second(out / "logs")


def main(steps: int = 8, batch_size: int = 4) -> None:
    """Print examples/s of the tiny prior stage with 1 and 2 CPU processes (batch per process)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_scenes(root / "scenes", num_scenes=4, num_views=12, resolution=64, layout="object-360", seed=7)
        ReconFusionPrior.from_preset("tiny").vae.save_pretrained(root / "vae")
        rates = {n: _train(n, root, steps, batch_size) for n in (1, 2)}
    for n, rate in rates.items():
        print(f"{n} process(es), batch {batch_size} per process: {rate:.2f} examples/s")
    print(f"2-process / 1-process throughput: {rates[2] / rates[1]:.2f}")


if __name__ == "__main__":
    tyro.cli(main)
