"""The pipeline: nerfstudio's VanillaPipeline that hands the observed views to the model's prior.

- For training (``test_mode == "val"``, what ns-train uses) the model's regularisers (unobserved patches),
  prior and sample loss are set up from the training dataset's images and cameras. ns-eval, ns-render and the viewer never load the
  prior: the fitted scene does not need it.
- Evaluation outside training (ns-eval) adds the LPIPS backend used, the scene's image ids that were
  scored and the split size to the metrics, so the eval JSON says which LPIPS it reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple, Type

import torch
from nerfstudio.data.datasets.base_dataset import InputDataset
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from torch import Tensor

from nerfstudio_plugin.model import composed


@dataclass
class ReconFusionPipelineConfig(VanillaPipelineConfig):
    """VanillaPipeline that sets up the model's prior from the training views."""

    _target: Type = field(default_factory=lambda: ReconFusionPipeline)


def observed_views(
    dataset: InputDataset, background: Tuple[float, float, float] = (1.0, 1.0, 1.0)
) -> Tuple[List[Tensor], Tensor, Tensor]:
    """Images (3, H, W) in [0, 1] (RGBA composed on ``background``), OpenGL c2w (N, 4, 4) and intrinsics
    (N, 4) of a nerfstudio dataset."""
    cameras = dataset.cameras
    count = len(dataset)
    c2w = torch.eye(4).repeat(count, 1, 1)
    c2w[:, :3, :] = cameras.camera_to_worlds.reshape(count, 3, 4).float().cpu()
    intrinsics = torch.cat([cameras.fx, cameras.fy, cameras.cx, cameras.cy], dim=-1).reshape(count, 4).float().cpu()
    images = [composed(dataset.get_image_float32(i), background).permute(2, 0, 1).contiguous() for i in range(count)]
    return images, c2w, intrinsics


class ReconFusionPipeline(VanillaPipeline):
    """See the module docstring."""

    config: ReconFusionPipelineConfig

    def __init__(
        self,
        config: ReconFusionPipelineConfig,
        device: str,
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler: Optional[Any] = None,
    ) -> None:
        super().__init__(config, device, test_mode, world_size, local_rank, grad_scaler)
        if test_mode == "val":
            background = self.model.config.display_background or (1.0, 1.0, 1.0)
            images, c2w, intrinsics = observed_views(self.datamanager.train_dataset, background)
            sizes = torch.tensor([image.shape[-2:] for image in images])
            self.model.setup_regularisers(c2w, intrinsics, sizes)
            self.model.setup_prior(images, c2w, intrinsics)

    def get_average_eval_image_metrics(
        self, step: Optional[int] = None, output_path: Optional[Path] = None, get_std: bool = False
    ) -> Dict[str, Any]:
        metrics_dict = super().get_average_eval_image_metrics(step, output_path, get_std)
        if step is None:  # ns-eval: the result file, not a tensorboard scalar dict
            metadata = self.datamanager.eval_dataset.metadata
            metrics_dict["lpips_backend"] = self.model.lpips.backend
            metrics_dict["image_ids"] = list(metadata.get("reconfusion_image_ids", []))
            metrics_dict["num_views"] = metadata.get("reconfusion_num_views")
        return metrics_dict
