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


def _unet(net: dict[str, Any], image_size: int, in_channels: int, num_classes: int) -> nn.Module:
    from core.nets.unet import UNet

    return UNet(image_size=image_size, in_channels=in_channels, num_classes=num_classes, **net)


def _dit(net: dict[str, Any], image_size: int, in_channels: int, num_classes: int) -> nn.Module:
    from core.nets.dit import build_dit

    zoo = net.pop("config", None)
    return build_dit(zoo or net, image_size, in_channels, num_classes, **({} if zoo is None else net))


# The denoisers by ``backbone``: each builds from its ``net`` options ($defs/net_<backbone> of the config schema,
# which holds their defaults; core.nets.zoo.PLAN_NET completes and checks them at planning time). A new backbone is
# its net module, an entry here and in PLAN_NET, and its schema; tests/test_config.py checks that they agree.
BACKBONES = {"unet": _unet, "dit": _dit}


def build_model(spec: dict[str, Any], image_size: int, in_channels: int = 3, num_classes: int = 0) -> nn.Module:
    """The denoiser named by ``spec['backbone']`` with the options in ``spec['net']`` (a complete spec)."""
    backbone = spec["backbone"]
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r} (known: {', '.join(BACKBONES)})")
    net = {k: v for k, v in spec["net"].items() if k != "class_conditional"}
    return BACKBONES[backbone](net, image_size, in_channels, num_classes)


class EMA:
    """Exponential moving average of parameters, θ_ema ← d·θ_ema + (1 − d)·θ, every ``update_every`` steps.

    With ``warmup_power`` p > 0 the decay of the n-th update is min(decay, 1 − (1 + n)^−p), so early
    averages forget the fast-changing first weights (p = 2/3 is the default of the EMA library the reference
    study used); p = 0 uses ``decay`` from the first update. Buffers are copied.
    """

    def __init__(self, model: nn.Module, decay: float, update_every: int = 1, warmup_power: float = 2 / 3) -> None:
        self.decay, self.update_every, self.warmup_power = decay, update_every, warmup_power
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.num_updates = 0

    def current_decay(self) -> float:
        if self.warmup_power <= 0:
            return self.decay
        return min(self.decay, 1.0 - (1.0 + self.num_updates) ** -self.warmup_power)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        if step % self.update_every:
            return
        d = self.current_decay()
        ema_params, params = list(self.model.parameters()), [p.detach() for p in model.parameters()]
        if len(ema_params) != len(params):
            raise ValueError(f"EMA holds {len(ema_params)} parameters, the model {len(params)}")
        torch._foreach_lerp_(ema_params, params, 1.0 - d)  # one fused kernel per dtype/device group, not one per tensor
        for b_ema, b in zip(self.model.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.num_updates = int(state["num_updates"])


class UnreadableCheckpoint(OSError):
    """A checkpoint file that exists but cannot be read (truncated, overwritten, not a checkpoint)."""


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write atomically: a crash, or a full disk (reported as such), never leaves a truncated file at ``path``."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint at ``path``; ``UnreadableCheckpoint`` naming the file when it is corrupt."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises RuntimeError, pickle errors, EOFError, … for a damaged file
        raise UnreadableCheckpoint(
            f"checkpoint {path} is unreadable ({type(err).__name__}: {str(err).splitlines()[0][:200]}): it was "
            "truncated or changed after it was written"
        ) from err
    if not isinstance(ckpt, dict) or "meta" not in ckpt:
        raise UnreadableCheckpoint(f"{path} is not a checkpoint written by this workflow (no 'meta')")
    return ckpt


def load_denoiser(path: str | os.PathLike[str], use_ema: bool = True, device: str = "cpu") -> tuple[nn.Module, dict]:
    """The (EMA) denoiser of a training checkpoint, in eval mode, and the checkpoint's ``meta``."""
    ckpt = load_checkpoint(path, map_location=device)
    meta = ckpt["meta"]
    model = build_model(meta["spec"], meta["image_size"], meta["in_channels"], meta["num_classes"])
    model.load_state_dict(ckpt["ema"]["model"] if use_ema else ckpt["model"])
    return model.to(device).eval(), {**meta, "step": ckpt["step"]}


def build_autoencoder(net: dict[str, Any], image_size: int, in_channels: int = 3) -> nn.Module:
    """The KL autoencoder (``core.nets.vae.AutoencoderKL``) with the options of an ``autoencoders`` config entry."""
    from core.nets.vae import AutoencoderKL

    return AutoencoderKL(resolution=image_size, in_channels=in_channels, **net)


def load_autoencoder(path: str | os.PathLike[str], device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The autoencoder of a ``vae.pt`` written by ``core.stages.train_autoencoder``, in eval mode, and its ``meta``
    (net, image size, latent shape, ``scale_factor``, provenance)."""
    ckpt = load_checkpoint(path, map_location=device)
    if "scale_factor" not in ckpt.get("meta", {}):
        raise ValueError(
            f"{path} is not an autoencoder file written by `python -m core.stages.train_autoencoder train`"
        )
    meta = ckpt["meta"]
    vae = build_autoencoder(meta["net"], int(meta["image_size"]), int(meta["in_channels"]))
    vae.load_state_dict(ckpt["model"])
    return vae.to(device).eval().requires_grad_(False), meta
