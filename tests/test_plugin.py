"""nerfstudio_plugin: configs, dataparser, offline model construction, the sample loss in nerfacto, and
an end-to-end ns-train + ns-eval run (slow)."""

import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from reconfusion.files import InputError
from reconfusion.prior import ReconFusionPrior
from reconfusion.scene import load_scene

pytest.importorskip("nerfstudio")

from nerfstudio.data.datasets.base_dataset import InputDataset  # noqa: E402
from nerfstudio.data.scene_box import SceneBox  # noqa: E402

from nerfstudio_plugin import methods  # noqa: E402
from nerfstudio_plugin.dataparser import ReconFusionDataParserConfig  # noqa: E402
from nerfstudio_plugin.model import ReconFusionModel, resolve_prior, resolve_scene_settings  # noqa: E402
from nerfstudio_plugin.trainer import decaying_over  # noqa: E402
from nerfstudio_plugin.pipeline import observed_views  # noqa: E402

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    from data_tools.synthetic import generate_scenes

    out = tmp_path_factory.mktemp("scenes")
    return generate_scenes(out, num_scenes=1, num_views=12, resolution=64, layout="object-360", seed=5)[0]


@pytest.fixture(scope="module")
def prior_folder(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("prior") / "tiny"
    ReconFusionPrior.from_preset("tiny").save_pretrained(folder)
    return folder


def config_differences(a, b, path: str = "") -> list[str]:
    if dataclasses.is_dataclass(a) and not isinstance(a, type) and type(a) is type(b):
        return [d for f in dataclasses.fields(a) for d in config_differences(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")]
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys for d in config_differences(a.get(k), b.get(k), f"{path}.{k}")]
    return [] if a == b else [path]


@pytest.mark.parametrize("method, baseline", [("reconfusion", "reconfusion_baseline"), ("reconfusion_cpu", "reconfusion_baseline_cpu")])
def test_baseline_differs_only_in_the_prior(method, baseline):
    ours, theirs = getattr(methods, method).config, getattr(methods, baseline).config
    assert config_differences(ours, theirs) == [".method_name", ".pipeline.model.prior"]
    assert theirs.pipeline.model.prior is None and ours.pipeline.model.prior == "bundled"


def test_cpu_preset_is_light_and_single_process():
    config = methods.reconfusion_cpu.config
    model, datamanager = config.pipeline.model, config.pipeline.datamanager
    assert (model.num_levels, model.log2_hashmap_size, model.num_nerf_samples_per_ray) == (8, 15, 24)
    assert tuple(model.num_proposal_samples_per_ray) == (64, 32)
    assert datamanager.train_num_rays_per_batch == 1024
    assert type(datamanager).__name__ == "VanillaDataManagerConfig"  # no worker processes
    assert config.machine.device_type == "cpu"


def test_checkpoints_with_numpy_scalars_load_weights_only():
    buffer = io.BytesIO()
    torch.save({"lr": [np.float64(0.01)], "step": np.int64(3)}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)  # methods registered the numpy globals at import
    assert loaded["lr"][0] == pytest.approx(0.01) and loaded["step"] == 3


def test_dataparser_uses_the_split_and_normalises_the_cameras(scene):
    split = json.loads((scene / "train_test_split_3.json").read_text())
    parser = ReconFusionDataParserConfig(data=scene).setup()
    train, test = parser.get_dataparser_outputs("train"), parser.get_dataparser_outputs("test")
    assert [p.name for p in train.image_filenames] == [f"frame_{i:05d}.png" for i in split["train_ids"]]
    assert test.metadata["reconfusion_image_ids"] == split["test_ids"]
    assert parser.get_dataparser_outputs("val").metadata["reconfusion_image_ids"] == split["test_ids"]
    centres = train.cameras.camera_to_worlds[:, :, 3]
    assert centres.abs().max().item() == pytest.approx(1.0, abs=1e-5)  # normalised: centres in [-1, 1]^3
    with pytest.raises(InputError, match="train_test_split_4.json"):
        ReconFusionDataParserConfig(data=scene, num_views=4).setup().get_dataparser_outputs("train")


def test_images_nerfstudio_would_misread_are_refused(scene, tmp_path):
    from PIL import Image

    shutil.copytree(scene, tmp_path / "scene")
    first = load_scene(scene).split(3).train_ids[0]
    image = tmp_path / "scene" / "images" / f"frame_{first:05d}.png"
    Image.open(image).convert("P").save(image)  # a palette PNG: nerfstudio would train on its indices
    with pytest.raises(InputError, match=f"{image}: not 8-bit RGB, RGBA or greyscale.*reconfusion data import"):
        ReconFusionDataParserConfig(data=tmp_path / "scene", num_views=3).setup().get_dataparser_outputs("train")


def test_object_scene_settings_reach_the_model(scene):
    parser = ReconFusionDataParserConfig(data=scene).setup()
    outputs = parser.get_dataparser_outputs("train")
    fit = outputs.metadata["reconfusion_fit"]
    assert fit.kind == "object"  # procedural object-360 scenes carry alpha
    assert torch.allclose(outputs.scene_box.aabb, torch.tensor(fit.aabb, dtype=torch.float32))
    assert outputs.scene_box.aabb.abs().max() < 1.0  # the object's box, not the unit cube around the cameras
    config = resolve_scene_settings(methods.cpu_config("test", None).pipeline.model, fit)
    assert (config.scene_kind, config.disable_scene_contraction, config.proposal_initial_sampler) == ("object", True, "uniform")
    assert (config.near_plane, config.far_plane, config.background_color) == (fit.near, fit.far, "random")
    assert config.use_appearance_embedding is False and config.reconstruction_loss == "charbonnier"
    chosen = replace(methods.cpu_config("test", None).pipeline.model, near_plane=0.2, background_color="white")
    overridden = resolve_scene_settings(chosen, fit)  # what the command line sets wins
    assert (overridden.near_plane, overridden.background_color, overridden.far_plane) == (0.2, "white", fit.far)


def test_learning_rates_decay_over_the_run():
    from nerfstudio_plugin.trainer import decay_steps

    config = methods.cpu_config("test", None)
    assert decay_steps(replace(config, max_num_iterations=600)) == 4000  # nerfacto: 200k decay steps for 30k
    assert decay_steps(replace(config, max_num_iterations=600, lr_decay_steps=900)) == 900
    optimizers = decaying_over(config.optimizers, 600)
    assert optimizers["fields"]["scheduler"].max_steps == 600 and optimizers["proposal_networks"]["scheduler"].max_steps == 600
    assert optimizers["fields"]["optimizer"].lr == 1e-2


def test_masked_metrics_and_display_background(prior_folder):
    model = _cpu_model(prior_folder)
    model.config = replace(model.config, background_color="random", display_background=(1.0, 1.0, 1.0))
    model.eval()
    image = torch.zeros(64, 64, 4)
    image[16:48, 16:48] = torch.tensor([0.2, 0.4, 0.6, 1.0])  # an opaque square on transparent pixels
    pred = image[..., :3] * image[..., 3:] + (1.0 - image[..., 3:])  # the same square rendered on white
    ones = torch.ones(64, 64, 1)
    outputs = {"rgb": pred, "accumulation": image[..., 3:], "depth": ones, "prop_depth_0": ones, "prop_depth_1": ones}
    scores, _ = model.get_image_metrics_and_images(outputs, {"image": image})
    assert scores["psnr"] > 60 and scores["psnr_masked"] > 60  # ground truth composed on the same white
    outputs["rgb"] = pred.clone()
    outputs["rgb"][0, 0] = 0.0  # an error outside the object counts unmasked only
    scores, _ = model.get_image_metrics_and_images(outputs, {"image": image})
    assert scores["psnr"] < 40 and scores["psnr_masked"] > 60


def test_dataparser_without_split_files_trains_on_everything(scene, tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "images").symlink_to(scene / "images")
    (bare / "transforms.json").write_text((scene / "transforms.json").read_text())
    outputs = ReconFusionDataParserConfig(data=bare).setup().get_dataparser_outputs("train")
    assert len(outputs.image_filenames) == 12
    assert "no train_test_split" in capsys.readouterr().out


def test_resolve_prior(prior_folder, tmp_path, monkeypatch):
    import reconfusion.assets

    assert resolve_prior(str(prior_folder)) == str(prior_folder)
    assert resolve_prior("some-org/some-prior") == "some-org/some-prior"  # a hub id is passed on
    with pytest.raises(InputError, match="--pipeline.model.prior"):
        resolve_prior(str(tmp_path / "missing"))
    monkeypatch.setattr(reconfusion.assets, "DEFAULT_PRIOR_PATH", tmp_path / "not_installed")
    with pytest.raises(InputError, match="bundled prior"):
        resolve_prior("bundled")


def _cpu_model(prior_folder, num_train_data=3, mode="annealed-multistep") -> ReconFusionModel:
    config = methods.cpu_config("test", str(prior_folder)).pipeline.model
    config.sample_loss = replace(config.sample_loss, num_steps=2, views_per_refresh=1, mode=mode)
    return config.setup(scene_box=SceneBox(torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=num_train_data, metadata={})


def test_model_builds_offline_and_keeps_lpips_out_of_checkpoints(prior_folder, monkeypatch):
    import torchmetrics.image.lpip as lpip_module

    def no_download(*args, **kwargs):
        raise AssertionError("model construction tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    stock = lpip_module.LearnedPerceptualImagePatchSimilarity
    model = _cpu_model(prior_folder)
    assert lpip_module.LearnedPerceptualImagePatchSimilarity is stock  # the patch is undone
    assert not [k for k in model.state_dict() if "lpips" in k or "prior" in k]
    assert model.lpips.backend == "not loaded"


def test_charbonnier_reconstruction_loss(prior_folder):
    model = _cpu_model(prior_folder)
    model.config.reconstruction_loss = "charbonnier"
    model.eval()  # only the photometric term: no proposal losses
    pred, gt = torch.full((16, 3), 0.5), torch.full((16, 3), 0.5)
    gt[:, 0] = 0.2
    losses = model.get_loss_dict({"rgb": pred, "accumulation": torch.ones(16, 1)}, {"image": gt}, {})
    eps = model.config.charbonnier_epsilon
    expected = (np.sqrt(0.3**2 + eps**2) + 2 * eps) / 3
    assert losses["rgb_loss"].item() == pytest.approx(expected, rel=1e-5)


def test_a_repairing_prior_adapts_to_the_scene_before_the_fit_bounds_the_noise_and_repairs_from_warped_views(
    scene, prior_folder, tmp_path, caplog
):
    from reconfusion.adaptation import AdaptationConfig
    from reconfusion.presets import PriorConfig, TinyPreset

    torch.manual_seed(0)
    preset = TinyPreset(prior=PriorConfig(repairs=True, max_noise=0.7, warped_views=2))
    ReconFusionPrior.from_preset("tiny", preset=preset).save_pretrained(tmp_path / "repair")
    dataset = InputDataset(ReconFusionDataParserConfig(data=scene).setup().get_dataparser_outputs("train"))
    model = _cpu_model(tmp_path / "repair", len(dataset))
    model.config.prior_adaptation = AdaptationConfig(steps=1)
    with caplog.at_level("INFO", logger="reconfusion"):
        model.setup_prior(*observed_views(dataset), total_steps=100)
    assert "prior adapted to the scene: 1 steps" in caplog.text
    assert model.guidance.noise_range(0)[1] == 0.7 and model.guidance.config.guidance_scale == 1.0
    assert not any(p.requires_grad for p in model.guidance.prior.parameters())
    views = model.guidance.sample_views(1, step=0)
    with torch.no_grad():
        _, depth = model.guidance._render(views, model.render_views)
    assert model.guidance.warped_views(views, depth)["warped_valid"].shape == (1, 2, 1, 64, 64)  # the NeRF's depth
    model.train()
    losses = model.guidance.loss(0, model.render_views)
    assert all(torch.isfinite(v) for v in losses.values())
    plain = _cpu_model(prior_folder, len(dataset))
    plain.config.prior_adaptation = AdaptationConfig(steps=1)
    with pytest.raises(InputError, match="cannot adapt to the scene"):
        plain.setup_prior(*observed_views(dataset), total_steps=100)


@pytest.mark.parametrize("mode", ["annealed-multistep", "multistep", "sds"])
def test_sample_loss_gradient_reaches_the_field(scene, prior_folder, mode):
    parser = ReconFusionDataParserConfig(data=scene).setup()
    dataset = InputDataset(parser.get_dataparser_outputs("train"))
    model = _cpu_model(prior_folder, len(dataset), mode)
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    model.setup_prior(*observed_views(dataset), total_steps=100)
    assert torch.equal(torch.rand(3), expected)  # loading the prior and LPIPS leaves the random stream alone
    assert model.guidance is not None and model.guidance.layout == "object-360"
    assert not [k for k in model.state_dict() if "prior" in k or "unet" in k]
    model.train()
    losses = model.guidance.loss(0, model.render_views)
    sum(losses.values()).backward()  # sample_loss, or sds_loss in the sds mode
    grads = [p.grad for p in model.field.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    assert model.sample_loss() and torch.equal(torch.rand(3), expected)  # the baseline's random stream, untouched


@pytest.mark.slow
def test_ns_train_then_ns_eval_and_ns_render(scene, prior_folder, tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    train = subprocess.run(
        [str(BIN / "ns-train"), "reconfusion-cpu", "--data", str(scene), "--output-dir", str(tmp_path / "runs"),
         "--max-num-iterations", "30", "--timestamp", "e2e", "--vis", "tensorboard",
         "--logging.local-writer.enable", "False", "--pipeline.model.prior", str(prior_folder)],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    assert "Sample loss: annealed-multistep" in train.stdout
    assert "Fit settings: scene kind object (images carry alpha)" in train.stdout
    written = (tmp_path / "runs" / scene.name / "reconfusion-cpu" / "e2e" / "config.yml").read_text()
    assert "scene_kind: object" in written and "lr_decay_steps: 200" in written  # 30 steps in nerfacto's proportion
    config = tmp_path / "runs" / scene.name / "reconfusion-cpu" / "e2e" / "config.yml"
    result = tmp_path / "eval.json"
    evaluate = subprocess.run(
        [str(BIN / "ns-eval"), "--load-config", str(config), "--output-path", str(result)],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert evaluate.returncode == 0, evaluate.stdout[-3000:] + evaluate.stderr[-3000:]
    metrics = json.loads(result.read_text())["results"]
    split = json.loads((scene / "train_test_split_3.json").read_text())
    assert metrics["image_ids"] == split["test_ids"] and metrics["num_views"] == 3
    assert metrics["lpips_backend"] in ("lpips-alex", "stlpips-alex-shift-tolerant")
    for key in ("psnr", "ssim", "lpips"):
        assert np.isfinite(metrics[key]), key
    assert 5.0 < metrics["psnr"] < 60.0 and 0.0 < metrics["ssim"] <= 1.0
    frames = tmp_path / "render"
    render = subprocess.run(
        [str(BIN / "ns-render"), "interpolate", "--load-config", str(config), "--output-path", str(frames),
         "--output-format", "images", "--interpolation-steps", "2", "--frame-rate", "4"],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert render.returncode == 0, render.stdout[-3000:] + render.stderr[-3000:]
    assert len(list(frames.iterdir())) >= 2
    checkpoint = next((config.parent / "nerfstudio_models").glob("*.ckpt"))
    state = torch.load(checkpoint, map_location="cpu")["pipeline"]
    assert not [k for k in state if "lpips" in k or "prior" in k]
