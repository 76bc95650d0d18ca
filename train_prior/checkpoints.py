"""Atomic Accelerate checkpoints: ``checkpoints/step_XXXXXXXX`` folders, the step in JSON, keep the last K.

Accelerate's ``save_state`` writes model, optimizer, scheduler, registered objects (EMA) and every
process's RNG states. Each save goes to a temporary folder that is renamed only once complete, so an
interrupted save never shadows the previous checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from accelerate import Accelerator

logger = logging.getLogger("reconfusion")

STATE_FILE = "trainer_state.json"


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step_{step:08d}"


def completed_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint, oldest first."""
    found = []
    for folder in (Path(output_dir) / "checkpoints").glob("step_*"):
        state = folder / STATE_FILE
        if state.is_file():
            found.append((int(json.loads(state.read_text())["step"]), folder))
    return sorted(found)


def save_checkpoint(accelerator: Accelerator, output_dir: Path, step: int, keep: int) -> Path:
    """Save the full training state at ``step`` (all processes must call this)."""
    final = checkpoint_dir(output_dir, step)
    partial = final.with_name(f".partial_{final.name}")
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (partial / STATE_FILE).write_text(json.dumps({"step": step}) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        for _, old in completed_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        logger.info("saved checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


def resume_latest(accelerator: Accelerator, output_dir: Path) -> int:
    """Load the latest complete checkpoint, if any; returns the step to continue from (0 if none)."""
    checkpoints = completed_checkpoints(output_dir)
    if not checkpoints:
        return 0
    step, folder = checkpoints[-1]
    accelerator.load_state(str(folder))
    logger.info("resumed from %s (step %d)", folder, step)
    return step
