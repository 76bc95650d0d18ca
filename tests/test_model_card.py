"""The bundled prior was never trained on an evaluation scene; priors are compared on the same examples."""

import json
import shutil
from pathlib import Path

import torch

from data_tools.synthetic import generate_scenes
from reconfusion.assets import DEFAULT_PRIOR_PATH
from reconfusion.prior import ReconFusionPrior
from train_prior.evaluation import compare_priors, side_by_side
from train_prior.model_card import MANIFEST

EVALUATION_SCENES = ("fern", "horns", "trex", "lego", "scan24", "scan37", "juicebox")
EVALUATION_FOLDERS = ("nerf_llff_data", "nerf_synthetic", "dtu", "captures")


def test_bundled_prior_never_trained_on_an_evaluation_scene():
    manifest = Path(DEFAULT_PRIOR_PATH) / MANIFEST
    if not manifest.is_file():  # priors exported before manifests existed list their data in the card only
        card = (Path(DEFAULT_PRIOR_PATH) / "README.md").read_text()
        training = card.split("## Training", 1)[1].split("##", 1)[0]
        assert not any(name in training for name in EVALUATION_SCENES + EVALUATION_FOLDERS)
        return
    for row in json.loads(manifest.read_text()):
        text = " ".join(str(value) for value in row.values())
        assert not any(name in text for name in EVALUATION_SCENES), row
        assert not any(f"/{folder}/" in text for folder in EVALUATION_FOLDERS), row


def test_imported_scenes_name_their_source_and_its_licence(tmp_path):
    from data_tools.importers import import_scene
    from reconfusion.scene import load_scene
    from train_prior.model_card import _provenance

    source = tmp_path / "capture"
    generated = generate_scenes(tmp_path / "gen", num_scenes=1, num_views=4, resolution=16, layout="object-360", seed=1)[0]
    shutil.copytree(generated, source)
    (tmp_path / "LICENSE.md").write_text("CC BY-NC-SA 4.0")  # beside the capture's folder, as a dataset ships it
    scene = load_scene(import_scene("nerfstudio", source, tmp_path / "imported" / "capture"))
    origin, licence = _provenance(scene, tmp_path / "imported")
    assert origin == f"nerfstudio import of {source.resolve()}" and licence == str((tmp_path / "LICENSE.md").resolve())


def test_two_priors_are_scored_on_the_same_examples_and_shown_side_by_side(tmp_path):
    generate_scenes(tmp_path / "heldout", num_scenes=1, num_views=6, resolution=32, layout="object-360", seed=9)
    torch.manual_seed(0)
    tiny = ReconFusionPrior.from_preset("tiny").eval()
    qualities, shown = compare_priors({"prior": tiny, "compare": tiny}, (tmp_path / "heldout",), examples=2, batch_size=2)
    assert qualities["prior"] == qualities["compare"]  # the same prior on the same examples and noise
    quality = qualities["prior"]
    assert quality.resolution == 64 and quality.common_resolution == 64 and quality.examples == 2
    assert 0 < quality.sample_psnr < 60 and 0 <= quality.sample_lpips <= 1 and quality.autoencoder_psnr > 0
    assert quality.sample_psnr_common == quality.sample_psnr
    image = side_by_side([shown["compare"], shown["prior"], shown["target"]], tmp_path / "grid.png")
    from PIL import Image

    assert Image.open(image).size == (3 * 64, 2 * 64)


def test_the_licence_a_data_readme_states_for_a_source_reaches_the_manifest(tmp_path):
    from train_prior.model_card import stated_licence

    (tmp_path / "train" / "heads" / "a1").mkdir(parents=True)
    (tmp_path / "train" / "photos" / "cup").mkdir(parents=True)
    (tmp_path / "README.md").write_text(
        "| folder | what | licence (as the source states it) |\n|---|---|---|\n"
        "| `photos/cup` | a cup | CC BY-NC-SA 4.0 |\n| `heads/` (2 scenes) | heads | research only |\n\nprose\n"
    )
    assert stated_licence(tmp_path / "train" / "photos" / "cup").startswith("CC BY-NC-SA 4.0 (as ")
    assert stated_licence(tmp_path / "train" / "heads" / "a1").startswith("research only")
    assert stated_licence(tmp_path / "elsewhere") is None
