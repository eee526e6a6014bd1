"""Gaussian diffusion: noise schedules, forward noising q(x_t | x_0) and the ε-prediction loss.

Notation follows Ho et al. (2020): ``betas`` β_t, ``alphas_cumprod`` ᾱ_t = ∏_{s≤t} (1 − β_s), timesteps
t = 0 … T−1 (t = 0 is the first noising step). Schedules:

- ``linear``: β_t linear from ``beta_start`` to ``beta_end`` (Ho et al. 2020).
- ``cosine``: ᾱ(t) = f(t)/f(0), f(t) = cos²(((t/T) + s)/(1 + s) · π/2), s = 0.008, β clipped at 0.999
  (Nichol & Dhariwal 2021).
- ``sigmoid``: ᾱ(t) from a shifted sigmoid between ``start`` and ``end`` with temperature ``tau``, β clipped
  at 0.999 (Jabri et al. 2022, as used by the reference's Study B).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F


def cosine_alphas_cumprod(t: torch.Tensor, s: float = 0.008) -> torch.Tensor:
    """ᾱ(t) of the cosine schedule for continuous t ∈ [0, 1] (before β clipping)."""
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return f / math.cos(s / (1 + s) * math.pi / 2) ** 2


def sigmoid_alphas_cumprod(t: torch.Tensor, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> torch.Tensor:
    """ᾱ(t) of the sigmoid schedule for continuous t ∈ [0, 1] (before β clipping)."""
    v_start = torch.sigmoid(torch.tensor(start / tau, dtype=torch.float64))
    v_end = torch.sigmoid(torch.tensor(end / tau, dtype=torch.float64))
    return (v_end - torch.sigmoid((t * (end - start) + start) / tau)) / (v_end - v_start)


def betas_from_alphas_cumprod(alphas_cumprod_fn, T: int, max_beta: float = 0.999) -> torch.Tensor:
    """β_t = 1 − ᾱ((t+1)/T) / ᾱ(t/T), clipped at ``max_beta``."""
    t = torch.arange(T + 1, dtype=torch.float64) / T
    a = alphas_cumprod_fn(t)
    return (1 - a[1:] / a[:-1]).clamp(0.0, max_beta)


def make_betas(schedule: str, T: int, **params: float) -> torch.Tensor:
    """β_1..β_T (float64) for a named schedule. ``params`` are the schedule's (config schema ``$defs/diffusion``,
    where their defaults live): ``beta_start``/``beta_end`` (linear), ``s`` (cosine), ``start``/``end``/``tau``
    (sigmoid)."""
    needs = {"linear": ("beta_start", "beta_end"), "cosine": ("s",), "sigmoid": ("start", "end", "tau")}
    if schedule not in needs:
        raise ValueError(f"unknown noise schedule {schedule!r}; use 'linear', 'cosine' or 'sigmoid'")
    missing = [k for k in needs[schedule] if k not in params]
    if missing:
        raise ValueError(f"the {schedule} schedule needs {', '.join(missing)} (diffusion spec keys)")
    if schedule == "linear":
        return torch.linspace(params["beta_start"], params["beta_end"], T, dtype=torch.float64)
    if schedule == "cosine":
        return betas_from_alphas_cumprod(lambda t: cosine_alphas_cumprod(t, params["s"]), T)
    return betas_from_alphas_cumprod(
        lambda t: sigmoid_alphas_cumprod(t, params["start"], params["end"], params["tau"]), T
    )


class GaussianDiffusion:
    """The forward process and the training objective for one schedule (tables kept in float64)."""

    def __init__(self, betas: torch.Tensor) -> None:
        self.betas = betas.double()
        self.num_timesteps = len(betas)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> GaussianDiffusion:
        opts = {k: v for k, v in spec.items() if k not in ("schedule", "timesteps")}
        return cls(make_betas(spec["schedule"], int(spec["timesteps"]), **opts))

    def _gather(self, table: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
        return table.to(t.device)[t].float().reshape(-1, *([1] * (ndim - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε."""
        a = self._gather(self.alphas_cumprod, t, x0.ndim)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def training_loss(
        self,
        model: torch.nn.Module,
        x0: torch.Tensor,
        y: torch.Tensor | None,
        generator: torch.Generator | None = None,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """ε-prediction MSE with t ~ U{0, …, T−1} (Ho et al. 2020, L_simple); ``t`` and ``noise`` are drawn
        from ``generator`` (in that order) unless given."""
        if t is None:
            t = torch.randint(0, self.num_timesteps, (x0.shape[0],), device=x0.device, generator=generator)
        if noise is None:
            noise = torch.randn(x0.shape, device=x0.device, generator=generator, dtype=x0.dtype)
        return F.mse_loss(model(self.q_sample(x0, t, noise), t, y), noise)
