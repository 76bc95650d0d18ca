"""Image conditioning of the prior's U-Net: one cross-attention token per observed view.

Two encoders map a batch of observed images ``(B, V, 3, H, W)`` in [0, 1] to tokens ``(B, V, D)``,
``D`` being the U-Net's ``cross_attention_dim``:

- :class:`OpenCLIPImageEncoder`: an open_clip image tower (frozen) followed by a trainable linear
  projection. Pretrained towers load by (model name, pretrained tag) with
  :meth:`OpenCLIPImageEncoder.from_open_clip`; once part of a prior, the tower's weights are saved
  with it, so loading a saved prior needs no download.
- :class:`ConvImageEncoder`: a small convolutional encoder trained from scratch jointly with the
  U-Net; the tiny preset uses it (no pretrained CLIP weights are needed).

:func:`stack_views` and :func:`check_views` validate observed views and cameras for the prior.

Dropped views (classifier-free guidance) are handled by the prior, not here: their images are zeroed
for PixelNeRF and their tokens are replaced by the null token, the zero vector (see
:func:`null_tokens`). A zero token has a zero key and value in every cross-attention layer, so it
contributes nothing but a uniform share of the attention weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from jaxtyping import Bool, Float
from torch import Tensor, nn

logger = logging.getLogger(__name__)

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class PriorCondition:
    """Conditioning of the U-Net for a batch of target views (see ``ReconFusionPrior.condition``)."""

    features: Float[Tensor, "B C h w"]
    """PixelNeRF feature map f at latent resolution."""
    tokens: Float[Tensor, "B V D"]
    """Image tokens, one per observed view."""
    rgb: Float[Tensor, "B 3 h w"]
    """PixelNeRF RGB at latent resolution."""
    null_features: Float[Tensor, "B C h w"] | None = None
    """f with every observed view dropped (zeroed images): guidance's unconditional branch."""
    rendering: Float[Tensor, "B c h w"] | None = None
    """Scaled latent of the rendering being repaired (a repairing prior only; both branches of guidance see it)."""
    warped: Float[Tensor, "B C2 h w"] | None = None
    """The warped observed views' latents and validity (a repairing prior with warped views only)."""
    null_warped: Float[Tensor, "B C2 h w"] | None = None
    """The same showing nothing (the rendering, invalid everywhere): guidance's unconditional branch."""


def null_tokens(tokens: Float[Tensor, "B V D"], dropped: Bool[Tensor, "B"]) -> Float[Tensor, "B V D"]:
    """Tokens with every view of the dropped examples replaced by the null (zero) token."""
    return tokens * (~dropped).to(tokens.dtype)[:, None, None]


def stack_views(images: Tensor | list | tuple) -> Tensor:
    """(B, V, 3, H, W) from a tensor, or from a list of per-view (B, 3, H, W) or (3, H, W) tensors of one size."""
    if isinstance(images, Tensor):
        return images
    if len(images) == 0:
        raise ValueError("no observed views given; pass at least one observed image")
    sizes = [tuple(view.shape) for view in images]
    for i, size in enumerate(sizes):
        if size != sizes[0]:
            raise ValueError(
                f"observed view {i} has shape {size} but view 0 has {sizes[0]}; "
                "resize the observed views to one size (and scale their intrinsics with them)"
            )
    stacked = torch.stack(list(images), dim=0 if len(sizes[0]) == 3 else 1)
    return stacked[None] if len(sizes[0]) == 3 else stacked


def check_views(images: Tensor, c2w: Tensor, intrinsics: Tensor, target_c2w: Tensor, target_intrinsics: Tensor) -> None:
    """Shapes, counts and finiteness of observed views and target cameras; ValueError saying what differs."""
    if images.ndim != 5 or images.shape[2] != 3:
        raise ValueError(f"observed images must have shape (B, V, 3, H, W), got {tuple(images.shape)}")
    batch, views = images.shape[:2]
    expected = {
        "observed_c2w": (c2w, (batch, views, 4, 4)),
        "observed_intrinsics": (intrinsics, (batch, views, 4)),
        "target_c2w": (target_c2w, (batch, 4, 4)),
        "target_intrinsics": (target_intrinsics, (batch, 4)),
    }
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)} but the observed images give B={batch}, V={views} "
                f"(expected {shape}); pass one camera per image"
            )
        bad = ~torch.isfinite(tensor).flatten(tensor.ndim - (2 if name.endswith("c2w") else 1)).all(-1)
        if bad.any():
            where = [tuple(i) for i in torch.nonzero(bad).tolist()][:5]
            raise ValueError(f"{name} has non-finite values (NaN/inf) at index {where}; fix those camera poses")


def _flatten_views(images: Float[Tensor, "B V 3 H W"]) -> Float[Tensor, "N 3 H W"]:
    if images.ndim != 5 or images.shape[2] != 3:
        raise ValueError(f"observed images must have shape (B, V, 3, H, W), got {tuple(images.shape)}")
    return images.flatten(0, 1)


def _open_clip_vision_cfg(model_name: str, overrides: dict | None) -> tuple[int, dict]:
    """(embed_dim, vision_cfg) of a named open_clip architecture, with ``overrides`` merged in."""
    import open_clip

    model_cfg = open_clip.get_model_config(model_name)
    if model_cfg is None:
        known = ", ".join(m for m in open_clip.list_models() if m.startswith("ViT"))
        raise ValueError(f"open_clip knows no model {model_name!r}; choose one of: {known}")
    return int(model_cfg["embed_dim"]), dict(model_cfg["vision_cfg"], **(overrides or {}))


class OpenCLIPImageEncoder(ModelMixin, ConfigMixin):
    """A frozen open_clip image tower and a trainable projection to the U-Net's token width."""

    @register_to_config
    def __init__(
        self,
        model_name: str = "ViT-H-14",
        cross_attention_dim: int = 1024,
        vision_cfg: dict | None = None,
        embed_dim: int | None = None,
        quick_gelu: bool = False,
        image_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN,
        image_std: tuple[float, float, float] = OPENAI_CLIP_STD,
    ):
        """Build the tower of ``model_name`` with random weights (they are loaded afterwards).

        ``vision_cfg`` and ``embed_dim`` override the named architecture (tests build tiny towers
        this way); ``quick_gelu`` must match the weights (OpenAI's CLIP weights use QuickGELU).
        """
        super().__init__()
        from open_clip.model import _build_vision_tower

        named_dim, cfg = _open_clip_vision_cfg(model_name, vision_cfg)
        self.embed_dim = embed_dim or named_dim
        self.image_size = cfg["image_size"]
        self.tower = _build_vision_tower(self.embed_dim, cfg, quick_gelu=quick_gelu)
        self.tower.requires_grad_(False)
        self.tower.eval()
        self.projection = nn.Linear(self.embed_dim, cross_attention_dim)
        self.register_buffer("mean", torch.tensor(image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(image_std).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_open_clip(
        cls, model_name: str, pretrained: str, cross_attention_dim: int, cache_dir: str | None = None, **overrides
    ) -> OpenCLIPImageEncoder:
        """Load a pretrained tower by open_clip (model name, pretrained tag or checkpoint file).

        Downloads through open_clip's normal mechanism (the Hugging Face hub) unless ``pretrained``
        is a local file or the weights are cached. The projection starts at random.
        """
        import open_clip

        clip = open_clip.create_model(model_name, pretrained=pretrained, cache_dir=cache_dir, **overrides)
        quick = any(type(m).__name__ == "QuickGELU" for m in clip.visual.modules())
        preprocess = getattr(clip.visual, "preprocess_cfg", {}) or {}
        encoder = cls(
            model_name=model_name,
            cross_attention_dim=cross_attention_dim,
            vision_cfg=overrides.get("vision_cfg"),
            embed_dim=overrides.get("embed_dim"),
            quick_gelu=quick,
            image_mean=tuple(preprocess.get("mean", OPENAI_CLIP_MEAN)),
            image_std=tuple(preprocess.get("std", OPENAI_CLIP_STD)),
        )
        encoder.tower.load_state_dict(clip.visual.state_dict())
        logger.info("loaded open_clip image tower %s (%s)", model_name, pretrained)
        return encoder

    def train(self, mode: bool = True) -> OpenCLIPImageEncoder:
        """The frozen tower always stays in eval mode (same numerics when training and sampling)."""
        super().train(mode)
        self.tower.eval()
        return self

    def forward(self, images: Float[Tensor, "B V 3 H W"]) -> Float[Tensor, "B V D"]:
        """One token per view: resize to the tower's input size, normalise, embed, project."""
        flat = _flatten_views(images)
        size = self.image_size if isinstance(self.image_size, (tuple, list)) else (self.image_size,) * 2
        if tuple(flat.shape[-2:]) != tuple(size):
            flat = F.interpolate(flat, size=tuple(size), mode="bicubic", align_corners=False, antialias=True)
        flat = (flat - self.mean.to(flat.dtype)) / self.std.to(flat.dtype)
        with torch.no_grad():
            embedding = self.tower(flat.to(self.projection.weight.dtype))
        return self.projection(embedding).unflatten(0, images.shape[:2])


class ConvImageEncoder(ModelMixin, ConfigMixin):
    """A small convolutional image encoder trained from scratch: image -> one token."""

    @register_to_config
    def __init__(
        self,
        cross_attention_dim: int = 64,
        channels: tuple[int, ...] = (32, 64, 128),
        image_size: int = 64,
        norm_groups: int = 8,
    ):
        """Stride-2 conv stages of ``channels`` at ``image_size`` input, mean+max pooling, MLP head."""
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, channels[0], 3, padding=1)]
        for c_in, c_out in zip((channels[0],) + tuple(channels[:-1]), channels):
            layers += [
                nn.GroupNorm(min(norm_groups, c_in), c_in),
                nn.SiLU(),
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1),
            ]
        layers += [nn.GroupNorm(min(norm_groups, channels[-1]), channels[-1]), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Linear(2 * channels[-1], cross_attention_dim),
            nn.SiLU(),
            nn.Linear(cross_attention_dim, cross_attention_dim),
        )

    def forward(self, images: Float[Tensor, "B V 3 H W"]) -> Float[Tensor, "B V D"]:
        """One token per view from the pooled feature map of the image resized to ``image_size``."""
        flat = _flatten_views(images)
        size = self.config.image_size
        if tuple(flat.shape[-2:]) != (size, size):
            flat = F.interpolate(flat, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        fmap = self.body(flat * 2.0 - 1.0)
        pooled = torch.cat([fmap.mean(dim=(2, 3)), fmap.amax(dim=(2, 3))], dim=1)
        return self.head(pooled).unflatten(0, images.shape[:2])


IMAGE_ENCODERS: dict[str, type[ModelMixin]] = {
    "OpenCLIPImageEncoder": OpenCLIPImageEncoder,
    "ConvImageEncoder": ConvImageEncoder,
}
"""The image encoder classes a saved prior may name (its ``image_encoder`` component)."""
