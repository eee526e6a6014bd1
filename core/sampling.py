"""Samplers: DDPM ancestral, DDIM and DPM-Solver++(2M), one loop, with classifier-free guidance.

Both samplers walk a decreasing list of timesteps t_0 > t_1 > … > t_{K−1} and, at each, predict ε,
form x̂_0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t and step to the next timestep. After the last one the "previous"
ᾱ is 1, so the final step returns x̂_0 itself (the reference study's last step instead repeated x_t).

- DDIM (Song et al. 2021): x_prev = √ᾱ_prev x̂_0 + √(1−ᾱ_prev−σ²) ε̂ + σ z,
  σ = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1−ᾱ_t/ᾱ_prev).
- DDPM (Ho et al. 2020) on the (possibly respaced) schedule β = 1 − ᾱ_t/ᾱ_prev: the posterior mean
  √ᾱ_prev β/(1−ᾱ_t) x̂_0 + √(1−β)(1−ᾱ_prev)/(1−ᾱ_t) x_t plus noise of variance β(1−ᾱ_prev)/(1−ᾱ_t)
  ("fixed_small") or β ("fixed_large"). DDIM with η = 1 equals DDPM fixed_small.
- DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), a multistep second-order solver of the probability-flow ODE
  in λ_t = log(α_t/σ_t) (α_t = √ᾱ_t, σ_t = √(1−ᾱ_t)) with data prediction: with h = λ_prev − λ_t and the
  previous step's h', r = h'/h, D = (1 + 1/(2r)) x̂_0 − 1/(2r) x̂_0' (D = x̂_0 at the first step),
  x_prev = (σ_prev/σ_t) x_t − α_prev (e^(−h) − 1) D. The final step (σ_prev = 0) is first order and returns
  x̂_0, as in the "lower order final" variant; with D = x̂_0 the update is DDIM's with η = 0.

Timestep spacing for K of T steps (as named in Lin et al. 2024, Table 2):
``leading`` t = (K−1−i)·⌊T/K⌋, ``trailing`` t = round(T − i·T/K) − 1, ``linspace`` t = round(linspace(T−1, 0, K)).

Classifier-free guidance (Ho & Salimans 2022): ε̂ = ε_u + w (ε_c − ε_u), with ε_u from the learned null
class; both halves in one batched forward pass. w = 1 is plain conditional sampling, w = 0 unconditional.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from core.diffusion import GaussianDiffusion

SAMPLERS = ("ddpm", "ddim", "dpmpp2m")
SPACINGS = ("leading", "trailing", "linspace")
VARIANCES = ("fixed_small", "fixed_large")


@dataclass(frozen=True)
class SamplerSpec:
    name: str = "ddim"
    steps: int = 50
    eta: float = 0.0
    spacing: str = "leading"
    variance: str = "fixed_small"
    clip_denoised: bool = True

    def __post_init__(self) -> None:
        if self.name not in SAMPLERS:
            raise ValueError(f"sampler.name must be one of {SAMPLERS}, got {self.name!r}")
        if self.spacing not in SPACINGS:
            raise ValueError(f"sampler.spacing must be one of {SPACINGS}, got {self.spacing!r}")
        if self.variance not in VARIANCES:
            raise ValueError(f"sampler.variance must be one of {VARIANCES}, got {self.variance!r}")
        if self.steps < 1:
            raise ValueError(f"sampler.steps must be ≥ 1, got {self.steps}")

    @property
    def label(self) -> str:
        """A short human label, e.g. ``DDIM-50 (η=0, leading)``."""
        if self.name == "dpmpp2m":
            return f"DPM-Solver++(2M)-{self.steps} ({self.spacing})"
        extra = f"η={self.eta:g}, " if self.name == "ddim" else f"{self.variance}, "
        return f"{self.name.upper()}-{self.steps} ({extra}{self.spacing})"


def make_timesteps(num_timesteps: int, steps: int, spacing: str) -> list[int]:
    """The decreasing timesteps a K-step sampler visits (all T when K = T, whatever the spacing)."""
    T, K = num_timesteps, steps
    if not 1 <= K <= T:
        raise ValueError(f"sampler steps must be between 1 and the diffusion's T = {T}, got {K}")
    if spacing == "leading":
        ts = np.arange(K)[::-1] * (T // K)
    elif spacing == "trailing":
        ts = np.round(T - np.arange(K) * (T / K)).astype(np.int64) - 1
    elif spacing == "linspace":
        ts = np.round(np.linspace(T - 1, 0, K)).astype(np.int64)
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}; use one of {SPACINGS}")
    ts = [int(t) for t in ts]
    if len(set(ts)) != len(ts):
        raise ValueError(f"spacing {spacing!r} with {K} of {T} steps repeats timesteps")
    return ts


def guided_eps(
    model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None, guidance_scale: float
) -> torch.Tensor:
    """ε̂ with classifier-free guidance; unconditional models (``y is None``) ignore the scale."""
    if y is None:
        return model(x, t, None)
    null = torch.full_like(y, model.num_classes)
    if guidance_scale == 1.0:
        return model(x, t, y)
    if guidance_scale == 0.0:
        return model(x, t, null)
    eps_c, eps_u = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null])).chunk(2)
    return eps_u + guidance_scale * (eps_c - eps_u)


@torch.no_grad()
def sample(
    model: torch.nn.Module,
    diffusion: GaussianDiffusion,
    x_T: torch.Tensor,
    spec: SamplerSpec,
    y: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    generator: torch.Generator | None = None,
    record: int = 0,
) -> tuple[torch.Tensor, list[tuple[int, torch.Tensor]]]:
    """Run the sampler from x_T. Returns x_0 and, if ``record`` > 0, about ``record`` (t, x_t) snapshots
    evenly spread over the steps (the last snapshot is the final x_0, labelled t = −1)."""
    ts = make_timesteps(diffusion.num_timesteps, spec.steps, spec.spacing)
    acp = diffusion.alphas_cumprod
    keep = set(np.linspace(0, len(ts) - 1, record).round().astype(int).tolist()) if record > 1 else set()
    trajectory: list[tuple[int, torch.Tensor]] = []
    x = x_T
    prev_x0: torch.Tensor | None = None  # DPM-Solver++(2M): x̂_0 and h of the previous step
    prev_h = 0.0
    for i, t in enumerate(ts):
        if i in keep:
            trajectory.append((t, x.clone()))
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        a_t = float(acp[t])
        a_prev = float(acp[t_prev]) if t_prev >= 0 else 1.0
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        eps = guided_eps(model, x, t_batch, y, guidance_scale).float()
        x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        if spec.clip_denoised:
            x0 = x0.clamp(-1, 1)
            eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)
        if t_prev < 0:
            x = x0
            continue
        beta = 1 - a_t / a_prev
        if spec.name == "dpmpp2m":
            h = 0.5 * (math.log(a_prev / (1 - a_prev)) - math.log(a_t / (1 - a_t)))
            d = x0 if prev_x0 is None else x0 + (x0 - prev_x0) * (h / (2 * prev_h))
            x = math.sqrt((1 - a_prev) / (1 - a_t)) * x - math.sqrt(a_prev) * math.expm1(-h) * d
            prev_x0, prev_h = x0, h
            continue
        if spec.name == "ddim":
            sigma = spec.eta * math.sqrt((1 - a_prev) / (1 - a_t) * beta)
            mean = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps
        else:
            var = beta * (1 - a_prev) / (1 - a_t) if spec.variance == "fixed_small" else beta
            sigma = math.sqrt(var)
            mean = (math.sqrt(a_prev) * beta / (1 - a_t)) * x0 + (math.sqrt(1 - beta) * (1 - a_prev) / (1 - a_t)) * x
        if sigma > 0:
            z = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
            x = mean + sigma * z
        else:
            x = mean
    if record > 0:
        trajectory.append((-1, x.clone()))
    return x, trajectory
