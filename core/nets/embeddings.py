"""Embeddings shared by the denoisers: the sinusoidal timestep embedding and the class-label conventions of
classifier-free guidance (the null class is index ``num_classes``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos(t·f_i), sin(t·f_i)], f_i = max_period^(−i/(dim/2)) (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def check_conditioning(
    num_classes: int, y: torch.Tensor | None, batch: int, device: torch.device
) -> torch.Tensor | None:
    """Labels to embed: conditional models treat ``y=None`` as the null class; unconditional ones refuse labels."""
    if num_classes == 0:
        if y is not None:
            raise ValueError("this model is unconditional (num_classes = 0) but was given class labels")
        return None
    if y is None:
        return torch.full((batch,), num_classes, device=device, dtype=torch.long)
    return y
