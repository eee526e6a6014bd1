"""Building denoisers from a model spec, EMA of weights, and checkpoint files.

A checkpoint is one ``torch.save`` dict: ``model``, ``ema``, ``optimizer``, ``scheduler`` state dicts,
``step``, ``rng`` (every generator the loop draws from) and ``meta`` (spec, spec hash, code version, data
provenance). It is written to a temporary name and renamed, so a crash never leaves a truncated file.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
from torch import nn

from core.provenance import atomic_path


def build_model(spec: dict[str, Any], image_size: int, in_channels: int = 3, num_classes: int = 0) -> nn.Module:
    """The denoiser named by ``spec['backbone']`` with the options in ``spec['net']``."""
    net = dict(spec.get("net", {}))
    backbone = spec["backbone"]
    if backbone == "unet":
        from core.unet import UNet

        net.pop("class_conditional", None)
        return UNet(image_size=image_size, in_channels=in_channels, num_classes=num_classes, **net)
    raise ValueError(f"unknown backbone {backbone!r} (known: unet)")


class EMA:
    """Exponential moving average of parameters, θ_ema ← d·θ_ema + (1 − d)·θ, every ``update_every`` steps.

    Buffers (none in our models besides fixed tables) are copied. Warm-up: the first update copies θ.
    """

    def __init__(self, model: nn.Module, decay: float, update_every: int = 1) -> None:
        self.decay, self.update_every = decay, update_every
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.initialised = False

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        if step % self.update_every:
            return
        d = self.decay if self.initialised else 0.0
        for p_ema, p in zip(self.model.parameters(), model.parameters(), strict=True):
            p_ema.lerp_(p.detach(), 1.0 - d)
        for b_ema, b in zip(self.model.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)
        self.initialised = True

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "initialised": self.initialised}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.initialised = bool(state["initialised"])


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return torch.load(path, map_location=map_location, weights_only=False)


def load_denoiser(path: str | os.PathLike[str], use_ema: bool = True, device: str = "cpu") -> tuple[nn.Module, dict]:
    """The (EMA) denoiser of a training checkpoint, in eval mode, and the checkpoint's ``meta``."""
    ckpt = load_checkpoint(path, map_location=device)
    meta = ckpt["meta"]
    model = build_model(meta["spec"], meta["image_size"], meta["in_channels"], meta["num_classes"])
    model.load_state_dict(ckpt["ema"]["model"] if use_ema else ckpt["model"])
    return model.to(device).eval(), {**meta, "step": ckpt["step"]}
