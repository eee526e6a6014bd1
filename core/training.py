"""The training step and what it is made of, written once: ``core.stages.train`` runs it and ``bench/`` times it.

- ``Levers``: the speed options of a ``train`` spec (bf16 autocast, TF32, channels-last, fused AdamW, compile).
- ``lr_at``: the learning-rate schedule (linear warm-up, then constant or cosine to ``min_lr``).
- ``make_batch``: a rank's rows of a global batch → (x₀, y) on the device: pixels to model range or a fresh latent
  z ~ q(z|x) scaled, random flips, classifier-free label dropout — every rank draws the whole global batch's
  randomness and keeps its share, so data-parallel training equals one process (``core.distributed``).
- ``train_step``: timesteps and noise, the ε-loss (``GaussianDiffusion.training_loss``), one collective (the mean
  loss and the stop flag), a finite-loss and finite-gradient check, clipping, AdamW, the EMA update.
- ``EarlyStopping`` with ``Validation``: the validation ε-loss on a fixed batch and the stopping rule.
- ``TrainState``: everything a checkpoint holds (``state_dict`` / ``load_state_dict``), and the check that only
  finite weights are ever written.

The random draws of a step come from ``noise_gen`` in a fixed order (latent ε, flips, label dropout, t, noise), so a
resumed run repeats an uninterrupted one bit for bit.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core import data, distributed
from core.diffusion import GaussianDiffusion
from core.models import EMA


def lr_at(step: int, train: dict[str, Any]) -> float:
    """Linear warm-up over ``warmup_steps``, then constant or cosine annealing to ``min_lr`` at the last step."""
    lr, warmup = float(train["lr"]), int(train["warmup_steps"])
    if step < warmup:
        return lr * (step + 1) / warmup
    if train["lr_schedule"] == "cosine":
        progress = (step - warmup) / max(1, int(train["steps"]) - warmup)
        min_lr = float(train["min_lr"])
        return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))
    return lr


@dataclass(frozen=True)
class Levers:
    """The speed options of ``train`` (bench/RESULTS.md measures each): bf16 autocast of the forward pass
    (weights, gradients, optimizer state and EMA stay fp32), TF32 matmuls and convolutions (CUDA; training only —
    metrics run elsewhere with TF32 off), channels-last memory format, fused AdamW, ``torch.compile``."""

    bf16: bool = False
    tf32: bool = False
    channels_last: bool = False
    fused_adamw: bool = False
    compile: bool = False

    @classmethod
    def from_spec(cls, train: dict[str, Any]) -> Levers:
        return cls(
            bf16=train["precision"] == "bf16",
            tf32=bool(train["tf32"]),
            channels_last=bool(train["channels_last"]),
            fused_adamw=bool(train["fused_adamw"]),
            compile=bool(train["compile"]),
        )

    def label(self) -> str:
        on = [n for n in ("bf16", "tf32", "channels_last", "fused_adamw", "compile") if getattr(self, n)]
        return "+".join(on) or "baseline (fp32)"

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def apply(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """Set TF32 for this process (CUDA) and the model's memory format."""
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.tf32
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def optimizer(self, model: torch.nn.Module, train: dict[str, Any]) -> torch.optim.AdamW:
        opt = train["optimizer"]
        return torch.optim.AdamW(
            model.parameters(),
            lr=float(train["lr"]),
            betas=tuple(opt["betas"]),
            weight_decay=float(opt["weight_decay"]),
            **({"fused": True} if self.fused_adamw else {}),
        )

    def wrap(self, net: torch.nn.Module) -> torch.nn.Module:
        return torch.compile(net) if self.compile else net


@dataclass
class BatchRecipe:
    """How loader rows become a training batch: latent scale factor (None for pixels), flips, label dropout."""

    scale_factor: float | None
    hflip: bool
    num_classes: int
    label_dropout: float


def make_batch(
    rows: np.ndarray,
    labels: np.ndarray,
    recipe: BatchRecipe,
    share: slice,
    n_global: int,
    noise_gen: torch.Generator,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x₀, y) of this rank's ``share`` of a global batch of ``n_global`` rows, from the loader's rows of that share
    (uint8 images or latent moments; ``ImageBatches(share=…)`` reads only these): the random draws are made for the
    whole global batch and this rank keeps its share, so every rank stays in step with one process."""
    if len(rows) != share.stop - share.start or len(labels) != len(rows):
        raise ValueError(f"make_batch: {len(rows)} rows and {len(labels)} labels for the share {share} of {n_global}")
    if recipe.scale_factor is not None:  # a fresh z ~ q(z|x) from the cached posterior, scaled to unit variance
        mean, logvar = torch.as_tensor(rows).to(device, non_blocking=True).chunk(2, dim=1)
        eps = torch.randn((n_global, *mean.shape[1:]), generator=noise_gen, device=device)[share]
        x0 = (mean + torch.exp(0.5 * logvar) * eps) * recipe.scale_factor
    else:
        x0 = data.to_model_range(rows, device)
    if recipe.hflip:
        flip = (torch.rand(n_global, generator=noise_gen, device=device) < 0.5)[share]
        x0 = torch.where(flip[:, None, None, None], x0.flip(3), x0)
    y = None
    if recipe.num_classes:
        y = torch.as_tensor(labels, device=device)
        drop = (torch.rand(n_global, generator=noise_gen, device=device) < recipe.label_dropout)[share]
        y = torch.where(drop, torch.full_like(y, recipe.num_classes), y)
    return x0, y


@dataclass
class StepResult:
    loss: float
    grad_norm: float
    stop: bool  # some rank was told to stop (SIGTERM/SIGUSR1)


class NonFinite(FloatingPointError):
    """A non-finite loss or gradient: training stops before the weights take it."""


def train_step(
    net: torch.nn.Module,
    model: torch.nn.Module,
    diffusion: GaussianDiffusion,
    optimizer: torch.optim.Optimizer,
    ema: EMA | None,
    x0: torch.Tensor,
    y: torch.Tensor | None,
    n_global: int,
    share: slice,
    noise_gen: torch.Generator,
    levers: Levers,
    grad_clip: float | None,
    lr: float,
    step: int,
    ctx: distributed.Context | None = None,
    stop_requested: bool = False,
) -> StepResult:
    """One optimisation step at ``step`` (0-based; the EMA is updated as of ``step + 1``). Raises ``NonFinite``
    when the loss or the gradient norm is not finite, before the optimizer or the EMA touch the weights."""
    device, ctx = x0.device, ctx or distributed.Context()
    for group in optimizer.param_groups:
        group["lr"] = lr
    t = torch.randint(0, diffusion.num_timesteps, (n_global,), device=device, generator=noise_gen)[share]
    noise = torch.randn((n_global, *x0.shape[1:]), device=device, generator=noise_gen)[share]
    if levers.channels_last:
        x0 = x0.contiguous(memory_format=torch.channels_last)
    with levers.autocast(device):
        loss = diffusion.training_loss(net, x0, y, t=t, noise=noise)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float(grad_clip) if grad_clip else math.inf)
    # one collective and one synchronisation per step: the global mean loss, whether any rank was told to stop,
    # and the gradient norm (the same on every rank once DDP has averaged the gradients)
    flag = torch.tensor(1.0 if stop_requested else 0.0, device=device)
    agreed = distributed.all_mean(ctx, torch.stack([loss.detach().float(), flag, norm.detach().float()])).tolist()
    loss_value, stop, grad_norm = agreed[0], agreed[1] > 0, agreed[2]
    if not math.isfinite(loss_value):
        raise NonFinite(f"non-finite loss ({loss_value}) at step {step + 1}")
    if not math.isfinite(grad_norm):
        raise NonFinite(f"non-finite gradient norm ({grad_norm}) at step {step + 1} (the loss was {loss_value:.6g})")
    optimizer.step()
    if ema is not None:
        ema.update(model, step + 1)
    return StepResult(loss_value, grad_norm, stop)


@torch.no_grad()
def ema_loss(
    diffusion: GaussianDiffusion,
    ema_model: torch.nn.Module,
    x0: torch.Tensor,
    y: torch.Tensor | None,
    step: int,
    seed: int,
) -> float:
    """The ε-loss of the EMA weights on a step's batch (a TensorBoard curve), with timesteps and noise from a
    generator of its own seeded by (seed, step): the training streams are not touched, so training with or without
    the curve gives the same weights."""
    gen = torch.Generator(device=x0.device).manual_seed(int(seed) * 1_000_003 + int(step))
    t = torch.randint(0, diffusion.num_timesteps, (len(x0),), generator=gen, device=x0.device)
    noise = torch.randn(x0.shape, generator=gen, device=x0.device)
    was_training = ema_model.training
    ema_model.eval()
    loss = float(diffusion.training_loss(ema_model, x0, y, t=t, noise=noise))
    ema_model.train(was_training)
    return loss


class Validation:
    """The fixed validation batch of early stopping: successive evaluations differ only by the weights.

    Held compactly: the rows as stored (uint8 images or float32 latent moments), their labels and timesteps
    (drawn once, seeded); each image's noise (and, for latents, its draw from the posterior) comes from a generator
    seeded by the image's index when a batch is evaluated, so the batch is the same whatever the batch size or the
    number of ranks, and no float copy of it is held (full-a's 5,000 images at 128² would be 1.8 GiB per rank).
    With several ranks each evaluates its contiguous share of the images and the mean is taken over all of them.
    """

    SEED = 12345

    def __init__(
        self,
        data_path: str,
        key: str,
        num_images: int,
        diffusion: GaussianDiffusion,
        device: torch.device | None,
        scale_factor: float | None,
        num_classes: int,
        ctx: distributed.Context | None = None,
    ) -> None:
        with data.open_split(data_path, "val", key) as f:
            n = f[f"val/{key}"].shape[0]
            if n == 0:
                raise ValueError(f"{data_path}: the val split is empty; train.early_stopping needs validation images")
            self.rows = f[f"val/{key}"][: min(num_images, n)]
            self.labels = torch.as_tensor(f["val/labels"][: len(self.rows)]).long()
        self.t = torch.randint(
            0, diffusion.num_timesteps, (len(self.rows),), generator=torch.Generator().manual_seed(self.SEED)
        )
        self.ctx = ctx or distributed.Context()
        share = np.array_split(np.arange(len(self.rows)), self.ctx.world_size)[self.ctx.rank]
        self.mine = range(int(share[0]), int(share[-1]) + 1) if len(share) else range(0)
        self.scale_factor, self.conditional = scale_factor, bool(num_classes)
        self.diffusion, self.device = diffusion, device

    def inputs(self, sl: slice) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """(x₀, y, t, noise) of images ``sl`` on the CPU: each image's random draws from its own seeded generator."""
        x0s, noises = [], []
        for i in range(sl.start, sl.stop):
            gen = torch.Generator().manual_seed(self.SEED + 1 + i)
            row = torch.as_tensor(self.rows[i : i + 1])
            if self.scale_factor is not None:  # latents: one fixed draw from the posterior
                mean, logvar = row.float().chunk(2, dim=1)
                x0 = (mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=gen)) * self.scale_factor
            else:
                x0 = data.to_model_range(row)
            x0s.append(x0)
            noises.append(torch.randn(x0.shape, generator=gen))
        y = self.labels[sl] if self.conditional else None
        return torch.cat(x0s), y, self.t[sl], torch.cat(noises)

    @torch.no_grad()
    def loss(self, model: torch.nn.Module, batch_size: int) -> float:
        """The mean ε-loss of ``model`` over every validation image (all ranks call it; each does its share)."""
        was_training = model.training
        model.eval()
        total = 0.0
        for i in range(self.mine.start, self.mine.stop, batch_size):
            sl = slice(i, min(i + batch_size, self.mine.stop))
            x0, y, t, noise = (None if v is None else v.to(self.device) for v in self.inputs(sl))
            total += float(self.diffusion.training_loss(model, x0, y, t=t, noise=noise)) * (sl.stop - sl.start)
        model.train(was_training)
        both = torch.tensor([total, float(len(self.mine))], dtype=torch.float64, device=self.device or "cpu")
        summed = distributed.all_mean(self.ctx, both, "the validation loss's all-reduce") * self.ctx.world_size
        return float(summed[0] / summed[1])


class EarlyStopping:
    """Stop after ``patience`` validation evaluations (every ``every`` steps) without a decrease of more than
    ``min_delta``; ``best`` is the step and loss of the best evaluation so far."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.every, self.patience = int(spec["every"]), int(spec["patience"])
        self.min_delta, self.weights = float(spec["min_delta"]), spec["weights"]
        self.best: dict[str, Any] = {"step": 0, "val_loss": math.inf, "bad": 0}

    def due(self, step: int, total: int) -> bool:
        return step % self.every == 0 or step == total

    def update(self, step: int, val_loss: float) -> bool:
        """Record an evaluation; True when it improved on the best."""
        if not math.isfinite(val_loss):
            raise NonFinite(f"non-finite validation loss ({val_loss}) at step {step}")
        improved = val_loss < self.best["val_loss"] - self.min_delta
        self.best = (
            {"step": step, "val_loss": val_loss, "bad": 0} if improved else {**self.best, "bad": self.best["bad"] + 1}
        )
        return improved

    @property
    def converged(self) -> bool:
        return self.best["bad"] >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return dict(self.best)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = dict(state)


def non_finite_tensors(*modules: torch.nn.Module) -> list[str]:
    """Names of the parameters and buffers (of each module, numbered) that hold a NaN or an infinity."""
    bad = []
    for i, module in enumerate(modules):
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                bad.append(f"{i}:{name}")
    return bad


@dataclass
class TrainState:
    """What a checkpoint holds: model, EMA, optimizer, loader position, RNG states, step, early stopping, meta."""

    model: torch.nn.Module
    ema: EMA
    optimizer: torch.optim.Optimizer
    loader: data.ImageBatches | data.Prefetcher
    noise_gen: torch.Generator
    device: torch.device
    meta: dict[str, Any]
    early: EarlyStopping | None = None
    step: int = 0

    def own_rng(self) -> dict[str, torch.Tensor | None]:
        """This rank's own random streams (torch's global CPU generator and, on CUDA, its device's)."""
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if self.device.type == "cuda" else None,
        }

    def state_dict(self, train: dict[str, Any], ctx: distributed.Context | None = None) -> dict[str, Any]:
        """The checkpoint; raises ``NonFinite`` naming the tensors if any weight is not finite (never saved). Every
        rank calls it (the ranks' own RNG states are gathered); the main rank writes it."""
        ctx = ctx or distributed.Context()
        bad = non_finite_tensors(self.model, self.ema.model)
        if bad:
            raise NonFinite(f"non-finite weights at step {self.step} ({', '.join(bad[:5])}…): not saved")
        ranks = distributed.all_gather(ctx, self.own_rng(), "gathering the ranks' RNG states for a checkpoint")
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"name": train["lr_schedule"], "lr": lr_at(self.step, train)},
            "loader": self.loader.state_dict(),
            "step": self.step,
            "rng": {
                "torch": torch.get_rng_state(),
                "noise": self.noise_gen.get_state(),
                "cuda": torch.cuda.get_rng_state() if self.device.type == "cuda" else None,
                "ranks": ranks,  # each rank's own streams (dropout), rank 0's first
            },
            "early_stopping": None if self.early is None else self.early.state_dict(),
            "meta": self.meta,
        }

    def load_state_dict(self, ckpt: dict[str, Any], ctx: distributed.Context | None = None) -> None:
        """Resume from ``ckpt`` (weights go to the model's device; RNG and loader states are CPU tensors whatever
        device the checkpoint was mapped to). Rank r takes its own RNG streams from ``rng.ranks[r]``; a rank the
        checkpoint has none for (more processes than when it was written) starts a fresh stream, saying so."""
        ctx = ctx or distributed.Context()
        self.model.load_state_dict(ckpt["model"])
        self.ema.load_state_dict(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        rng = ckpt["rng"]
        ranks = rng.get("ranks") or [{"torch": rng["torch"], "cuda": rng["cuda"]}]
        if ctx.rank < len(ranks):
            own = ranks[ctx.rank]
            torch.set_rng_state(own["torch"].cpu())
            if self.device.type == "cuda" and own["cuda"] is not None:
                torch.cuda.set_rng_state(own["cuda"].cpu())
        else:
            torch.manual_seed(
                distributed.rank_seed(int(self.meta["spec"]["train"]["seed"]) + int(ckpt["step"]), ctx.rank)
            )
            print(
                f"[train] rank {ctx.rank}: the checkpoint holds RNG states of {len(ranks)} process(es); this rank's "
                "own draws (dropout) start a fresh stream",
                flush=True,
            )
        loader_state = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in ckpt["loader"].items()}
        self.loader.load_state_dict(loader_state)  # its generator too (as of the step, not the prefetch thread)
        self.noise_gen.set_state(rng["noise"].cpu())
        if self.early is not None and ckpt["early_stopping"] is not None:
            self.early.load_state_dict(ckpt["early_stopping"])
        self.step = int(ckpt["step"])
