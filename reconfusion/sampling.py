"""Diffusion sampling helpers of the prior: the DDIM update with a per-example noise level, the timestep
schedule of a sample started part-way, and random draws that follow a generator across devices.

diffusers' DDIMScheduler steps one shared timestep for the whole batch; the annealed sample loss starts
every example at its own noise level, so the update is written per example here (and checked against
DDIMScheduler.step in tests/test_prior.py).
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor


def ddim_update(
    sample: Float[Tensor, "B C h w"],
    model_output: Float[Tensor, "B C h w"],
    alpha_bar: Float[Tensor, "B"],
    alpha_bar_prev: Float[Tensor, "B"],
    prediction_type: str,
) -> Float[Tensor, "B C h w"]:
    """One deterministic DDIM step (eta = 0) with a per-example noise level, no clipping."""
    a = alpha_bar.to(sample.dtype).view(-1, 1, 1, 1)
    a_prev = alpha_bar_prev.to(sample.dtype).view(-1, 1, 1, 1)
    x0, eps = split_prediction(sample, model_output, a, prediction_type)
    return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps


def split_prediction(sample: Tensor, model_output: Tensor, a: Tensor, prediction_type: str) -> tuple[Tensor, Tensor]:
    """(x0, eps) from a model output at noise level alpha_bar ``a`` (broadcastable to sample)."""
    if prediction_type == "epsilon":
        eps = model_output
        return (sample - (1 - a).sqrt() * eps) / a.sqrt(), eps
    if prediction_type == "v_prediction":
        return a.sqrt() * sample - (1 - a).sqrt() * model_output, a.sqrt() * model_output + (1 - a).sqrt() * sample
    if prediction_type == "sample":
        return model_output, (sample - a.sqrt() * model_output) / (1 - a).sqrt()
    raise ValueError(f"unsupported prediction_type {prediction_type!r}; use epsilon, v_prediction or sample")


def prediction_of(sample: Tensor, clean: Tensor, a: Tensor, prediction_type: str) -> Tensor:
    """The model output that :func:`split_prediction` splits into x0 = ``clean`` at noise level ``a``."""
    if prediction_type == "sample":
        return clean
    if prediction_type == "epsilon":
        return (sample - a.sqrt() * clean) / (1 - a).sqrt()
    if prediction_type == "v_prediction":
        return (a.sqrt() * sample - clean) / (1 - a).sqrt()
    raise ValueError(f"unsupported prediction_type {prediction_type!r}; use epsilon, v_prediction or sample")


def sampling_timesteps(t_start: Float[Tensor, "B"], num_train_timesteps: int, num_steps: int) -> Int[Tensor, "S B"]:
    """The ``num_steps`` timesteps of each example, from t_start * (T - 1) down towards 0 (exclusive)."""
    start = t_start.double() * (num_train_timesteps - 1)
    fractions = 1.0 - torch.arange(num_steps, dtype=torch.float64, device=t_start.device) / num_steps
    return torch.round(fractions[:, None] * start[None]).long()


def generator_on(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """``generator`` itself, or, when it lives on another device, a generator on ``device`` seeded from it."""
    if generator is None or generator.device.type == device.type:
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return torch.Generator(device).manual_seed(seed)


def uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Uniform [0, 1) draws on ``device`` from a generator that may live elsewhere."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)
