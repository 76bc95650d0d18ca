"""The prior's presets and component builders.

- ``tiny``: 64x64 images, a from-scratch AutoencoderKL with 4x downsampling (16x16x4 latents), a
  U-Net of a few million parameters, a learned :class:`~reconfusion.conditioning.ConvImageEncoder`
  and a 16-channel PixelNeRF. Every component starts at random; train_prior trains the VAE in a stage
  of its own (:func:`build_tiny_vae`), then the prior. Trainable on a CPU.
- ``sd``: a Stable Diffusion 1.x/2.x folder or hub id (``vae/``, ``unet/``, ``scheduler/``), an
  open_clip image tower (ViT-H-14 for SD 2.x, whose cross-attention width is 1024; ViT-L-14 for SD
  1.x, 768) and a PixelNeRF with the paper's 128 feature channels. The U-Net's ``conv_in`` is
  widened for the feature channels with zero weights (:func:`widen_conv_in`), so at step 0 the U-Net
  computes exactly what the base model computes. GPU.

Noise schedules: the tiny preset uses a cosine schedule with v-prediction (stable DDIM steps from
pure noise in few steps); the ``sd`` preset keeps the base model's schedule and prediction type.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

from reconfusion.conditioning import IMAGE_ENCODERS, ConvImageEncoder, OpenCLIPImageEncoder
from reconfusion.files import InputError, atomic_directory, read_json, write_json
from reconfusion.pixelnerf import DEFAULT_FAR, DEFAULT_NEAR, PixelNeRF
from reconfusion.taef2 import TAEF2


@dataclass(frozen=True)
class PriorConfig:
    """The prior's own settings (its components carry their own configs)."""

    preset: str = "custom"
    """Name of the preset the prior was built from: "tiny", "sd" or "custom"."""
    resolution: int = 64
    """Side of the square images the prior generates (target images and init images)."""
    near: float = DEFAULT_NEAR
    """Default near depth of PixelNeRF rays, for cameras normalised as in the paper."""
    far: float = DEFAULT_FAR
    """Default far depth of PixelNeRF rays."""
    pixelnerf_loss_weight: float = 1.0
    """lambda in L = L_diff + lambda * L_PixelNeRF."""
    condition_dropout: float = 0.1
    """Probability that an example's observed views are dropped in training (classifier-free guidance)."""
    base_model: str | None = None
    """The Stable Diffusion folder or hub id the U-Net and VAE came from (None: trained from scratch)."""
    repairs: bool = False
    """A repairing prior: the U-Net also takes the latent of the rendering being repaired (concatenated) and
    predicts the photograph's latent as the rendering's plus a residual; it is trained on renderings noised to t,
    as the sample loss noises them, rather than on noised photographs."""
    max_noise: float = 1.0
    """Training timesteps are drawn from the first ``max_noise`` of the schedule (the range the sample loss uses)."""
    min_snr_gamma: float = 0.0
    """Min-SNR-gamma loss weighting (Hang et al. 2023): min(SNR, gamma) / gamma on the photograph's latent, the
    v-prediction form min(SNR, gamma) / (SNR + 1) written for x0 (up to the constant gamma); 0: unweighted."""
    pixel_loss_weight: float = 0.0
    """A repairing prior: weight of the MSE, in pixels in [0, 1], between its decoded prediction and the photograph
    (min-SNR weighted as the latent term). The latent MSE alone is minimised by the mean latent, which decodes to
    the autoencoder's 8-px grid where the repair is uncertain; the pixel mean is what PSNR rewards. 0: off."""
    lpips_loss_weight: float = 0.0
    """A repairing prior: weight of LPIPS (:func:`reconfusion.metrics.load_lpips`) between its decoded prediction and
    the photograph, min-SNR weighted: the pixel mean alone is blurred where the repair is uncertain. 0: off (the
    repair preset's: weight 1 bought LPIPS with PSNR on the evaluation scenes, docs/repair_prior/pixel_loss.md)."""
    warped_views: int = 0
    """A repairing prior: how many observed views (nearest first), warped into the target with the rendering's depth
    (:mod:`reconfusion.warping`), it also takes: each view's latent and its validity at latent resolution."""

    def input_channels(self, latent_channels: int, feature_channels: int) -> int:
        """The U-Net's input channels: noisy latent, PixelNeRF features, and a repairing prior's rendering latent
        and warped views (latent + validity each)."""
        repairing = latent_channels + self.warped_views * (latent_channels + 1) if self.repairs else 0
        return latent_channels + feature_channels + repairing


@dataclass(frozen=True)
class TinyPreset:
    """The CPU-sized prior: 64x64 images, 16x16x4 latents."""

    resolution: int = 64
    """Image side."""
    vae_channels: tuple[int, ...] = (32, 64, 64)
    """AutoencoderKL block widths; len - 1 stride-2 stages (4x downsampling for three blocks)."""
    latent_channels: int = 4
    """Channels of the VAE latent."""
    unet_channels: tuple[int, ...] = (32, 64, 128)
    """U-Net block widths (the first two blocks have cross-attention)."""
    unet_layers_per_block: int = 1
    """ResNet layers per U-Net block."""
    cross_attention_dim: int = 64
    """Width of the image tokens."""
    attention_heads: int = 4
    """Attention heads in the U-Net's transformer blocks."""
    feature_channels: int = 16
    """PixelNeRF feature channels concatenated with the latent."""
    pixelnerf_samples: int = 32
    """PixelNeRF samples per ray."""
    pixelnerf_hidden: int = 64
    """Width of PixelNeRF's MLPs."""
    pixelnerf_encoder_channels: tuple[int, ...] = (32, 64)
    """Widths of PixelNeRF's conv encoder stages."""
    image_encoder_channels: tuple[int, ...] = (32, 64, 128)
    """Widths of the learned image encoder's stride-2 stages."""
    prior: PriorConfig = field(default_factory=lambda: PriorConfig(preset="tiny"))
    """Settings of the prior itself (its resolution is overridden by ``resolution``)."""


@dataclass(frozen=True)
class StableDiffusionPreset:
    """The GPU prior started from a Stable Diffusion checkpoint."""

    base: str = "stabilityai/stable-diffusion-2-1-base"
    """A Stable Diffusion folder or hub id with vae/, unet/ and scheduler/ subfolders."""
    clip_model: str = "ViT-H-14"
    """open_clip image tower: ViT-H-14 (1024-wide, matches SD 2.x) or ViT-L-14 (768, SD 1.x)."""
    clip_pretrained: str = "laion2b_s32b_b79k"
    """open_clip pretrained tag (or a checkpoint file) of the tower."""
    feature_channels: int = 128
    """PixelNeRF feature channels (the paper's 128)."""
    pixelnerf_samples: int = 64
    """PixelNeRF samples per ray."""
    resolution: int | None = None
    """Image side; None: the U-Net's sample size times the VAE's downsampling factor."""
    prior: PriorConfig = field(default_factory=lambda: PriorConfig(preset="sd"))
    """Settings of the prior itself (resolution and base_model are filled in)."""


def vae_downsampling(vae: AutoencoderKL) -> int:
    """Spatial factor between images and latents of an AutoencoderKL."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def build_tiny_vae(preset: TinyPreset = TinyPreset()) -> AutoencoderKL:
    """The tiny preset's autoencoder at random (trained by train_prior's VAE stage).

    Its ``scaling_factor`` is 1; the VAE stage should build the final VAE with the measured
    ``1 / std`` of its latents, as Stable Diffusion's 0.18215 was chosen.
    """
    blocks = len(preset.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=tuple(preset.vae_channels),
        layers_per_block=1,
        latent_channels=preset.latent_channels,
        norm_num_groups=min(32, min(preset.vae_channels)),
        sample_size=preset.resolution,
        scaling_factor=1.0,
    )


def build_tiny_unet(preset: TinyPreset, latent_size: int) -> UNet2DConditionModel:
    """The tiny preset's U-Net: cross-attention in every block but the deepest (lowest resolution)."""
    blocks = len(preset.unet_channels)
    down = ("CrossAttnDownBlock2D",) * (blocks - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (blocks - 1)
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=preset.prior.input_channels(preset.latent_channels, preset.feature_channels),
        out_channels=preset.latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(preset.unet_channels),
        layers_per_block=preset.unet_layers_per_block,
        cross_attention_dim=preset.cross_attention_dim,
        attention_head_dim=preset.attention_heads,  # diffusers' legacy name for the number of heads
        norm_num_groups=min(32, min(preset.unet_channels)),
    )


def tiny_scheduler() -> DDPMScheduler:
    """Cosine schedule, v-prediction, no clipping (latents are not in [-1, 1])."""
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        clip_sample=False,
    )


SMALL_PRESET = TinyPreset(
    resolution=128, latent_channels=32, unet_channels=(64, 128, 128), cross_attention_dim=128,
    image_encoder_channels=(32, 64, 128, 128), prior=PriorConfig(preset="small"),
)  # fmt: skip
"""The ``small`` preset: 128x128 images on the bundled pretrained TAEF2 autoencoder (16x16x32 latents)."""
REPAIR_PRESET = replace(SMALL_PRESET, prior=PriorConfig(preset="repair", repairs=True, max_noise=0.7, min_snr_gamma=5.0,
                                                        warped_views=3, pixel_loss_weight=20.0))
"""The ``repair`` preset: the small architecture repairing renderings (see ``PriorConfig.repairs``) given the three
nearest observed views warped into the target, trained at t <= 0.7 (the annealed sample loss's range) with min-SNR-5
weighting, on its latent and on its decoded pixels."""


def build_small_components(preset: TinyPreset = SMALL_PRESET) -> dict:
    """The small prior: the tiny architecture at 128 px around the bundled TAEF2 (frozen, pretrained)."""
    from reconfusion.assets import TAEF2_PATH

    return build_tiny_components(preset, vae=load_component(TAEF2, Path(TAEF2_PATH), "vae"))


def build_tiny_components(preset: TinyPreset = TinyPreset(), vae: AutoencoderKL | None = None) -> dict:
    """All components of the tiny prior at random (``vae``: a trained one to use instead)."""
    vae = vae or build_tiny_vae(preset)
    if vae.config.latent_channels != preset.latent_channels:
        raise ValueError(f"the autoencoder has {vae.config.latent_channels} latent channels, the preset {preset.latent_channels}")
    latent_size = preset.resolution // vae_downsampling(vae)
    unet = build_tiny_unet(preset, latent_size)
    if preset.prior.repairs:  # the residual starts at zero: an untrained repairing prior returns the rendering
        torch.nn.init.zeros_(unet.conv_out.weight)
        torch.nn.init.zeros_(unet.conv_out.bias)
    return {
        "pixelnerf": PixelNeRF(
            feature_channels=preset.feature_channels,
            encoder_channels=tuple(preset.pixelnerf_encoder_channels),
            num_samples=preset.pixelnerf_samples,
            hidden=preset.pixelnerf_hidden,
        ),
        "image_encoder": ConvImageEncoder(
            cross_attention_dim=preset.cross_attention_dim,
            channels=tuple(preset.image_encoder_channels),
            image_size=preset.resolution,
        ),
        "unet": unet,
        "vae": vae,
        "scheduler": tiny_scheduler(),
    }


def widen_conv_in(unet: UNet2DConditionModel, extra_channels: int) -> UNet2DConditionModel:
    """A copy of ``unet`` whose first convolution takes ``extra_channels`` more input channels.

    The old weights are copied and the new ones are zero, so the widened U-Net's output does not
    depend on the extra channels until training changes them.
    """
    config = dict(unet.config)
    config["in_channels"] = unet.config.in_channels + extra_channels
    with torch.device("meta"):
        wide = UNet2DConditionModel.from_config(config)
    state = unet.state_dict()
    old = state["conv_in.weight"]
    new = old.new_zeros(old.shape[0], old.shape[1] + extra_channels, *old.shape[2:])
    new[:, : old.shape[1]] = old
    state["conv_in.weight"] = new
    wide.load_state_dict(state, assign=True)
    meta = [name for name, t in [*wide.named_parameters(), *wide.named_buffers()] if t.is_meta]
    if meta:
        raise RuntimeError(f"widen_conv_in left tensors uninitialised: {meta[:5]}")
    return wide  # on the base U-Net's device, in its dtype: the tensors are its own


def load_stable_diffusion_components(
    preset: StableDiffusionPreset,
    image_encoder: torch.nn.Module | None = None,
    pixelnerf: PixelNeRF | None = None,
    torch_dtype: torch.dtype | None = None,
) -> tuple[dict, int]:
    """Components of the ``sd`` prior from ``preset.base``; returns (components, resolution).

    ``image_encoder`` / ``pixelnerf`` replace the preset's (tests pass tiny ones; the open_clip
    tower is otherwise loaded by name and tag, which needs the hub or a local checkpoint).
    """
    kwargs = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
    vae = AutoencoderKL.from_pretrained(preset.base, subfolder="vae", **kwargs)
    base_unet = UNet2DConditionModel.from_pretrained(preset.base, subfolder="unet", **kwargs)
    scheduler = DDPMScheduler.from_pretrained(preset.base, subfolder="scheduler")
    pixelnerf = pixelnerf or PixelNeRF(
        feature_channels=preset.feature_channels, num_samples=preset.pixelnerf_samples
    )
    unet = widen_conv_in(base_unet, pixelnerf.config.feature_channels)
    cross_dim = unet.config.cross_attention_dim
    image_encoder = image_encoder or OpenCLIPImageEncoder.from_open_clip(
        preset.clip_model, preset.clip_pretrained, cross_attention_dim=cross_dim
    )
    resolution = preset.resolution or int(unet.config.sample_size) * vae_downsampling(vae)
    components = {"pixelnerf": pixelnerf, "image_encoder": image_encoder, "unet": unet, "vae": vae}
    return dict(components, scheduler=scheduler), resolution


# --------------------------------------------------------------------------- the prior's folder

PRIOR_FILE = "reconfusion_prior.json"
"""The top-level file of a saved prior: its PriorConfig and the class of each component."""
PRIOR_FORMAT = "reconfusion-prior/1"
COMPONENT_CLASSES: dict[str, dict[str, type]] = {
    "pixelnerf": {"PixelNeRF": PixelNeRF},
    "image_encoder": dict(IMAGE_ENCODERS),
    "unet": {"UNet2DConditionModel": UNet2DConditionModel},
    "vae": {"AutoencoderKL": AutoencoderKL, "TAEF2": TAEF2},
    "scheduler": {"DDPMScheduler": DDPMScheduler},
}
"""Which classes each registered component may be (no import by name)."""
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def check_components(pixelnerf, image_encoder, unet, vae, scheduler, config: PriorConfig) -> list[str]:
    """What does not fit together, one phrase per problem (empty when the prior is consistent)."""
    problems = []
    latent, features = vae.config.latent_channels, pixelnerf.config.feature_channels
    expected = config.input_channels(latent, features)
    if unet.config.in_channels != expected:
        repairing = f" + the rendering's latent and {config.warped_views} warped views" if config.repairs else ""
        problems.append(f"unet in_channels={unet.config.in_channels} but vae latent_channels={latent} + "
                        f"pixelnerf feature_channels={features}{repairing} = {expected}")
    if config.warped_views < 0 or (config.warped_views and not config.repairs):
        problems.append(f"warped_views={config.warped_views}: only a repairing prior takes warped views (>= 0)")
    if unet.config.out_channels != latent:
        problems.append(f"unet out_channels={unet.config.out_channels} but vae latent_channels={latent}")
    unet_dims = unet.config.cross_attention_dim
    unet_dims = set(unet_dims) if isinstance(unet_dims, (list, tuple)) else {unet_dims}
    token_dim = image_encoder.config.cross_attention_dim
    if unet_dims != {token_dim}:
        problems.append(
            f"unet cross_attention_dim={sorted(unet_dims)} but image_encoder cross_attention_dim={token_dim}"
        )
    factor = vae_downsampling(vae)
    if config.resolution <= 0 or config.resolution % factor:
        problems.append(f"resolution={config.resolution} is not a positive multiple of the vae's downsampling {factor}")
    if scheduler.config.prediction_type not in PREDICTION_TYPES:
        problems.append(f"scheduler prediction_type={scheduler.config.prediction_type!r} not in {PREDICTION_TYPES}")
    if not 0.0 <= config.condition_dropout <= 1.0:
        problems.append(f"condition_dropout={config.condition_dropout} is not a probability")
    if not 0.0 < config.max_noise <= 1.0 or config.min_snr_gamma < 0.0:
        problems.append(f"max_noise={config.max_noise} must be in (0, 1] and min_snr_gamma={config.min_snr_gamma} >= 0")
    if not 0.0 <= config.near < config.far:
        problems.append(f"near={config.near}, far={config.far}: need 0 <= near < far")
    for name, module in (("pixelnerf", pixelnerf), ("image_encoder", image_encoder), ("unet", unet), ("vae", vae),
                         ("scheduler", scheduler)):  # fmt: skip
        if type(module).__name__ not in COMPONENT_CLASSES[name]:
            problems.append(f"{name} is a {type(module).__name__}, expected one of {sorted(COMPONENT_CLASSES[name])}")
    return problems


def save_prior_folder(components: dict, config: PriorConfig, out: Path, overwrite: bool) -> None:
    """Write every component with its save_pretrained into ``out/<name>/``, atomically."""
    with atomic_directory(out, overwrite=overwrite) as tmp:
        for name, component in components.items():
            component.save_pretrained(tmp / name)
        write_json(
            tmp / PRIOR_FILE,
            {
                "format": PRIOR_FORMAT,
                "config": asdict(config),
                "components": {name: type(c).__name__ for name, c in components.items()},
            },
        )


def _resolve_folder(name: str | Path) -> Path:
    """A local folder, or a hub id fetched with huggingface_hub."""
    path = Path(name)
    if path.is_dir():
        return path
    if path.exists() or str(name).count("/") != 1:
        raise InputError(f"{path}: not a folder; pass the folder written by ReconFusionPrior.save_pretrained")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(name)))
    except Exception as err:  # noqa: BLE001 - any hub failure becomes one clear message
        raise InputError(
            f"{name}: no such local folder, and fetching it from the Hugging Face hub failed ({err}); "
            "pass the folder of a saved prior"
        ) from err


def _read_prior_file(folder: Path) -> tuple[PriorConfig, dict]:
    file = folder / PRIOR_FILE
    if not file.is_file():
        hint = (
            " It looks like a Stable Diffusion folder: start a prior from it with "
            "ReconFusionPrior.from_stable_diffusion(folder)."
            if (folder / "unet").is_dir() and (folder / "vae").is_dir()
            else " Save a prior with ReconFusionPrior.save_pretrained."
        )
        raise InputError(f"{file}: missing, so {folder} is not a saved ReconFusion prior.{hint}")
    meta = read_json(file)
    if not isinstance(meta, dict) or meta.get("format") != PRIOR_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise InputError(f"{file}: format {found!r}, expected {PRIOR_FORMAT!r}; re-export the prior with this version")
    known = set(PriorConfig.__dataclass_fields__)
    unknown = sorted(set(meta.get("config", {})) - known)
    if unknown:
        raise InputError(f"{file}: unknown settings {unknown} (written by a newer reconfusion?); update reconfusion")
    return PriorConfig(**meta.get("config", {})), dict(meta.get("components", {}))


def load_component(cls: type, folder: Path, name: str, **kwargs):
    """``cls.from_pretrained(folder)`` with failures reported as InputError naming the folder."""
    if not folder.is_dir():
        raise InputError(f"{folder}: the {name} folder is missing; pass a folder written by save_pretrained")
    try:
        return cls.from_pretrained(folder, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise InputError(f"{folder}: cannot load the {name} ({err}); the folder is incomplete "
                         "or its weights do not match its config.json") from err  # fmt: skip


def load_prior_folder(name: str | Path, torch_dtype: torch.dtype | None = None) -> tuple[dict, PriorConfig]:
    """(components, config) of a saved prior, with errors that name the folder and what differs."""
    folder = _resolve_folder(name)
    config, classes = _read_prior_file(folder)
    components = {}
    for component, allowed in COMPONENT_CLASSES.items():
        class_name = classes.get(component)
        if class_name not in allowed:
            raise InputError(
                f"{folder / PRIOR_FILE}: component {component!r} is {class_name!r}, expected one of {sorted(allowed)}"
            )
        kwargs = {"torch_dtype": torch_dtype} if torch_dtype is not None and component != "scheduler" else {}
        components[component] = load_component(allowed[class_name], folder / component, component, **kwargs)
    problems = check_components(**components, config=config)
    if problems:
        raise InputError(
            f"{folder}: its components come from different configurations: " + "; ".join(problems)
            + ". Re-export the whole prior with save_pretrained"
        )
    return components, config
