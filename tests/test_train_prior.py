"""The training loop: resume gives the same run as no interruption, data parallelism keeps ranks in sync."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data_tools.synthetic import generate_scenes
from reconfusion.prior import ReconFusionPrior
from train_prior.__main__ import run
from train_prior.checkpoints import completed_checkpoints
from train_prior.config import TrainConfig
from reconfusion.files import read_scalars

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def training_data(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("train_prior")
    generate_scenes(root / "scenes", num_scenes=2, num_views=8, resolution=64, layout="object-360", seed=3)
    vae = root / "vae"
    ReconFusionPrior.from_preset("tiny").vae.save_pretrained(vae)
    return root / "scenes", vae


def _config(training_data: tuple[Path, Path], out: Path, steps: int, **overrides) -> TrainConfig:
    scenes, vae = training_data
    defaults = dict(data=(scenes,), vae=vae, output_dir=out, steps=steps, batch_size=2, warmup_steps=2,
                    checkpoint_every=100, keep_checkpoints=2, image_every=0, log_every=1, cpu=True)
    return TrainConfig(**{**defaults, **overrides})


def test_resume_reproduces_an_uninterrupted_run(training_data, tmp_path):
    straight = run(_config(training_data, tmp_path / "straight", steps=4))
    first = run(_config(training_data, tmp_path / "resumed", steps=2))
    second = run(_config(training_data, tmp_path / "resumed", steps=4))
    assert second.step == 4 and len(second.losses) == 2
    assert first.losses + second.losses == straight.losses
    for (name, a), b in zip(straight.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert [step for step, _ in completed_checkpoints(tmp_path / "resumed")] == [2, 4]
    exported = ReconFusionPrior.from_pretrained(tmp_path / "resumed" / "prior")
    assert exported.resolution == 64
    card = (tmp_path / "resumed" / "prior" / "README.md").read_text()
    assert "![loss curves](loss_curves.png)" in card and (tmp_path / "resumed" / "prior" / "loss_curves.png").is_file()
    steps, _ = read_scalars(tmp_path / "resumed" / "logs", ("loss",))["loss"]
    assert steps == [1, 2, 3, 4]  # both runs' logs, in order
    manifest = json.loads((tmp_path / "resumed" / "prior" / "manifest.json").read_text())
    assert [row["scene"] for row in manifest] == ["scene_00003", "scene_00004"]


def test_vae_stage_sets_the_latent_scaling(training_data, tmp_path):
    out = tmp_path / "vae_run"
    run(_config(training_data, out, steps=2, stage="vae", ema_decay=0.0, image_every=1))
    scaling = ReconFusionPrior.from_preset("tiny").with_vae(out / "vae").vae.config.scaling_factor
    assert scaling != 1.0 and 0.0 < scaling < 100.0
    assert list((out / "logs").rglob("events.out.tfevents.*"))


def test_fine_tuning_starts_from_the_given_prior_and_keeps_its_autoencoder(training_data, tmp_path):
    bundled = REPO / "reconfusion" / "assets" / "default_prior"
    out = tmp_path / "fine_tuned"
    run(_config(training_data, out, steps=2, init_from=bundled, vae=None, learning_rate=1e-5))
    start, tuned = ReconFusionPrior.from_pretrained(bundled), ReconFusionPrior.from_pretrained(out / "prior")
    for (name, a), b in zip(start.vae.state_dict().items(), tuned.vae.state_dict().values()):
        assert torch.equal(a, b), name  # frozen
    moved = [(a - b).abs().max().item() for a, b in zip(start.unet.parameters(), tuned.unet.parameters())]
    assert 0.0 < max(moved) < 1e-2  # trained, from the bundled weights (fresh ones would differ by far more)
    with pytest.raises(SystemExit, match="--resolution 64"):
        run(_config(training_data, tmp_path / "wrong", steps=1, init_from=bundled, vae=None, resolution=128))
    card = (out / "prior" / "README.md").read_text()
    assert f"fine-tuned from: `{bundled}`" in card
    with pytest.raises(SystemExit, match="without --vae"):
        run(_config(training_data, tmp_path / "both", steps=1, init_from=bundled))  # _config passes --vae
    with pytest.raises(SystemExit, match="--init-from .*nowhere"):
        run(_config(training_data, tmp_path / "missing", steps=1, init_from=tmp_path / "nowhere", vae=None))


def test_checkpoints_keep_the_last_k(training_data, tmp_path):
    run(_config(training_data, tmp_path, steps=3, checkpoint_every=1, keep_checkpoints=2, ema_decay=0.0))
    assert [step for step, _ in completed_checkpoints(tmp_path)] == [2, 3]
    assert not list((tmp_path / "checkpoints").glob(".partial_*"))


def test_bad_data_paths_fail_clearly(tmp_path, training_data):
    from reconfusion.files import InputError

    with pytest.raises(InputError, match="not found"):
        run(_config(training_data, tmp_path / "out", steps=1, data=(tmp_path / "nowhere",)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no usable scenes"):
        run(_config(training_data, tmp_path / "out", steps=1, data=(tmp_path / "empty",)))



def test_the_command_line_prints_bad_data_as_one_line(tmp_path):
    command = [sys.executable, "-m", "train_prior", "tiny", "--data", str(tmp_path / "nowhere"),
               "--output-dir", str(tmp_path / "out"), "--cpu"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(f"train_prior: error: {tmp_path / 'nowhere'}")
    assert "Traceback" not in done.stderr


RANK_SCRIPT = """
import sys, torch
from pathlib import Path
from train_prior.__main__ import run
from train_prior.config import TrainConfig
from reconfusion.files import read_scalars
out = Path(sys.argv[1])
training = run(TrainConfig(data=(Path(sys.argv[2]),), vae=Path(sys.argv[3]), output_dir=out, steps=2, batch_size=1,
                           image_every=0, ema_decay=0.0, cpu=True))
state = {k: v.detach().cpu() for k, v in training.model.state_dict().items()}
torch.save({"world": training.accelerator.num_processes, "state": state, "losses": training.losses},
           out / f"rank{training.accelerator.process_index}.pt")
"""


@pytest.mark.slow
def test_two_process_data_parallel_training_keeps_ranks_identical(training_data, tmp_path):
    script = tmp_path / "rank_script.py"
    script.write_text(RANK_SCRIPT)
    accelerate = Path(sys.executable).with_name("accelerate")
    subprocess.run(
        [str(accelerate), "launch", "--config_file", str(REPO / "train_prior/launch/cpu_2proc.yaml"), str(script),
         str(tmp_path), str(training_data[0]), str(training_data[1])],
        check=True, cwd=REPO, timeout=300,
    )
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert rank0["world"] == rank1["world"] == 2
    assert rank0["losses"] != rank1["losses"]  # each rank saw its own examples...
    for name, value in rank0["state"].items():  # ...and the gradients were averaged
        assert torch.equal(value, rank1["state"][name]), name
