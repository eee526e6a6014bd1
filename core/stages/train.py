"""Stage: train one denoiser on an HDF5 dataset, resumably.

    python -m core.stages.train --spec '<model spec JSON>' --data results/data/shapes32.h5 \
        --out-dir results/demo-a/models/unet

A latent model (``space: latent``) trains on the latent cache of ``core.stages.encode_latents`` instead of images:
each step draws z ~ q(z|x) from the cached posterior and multiplies it by the autoencoder's scale factor;
horizontal flips then flip the latent (an approximation of encoding the flipped image). The checkpoint's
``meta['latent']`` records the autoencoder (path, SHA-256, scale factor) that decodes the samples.

Writes, under ``--out-dir``:
- ``state/latest.pt`` every ``checkpoint_every`` steps and ``state/step<N>.pt`` at each multiple and at the
  end: full training state (model, EMA, optimizer, LR schedule, step, RNG states), written atomically;
- ``state/train_log.csv``: one row per step (loss, LR, grad norm, img/s, peak memory, input wait: see
  ``core.data.InputWait``);
- with ``train.early_stopping``: ``state/val_log.csv`` (validation ε-loss every ``every`` steps) and
  ``state/best.pt``, the state at the lowest validation loss so far; training stops once ``patience``
  evaluations in a row have not improved on it (or at ``steps``);
- on success, ``ckpt/step<N>.pt`` (``ckpt/best.pt`` too with early stopping) and ``train_log.csv``: the
  published copies (hard links) the workflow uses.

The validation ε-loss is deterministic: the first ``num_images`` images of the ``val`` split, with timesteps
and noise drawn once from a fixed seed, so successive evaluations differ only by the weights (the EMA weights,
which are the ones sampled, unless ``weights: model``).

A rerun continues from ``state/latest.pt`` when it was made by the same spec (same hash); a state from a
different spec is moved aside to ``state.stale-<hash>``. SIGTERM or SIGUSR1 (SLURM's warning before a time
limit) makes the loop checkpoint and exit with status 75 so the job can be retried. A non-finite loss stops
training with an error naming the step; the last good checkpoint is kept.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch

from core import data, distributed
from core.config import checkpoint_steps, step_tag
from core.diffusion import GaussianDiffusion
from core.models import EMA, build_model, load_checkpoint, save_checkpoint
from core.provenance import code_version, spec_hash

LOG_FIELDS = ["step", "loss", "lr", "grad_norm", "images_per_s", "elapsed_s", "peak_mem_mb", "input_wait_s"]
VAL_FIELDS = ["step", "val_loss", "best_step", "best_val_loss"]
EXIT_PREEMPTED = 75


def checkpoint_name(step: int) -> str:
    return f"{step_tag(step)}.pt"


def lr_at(step: int, train: dict[str, Any]) -> float:
    """Linear warm-up, then constant or cosine annealing to ``min_lr`` at the last step."""
    lr, warmup = float(train["lr"]), int(train.get("warmup_steps", 0))
    if step < warmup:
        return lr * (step + 1) / warmup
    if train.get("lr_schedule", "constant") == "cosine":
        progress = (step - warmup) / max(1, int(train["steps"]) - warmup)
        min_lr = float(train.get("min_lr", 0.0))
        return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))
    return lr


def speed_levers(cfg: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The speed options of ``train`` (bench/RESULTS.md measures each): bf16 autocast of the forward pass
    (weights, gradients, optimizer state and EMA stay fp32), TF32 matmuls and convolutions (CUDA; this process
    only — metrics run elsewhere with TF32 off), channels-last memory format, fused AdamW, ``torch.compile``."""
    bf16 = cfg.get("precision", "fp32") == "bf16"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(cfg.get("tf32", False))

    def autocast() -> Any:
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    return {
        "autocast": autocast,
        "channels_last": bool(cfg.get("channels_last", False)),
        "fused_adamw": bool(cfg.get("fused_adamw", False)),
        "compile": bool(cfg.get("compile", False)),
    }


class Validation:
    """The fixed validation batch of early stopping: x0, labels, timesteps and noise drawn once (seeded)."""

    def __init__(
        self,
        data_path: str,
        key: str,
        num_images: int,
        diffusion: GaussianDiffusion,
        device: torch.device,
        scale_factor: float | None,
        num_classes: int,
    ) -> None:
        with data.open_split(data_path, "val", key) as f:
            n = f[f"val/{key}"].shape[0]
            if n == 0:
                raise ValueError(f"{data_path}: the val split is empty; train.early_stopping needs validation images")
            rows = torch.as_tensor(f[f"val/{key}"][: min(num_images, n)])
            labels = torch.as_tensor(f["val/labels"][: len(rows)]).long()
        gen = torch.Generator().manual_seed(12345)
        if scale_factor is not None:  # latents: one fixed draw from the posterior
            mean, logvar = rows.float().chunk(2, dim=1)
            self.x0 = (mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=gen)) * scale_factor
        else:
            self.x0 = data.to_model_range(rows)
        self.y = labels if num_classes else None
        self.t = torch.randint(0, diffusion.num_timesteps, (len(rows),), generator=gen)
        self.noise = torch.randn(self.x0.shape, generator=gen)
        self.diffusion, self.device = diffusion, device

    @torch.no_grad()
    def loss(self, model: torch.nn.Module, batch_size: int) -> float:
        was_training = model.training
        model.eval()
        total = 0.0
        for i in range(0, len(self.x0), batch_size):
            sl = slice(i, i + batch_size)
            y = None if self.y is None else self.y[sl].to(self.device)
            x0, t, noise = (v[sl].to(self.device) for v in (self.x0, self.t, self.noise))
            total += float(self.diffusion.training_loss(model, x0, y, t=t, noise=noise)) * len(x0)
        model.train(was_training)
        return total / len(self.x0)


class Preemption:
    """Remember SIGTERM/SIGUSR1 so the loop can checkpoint at the next step boundary."""

    def __init__(self) -> None:
        self.signal: int | None = None
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        self.signal = signum


def run(spec: dict[str, Any], data_path: str, out_dir: str, device_name: str = "auto") -> None:
    cfg = spec["train"]
    out = Path(out_dir)
    state_dir = out / "state"
    state_dir.mkdir(parents=True, exist_ok=True)
    device = distributed.device_for(device_name)
    ctx = distributed.init(device)
    share = ctx.shard(int(cfg["batch_size"]))
    total_steps = int(cfg["steps"])
    keep_steps = checkpoint_steps(cfg)
    h = spec_hash(spec)

    latent = spec.get("space", "pixel") == "latent"
    rows_key = "moments" if latent else "images"
    with data.open_split(data_path, "train", rows_key) as f:
        names = data.class_names(f)
        data_prov = json.loads(f.attrs.get("provenance", "{}"))
        shape = f[f"train/{rows_key}"].shape
        if latent:
            in_channels, image_size = shape[1] // 2, int(shape[2])
            latent_info = {
                "autoencoder": str(f.attrs["autoencoder"]),
                "autoencoder_sha256": str(f.attrs["autoencoder_sha256"]),
                "scale_factor": float(f.attrs["scale_factor"]),
                "latent_shape": [int(v) for v in f.attrs["latent_shape"]],
                "pixel_size": int(f.attrs["image_size"]),
            }
        else:
            in_channels, image_size, latent_info = 3, int(shape[1]), None
    num_classes = len(names) if spec["net"].get("class_conditional", False) else 0

    torch.manual_seed(int(cfg["seed"]))
    model = build_model(spec, image_size, in_channels, num_classes).to(device)
    levers = speed_levers(cfg, device)
    if levers["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    net = model
    if ctx.enabled:  # gradients averaged over ranks; the EMA and checkpoints use the unwrapped model
        ids = [device.index] if device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if levers["compile"]:
        net = torch.compile(net)
    ema_cfg = cfg["ema"]
    ema = EMA(
        model, float(ema_cfg["decay"]), int(ema_cfg.get("update_every", 1)), float(ema_cfg.get("warmup_power", 2 / 3))
    )
    opt_cfg = cfg.get("optimizer", {})
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=float(cfg["lr"]),
        betas=tuple(opt_cfg.get("betas", (0.9, 0.999))),
        weight_decay=float(opt_cfg.get("weight_decay", 0.0)),
        **({"fused": True} if levers["fused_adamw"] else {}),
    )
    diffusion = GaussianDiffusion.from_spec(spec["diffusion"])
    data_gen = torch.Generator().manual_seed(int(cfg["seed"]) + 1)
    noise_gen = torch.Generator(device=device).manual_seed(int(cfg["seed"]) + 2)
    loader: data.ImageBatches | data.Prefetcher = data.ImageBatches(
        data_path, "train", int(cfg["batch_size"]), data_gen, key=rows_key
    )
    if cfg.get("prefetch", True):
        loader = data.Prefetcher(loader)
    early = cfg.get("early_stopping")
    validation = None
    if early:
        scale = latent_info["scale_factor"] if latent else None
        validation = Validation(data_path, rows_key, int(early["num_images"]), diffusion, device, scale, num_classes)
    best = {"step": 0, "val_loss": math.inf, "bad": 0}
    meta = {
        "spec": spec,
        "spec_hash": h,
        "code_version": code_version(),
        "image_size": image_size,
        "in_channels": in_channels,
        "num_classes": num_classes,
        "latent": latent_info,
        "class_names": names,
        "data": {"path": str(data_path), "provenance": data_prov},
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "world_size": ctx.world_size,
    }

    step = 0
    latest = state_dir / "latest.pt"
    if latest.exists():
        ckpt = load_checkpoint(latest, map_location=device)
        if ckpt["meta"]["spec_hash"] != h:
            stale = out / f"state.stale-{ckpt['meta']['spec_hash']}"
            distributed.barrier(ctx)  # every rank has read latest.pt before the main rank moves it
            if ctx.is_main:
                print(f"[train] {latest} was made by another spec; moving the old state to {stale}", flush=True)
                shutil.rmtree(stale, ignore_errors=True)
                state_dir.rename(stale)
                state_dir.mkdir(parents=True)
            distributed.barrier(ctx)
        else:
            model.load_state_dict(ckpt["model"])
            ema.load_state_dict(ckpt["ema"])
            optimizer.load_state_dict(ckpt["optimizer"])
            torch.set_rng_state(ckpt["rng"]["torch"])
            ckpt["loader"].setdefault("generator", ckpt["rng"].get("data"))  # checkpoints before 2026-12-01
            loader.load_state_dict(ckpt["loader"])  # its generator too (as of the step, not the prefetch thread)
            noise_gen.set_state(ckpt["rng"]["noise"].to(noise_gen.get_state().device))
            if device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state(ckpt["rng"]["cuda"])
            step = int(ckpt["step"])
            best = ckpt.get("early_stopping", best)
            print(f"[train] resuming from {latest} at step {step}", flush=True)

    # only the main rank writes files; the others log to /dev/null
    log_path = restart_log(state_dir / "train_log.csv", LOG_FIELDS, step) if ctx.is_main else Path(os.devnull)
    val_path = restart_log(state_dir / "val_log.csv", VAL_FIELDS, step) if ctx.is_main and early else Path(os.devnull)

    def save(path: Path) -> None:
        if not ctx.is_main:
            return
        rng = {
            "torch": torch.get_rng_state(),
            "noise": noise_gen.get_state(),
            "cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None,
        }
        state = {
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": {"name": cfg.get("lr_schedule", "constant"), "lr": lr_at(step, cfg)},
            "loader": loader.state_dict(),
            "step": step,
            "rng": rng,
            "early_stopping": dict(best),
            "meta": meta,
        }
        save_checkpoint(path, state)

    preempt = Preemption()
    label_dropout = float(cfg.get("label_dropout", 0.0))
    hflip = bool(cfg.get("hflip", False))
    grad_clip = cfg.get("grad_clip")
    log_every = int(cfg.get("log_every", 50))
    if ctx.is_main:
        print(
            f"[train] {spec.get('name', '?')}: {meta['num_parameters'] / 1e6:.2f}M parameters, {total_steps} steps, "
            f"batch {cfg['batch_size']} over {ctx.world_size} process(es), device {device}, "
            f"code {meta['code_version']}",
            flush=True,
        )
    model.train()
    t_start = t_window = time.time()
    window_images = 0
    waiting = data.InputWait(device)
    with open(log_path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, LOG_FIELDS)
        while step < total_steps:
            # Every rank draws the whole global batch's randomness (so the update equals one process's) and
            # keeps its share ``share`` of the rows.
            waiting.before_batch()
            rows, labels = loader.next()
            n_global = len(rows)
            rows, labels = rows[share], labels[share]
            if latent:  # a fresh z ~ q(z|x) from the cached posterior, scaled to unit variance
                mean, logvar = torch.as_tensor(rows).to(device, non_blocking=True).chunk(2, dim=1)
                eps = torch.randn((n_global, *mean.shape[1:]), generator=noise_gen, device=device)[share]
                x0 = (mean + torch.exp(0.5 * logvar) * eps) * latent_info["scale_factor"]
            else:
                x0 = data.to_model_range(rows, device)
            if hflip:
                flip = (torch.rand(n_global, generator=noise_gen, device=device) < 0.5)[share]
                x0 = torch.where(flip[:, None, None, None], x0.flip(3), x0)
            y = None
            if num_classes:
                y = torch.as_tensor(labels, device=device)
                drop = (torch.rand(n_global, generator=noise_gen, device=device) < label_dropout)[share]
                y = torch.where(drop, torch.full_like(y, num_classes), y)
            waiting.batch_ready()
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            t = torch.randint(0, diffusion.num_timesteps, (n_global,), device=device, generator=noise_gen)[share]
            noise = torch.randn((n_global, *x0.shape[1:]), device=device, generator=noise_gen)[share]
            if levers["channels_last"]:
                x0 = x0.contiguous(memory_format=torch.channels_last)
            with levers["autocast"]():
                loss = diffusion.training_loss(net, x0, y, t=t, noise=noise)
            # one collective per step: the global mean loss, and whether any rank was told to stop
            flag = 0.0 if preempt.signal is None else 1.0
            agreed = distributed.all_mean(ctx, torch.stack([loss.detach().float(), torch.tensor(flag, device=device)]))
            loss_value, stop = float(agreed[0]), float(agreed[1]) > 0
            if not math.isfinite(loss_value):
                raise FloatingPointError(
                    f"non-finite loss ({loss_value}) at step {step + 1}; the last good checkpoint is {latest}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float(grad_clip) if grad_clip else math.inf)
            optimizer.step()
            step += 1
            ema.update(model, step)
            input_wait = waiting.step_done()
            window_images += n_global
            now = time.time()
            peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0
            writer.writerow(
                {
                    "step": step,
                    "loss": f"{loss_value:.6g}",
                    "lr": f"{lr:.6g}",
                    "grad_norm": f"{float(norm):.6g}",
                    "images_per_s": f"{window_images / max(now - t_window, 1e-9):.2f}",
                    "elapsed_s": f"{now - t_start:.2f}",
                    "peak_mem_mb": f"{peak:.1f}",
                    "input_wait_s": f"{input_wait:.6f}",
                }
            )
            if ctx.is_main and (step % log_every == 0 or step == total_steps):
                fh.flush()
                print(
                    f"[train] step {step}/{total_steps} loss {loss_value:.4f} lr {lr:.2e} "
                    f"{window_images / max(now - t_window, 1e-9):.1f} img/s",
                    flush=True,
                )
                t_window, window_images = now, 0
            improved = converged = False
            if validation is not None and (step % int(early["every"]) == 0 or step == total_steps):
                weights = ema.model if early.get("weights", "ema") == "ema" else model
                with levers["autocast"]():
                    val_loss = validation.loss(weights, int(cfg["batch_size"]))
                if not math.isfinite(val_loss):
                    raise FloatingPointError(f"non-finite validation loss ({val_loss}) at step {step}")
                improved = val_loss < best["val_loss"] - float(early.get("min_delta", 0.0))
                best = {"step": step, "val_loss": val_loss, "bad": 0} if improved else {**best, "bad": best["bad"] + 1}
                converged = best["bad"] >= int(early["patience"])
                with open(val_path, "a", newline="") as vh:
                    csv.DictWriter(vh, VAL_FIELDS).writerow(
                        {
                            "step": step,
                            "val_loss": f"{val_loss:.6g}",
                            "best_step": best["step"],
                            "best_val_loss": f"{best['val_loss']:.6g}",
                        }
                    )
                if ctx.is_main:
                    print(
                        f"[train] step {step}: validation ε-loss {val_loss:.5f} (best {best['val_loss']:.5f} at "
                        f"step {best['step']}, {best['bad']}/{early['patience']} without improvement)",
                        flush=True,
                    )
            if step % int(cfg["checkpoint_every"]) == 0 or step == total_steps or improved or converged:
                fh.flush()
                save(latest)
                if step in keep_steps and ctx.is_main:
                    link_or_copy(latest, state_dir / checkpoint_name(step))
                if improved and ctx.is_main:
                    link_or_copy(latest, state_dir / "best.pt")
            if converged:
                if ctx.is_main:
                    print(
                        f"[train] early stopping at step {step}: no improvement of the validation loss in "
                        f"{early['patience']} evaluations; best step {best['step']}",
                        flush=True,
                    )
                break
            if stop:
                fh.flush()
                save(latest)
                print(
                    f"[train] rank {ctx.rank}: signal {preempt.signal} (or another rank's) at step {step}: "
                    f"checkpointed to {latest}; exiting",
                    flush=True,
                )
                distributed.barrier(ctx)
                distributed.shutdown(ctx)
                sys.exit(EXIT_PREEMPTED)
    loader.close()
    if ctx.is_main:
        publish(out, [s for s in keep_steps if s <= step], best=early is not None)
        print(f"[train] done in {time.time() - t_start:.1f}s", flush=True)
    distributed.barrier(ctx)
    distributed.shutdown(ctx)


def restart_log(path: Path, fields: list[str], step: int) -> Path:
    """Rewrite a CSV log keeping only its rows up to ``step`` (those of the state being resumed); a fresh run
    (step 0) starts it empty. Returns ``path``."""
    rows: list[dict[str, str]] = []
    if step > 0 and path.exists():
        with open(path, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= step]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (a copy where the filesystem has no hard links), replacing ``dst``."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def publish(out: Path, keep_steps: list[int], best: bool = False) -> None:
    """Hard-link the finished run's checkpoints and logs to the paths the workflow declares."""
    (out / "ckpt").mkdir(exist_ok=True)
    names = [checkpoint_name(s) for s in keep_steps] + (["best.pt"] if best else [])
    for name in names:
        link_or_copy(out / "state" / name, out / "ckpt" / name)
    for log in ["train_log.csv"] + (["val_log.csv"] if best else []):
        shutil.copyfile(out / "state" / log, out / f"{log}.tmp")
        os.replace(out / f"{log}.tmp", out / log)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", required=True, help="model spec as JSON (resolved from config.yaml)")
    p.add_argument("--data", required=True, help="HDF5 dataset (or latent cache) with a 'train' split")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.add_argument(
        "--compile-cache",
        default="",
        help="folder for torch.compile's Inductor cache (train.compile), kept across jobs and restarts; "
        "TORCHINDUCTOR_CACHE_DIR wins where it is set",
    )
    args = p.parse_args(argv)
    if args.compile_cache:
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(args.compile_cache).resolve()))
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    run(json.loads(args.spec), args.data, args.out_dir, args.device)


if __name__ == "__main__":
    main()
