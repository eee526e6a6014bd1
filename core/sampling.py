"""Samplers: DDPM ancestral, DDIM and DPM-Solver++(2M) — one function each, one signature, one registry.

Every sampler walks a decreasing list of timesteps t_0 > t_1 > … > t_{K−1} (``make_timesteps``) with a
``denoise(x, t) -> (x̂₀, ε̂)`` that applies classifier-free guidance and clipping, and steps to the next timestep.
After the last one the "previous" ᾱ is 1, so the final step returns x̂₀ itself (the reference study's last step
instead repeated x_t). ``callback(i, t, x)`` sees x_t before step i and, last, the result with t = −1.

- DDIM (Song et al. 2021): x_prev = √ᾱ_prev x̂₀ + √(1−ᾱ_prev−σ²) ε̂ + σ z,
  σ = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1−ᾱ_t/ᾱ_prev).
- DDPM (Ho et al. 2020) on the (possibly respaced) schedule β = 1 − ᾱ_t/ᾱ_prev: the posterior mean
  √ᾱ_prev β/(1−ᾱ_t) x̂₀ + √(1−β)(1−ᾱ_prev)/(1−ᾱ_t) x_t plus noise of variance β(1−ᾱ_prev)/(1−ᾱ_t)
  ("fixed_small") or β ("fixed_large"). DDIM with η = 1 equals DDPM fixed_small.
- DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), a multistep second-order solver of the probability-flow ODE in
  λ_t = log(α_t/σ_t) (α_t = √ᾱ_t, σ_t = √(1−ᾱ_t)) with data prediction: with h = λ_prev − λ_t and the previous
  step's h', r = h'/h, D = (1 + 1/(2r)) x̂₀ − 1/(2r) x̂₀' (D = x̂₀ at the first step),
  x_prev = (σ_prev/σ_t) x_t − α_prev (e^(−h) − 1) D. The final step (σ_prev = 0) is first order and returns x̂₀,
  as in the "lower order final" variant; with D = x̂₀ the update is DDIM's with η = 0.

Timestep spacing for K of T steps (as named in Lin et al. 2024, Table 2): ``leading`` t = (K−1−i)·⌊T/K⌋,
``trailing`` t = round(T − i·T/K) − 1, ``linspace`` t = round(linspace(T−1, 0, K)).

Classifier-free guidance (Ho & Salimans 2022): ε̂ = ε_u + w (ε_c − ε_u), with ε_u from the learned null class;
both halves in one batched forward pass. w = 1 is plain conditional sampling, w = 0 unconditional.

A sampler's options and their defaults are the config schema's ``$defs/sampler_<name>`` (``core.config.sampler_spec``
completes a partial one from there); a new sampler is one function here, one ``SAMPLERS`` entry and its schema entry
(tests/test_sampling.py checks that they agree).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core.diffusion import GaussianDiffusion

Denoise = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]
Callback = Callable[[int, int, torch.Tensor], None]
SPACINGS = ("leading", "trailing", "linspace")


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


def _alphas(acp: torch.Tensor, ts: list[int], i: int) -> tuple[float, float, bool]:
    """ᾱ_t and ᾱ_prev at step i, and whether it is the last step (ᾱ_prev = 1)."""
    last = i + 1 == len(ts)
    return float(acp[ts[i]]), 1.0 if last else float(acp[ts[i + 1]]), last


def _noise(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)


def ddpm(
    denoise: Denoise,
    x: torch.Tensor,
    ts: list[int],
    acp: torch.Tensor,
    spec: dict[str, Any],
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Ancestral sampling on the respaced schedule, variance ``fixed_small`` or ``fixed_large``."""
    for i, t in enumerate(ts):
        if callback:
            callback(i, t, x)
        x0, _ = denoise(x, t)
        a_t, a_prev, last = _alphas(acp, ts, i)
        if last:
            return x0
        beta = 1 - a_t / a_prev
        var = beta * (1 - a_prev) / (1 - a_t) if spec["variance"] == "fixed_small" else beta
        mean = (math.sqrt(a_prev) * beta / (1 - a_t)) * x0 + (math.sqrt(1 - beta) * (1 - a_prev) / (1 - a_t)) * x
        x = mean + math.sqrt(var) * _noise(x, generator) if var > 0 else mean
    return x


def ddim(
    denoise: Denoise,
    x: torch.Tensor,
    ts: list[int],
    acp: torch.Tensor,
    spec: dict[str, Any],
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """DDIM with stochasticity η (0: deterministic; 1: DDPM's ``fixed_small`` ancestral step)."""
    for i, t in enumerate(ts):
        if callback:
            callback(i, t, x)
        x0, eps = denoise(x, t)
        a_t, a_prev, last = _alphas(acp, ts, i)
        if last:
            return x0
        sigma = spec["eta"] * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
        mean = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps
        x = mean + sigma * _noise(x, generator) if sigma > 0 else mean
    return x


def dpmpp2m(
    denoise: Denoise,
    x: torch.Tensor,
    ts: list[int],
    acp: torch.Tensor,
    spec: dict[str, Any],
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M): second-order multistep in λ with data prediction; the last step returns x̂₀."""
    prev_x0: torch.Tensor | None = None
    prev_h = 0.0
    for i, t in enumerate(ts):
        if callback:
            callback(i, t, x)
        x0, _ = denoise(x, t)
        a_t, a_prev, last = _alphas(acp, ts, i)
        if last:
            return x0
        h = 0.5 * (math.log(a_prev / (1 - a_prev)) - math.log(a_t / (1 - a_t)))
        d = x0 if prev_x0 is None else x0 + (x0 - prev_x0) * (h / (2 * prev_h))
        x = math.sqrt((1 - a_prev) / (1 - a_t)) * x - math.sqrt(a_prev) * math.expm1(-h) * d
        prev_x0, prev_h = x0, h
    return x


@dataclass(frozen=True)
class Sampler:
    """A registry entry: the function, its display title, and the options of its own (beyond steps, spacing and
    clip_denoised) with how the label shows them."""

    fn: Callable[..., torch.Tensor]
    title: str
    options: dict[str, Callable[[Any], str]]


SAMPLERS: dict[str, Sampler] = {
    "ddpm": Sampler(ddpm, "DDPM", {"variance": str}),
    "ddim": Sampler(ddim, "DDIM", {"eta": lambda v: f"η={v:g}"}),
    "dpmpp2m": Sampler(dpmpp2m, "DPM-Solver++(2M)", {}),
}
COMMON_OPTIONS = ("name", "steps", "spacing", "clip_denoised")


def label(spec: dict[str, Any]) -> str:
    """A short human label, e.g. ``DDIM-50 (η=0, leading)`` or ``DPM-Solver++(2M)-20 (trailing)``."""
    s = SAMPLERS[spec["name"]]
    parts = [fmt(spec[k]) for k, fmt in s.options.items()] + [spec["spacing"]]
    return f"{s.title}-{spec['steps']} ({', '.join(parts)})"


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
    spec: dict[str, Any],
    y: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Run the sampler ``spec`` (complete: ``sampler_spec``) from x_T; the model predicts ε."""
    if spec["name"] not in SAMPLERS:
        raise ValueError(f"unknown sampler {spec['name']!r}; known: {', '.join(SAMPLERS)}")
    ts = make_timesteps(diffusion.num_timesteps, int(spec["steps"]), spec["spacing"])
    acp = diffusion.alphas_cumprod

    def denoise(x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        a_t = float(acp[t])
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        eps = guided_eps(model, x, t_batch, y, guidance_scale).float()
        x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        if spec["clip_denoised"]:
            x0 = x0.clamp(-1, 1)
            eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)
        return x0, eps

    try:
        x = SAMPLERS[spec["name"]].fn(denoise, x_T, ts, acp, spec, generator, callback)
    except Truncated as stop:  # a rehearsal's first steps (``truncated``)
        return stop.x
    if callback:
        callback(len(ts), -1, x)
    return x


class Truncated(Exception):
    """Raised by a ``truncated`` callback to end sampling early; ``x`` is the state reached."""

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__("sampling truncated")
        self.x = x


def truncated(callback: Callback | None, steps: int) -> Callback:
    """``callback``, and an end to sampling once ``steps`` steps have run (``sample`` then returns that x_t): a
    rehearsal runs the first steps of the real schedule (core.rehearsal). No change when ``steps`` covers them all."""

    def stop(i: int, t: int, x: torch.Tensor) -> None:
        if callback:
            callback(i, t, x)
        if i >= steps and t >= 0:
            raise Truncated(x)

    return stop


def trajectory_recorder(points: int, steps: int) -> tuple[Callback, list[tuple[int, torch.Tensor]]]:
    """A callback keeping about ``points`` snapshots (t, x_t) spread evenly over the steps, the last one the
    result (t = −1), and the list it fills."""
    keep = set(np.linspace(0, steps - 1, points).round().astype(int).tolist()) if points > 1 else set()
    snapshots: list[tuple[int, torch.Tensor]] = []

    def record(i: int, t: int, x: torch.Tensor) -> None:
        if i in keep or t < 0:
            snapshots.append((t, x.clone()))

    return record, snapshots
