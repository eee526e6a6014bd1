"""Stage: train one denoiser on an HDF5 dataset, resumably.

    python -m core.train --spec '<model spec JSON>' --data results/data/shapes32.h5 \
        --out-dir results/demo-a/models/unet

Writes, under ``--out-dir``:
- ``state/latest.pt`` every ``checkpoint_every`` steps and ``state/step<N>.pt`` at each multiple and at the
  end: full training state (model, EMA, optimizer, LR schedule, step, RNG states), written atomically;
- ``state/train_log.csv``: one row per step (loss, LR, grad norm, img/s, peak memory);
- on success, ``ckpt/step<N>.pt`` and ``train_log.csv``: the published copies (hard links) the workflow uses.

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

from core import data
from core.config import checkpoint_steps, step_tag
from core.diffusion import GaussianDiffusion
from core.models import EMA, build_model, load_checkpoint, save_checkpoint
from core.provenance import code_version, spec_hash

LOG_FIELDS = ["step", "loss", "lr", "grad_norm", "images_per_s", "elapsed_s", "peak_mem_mb"]
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


class Preemption:
    """Remember SIGTERM/SIGUSR1 so the loop can checkpoint at the next step boundary."""

    def __init__(self) -> None:
        self.signal: int | None = None
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        self.signal = signum


def _pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train(spec: dict[str, Any], data_path: str, out_dir: str, device_name: str = "auto") -> None:
    cfg = spec["train"]
    out = Path(out_dir)
    state_dir = out / "state"
    state_dir.mkdir(parents=True, exist_ok=True)
    device = _pick_device(device_name)
    total_steps = int(cfg["steps"])
    keep_steps = checkpoint_steps(cfg)
    h = spec_hash(spec)

    with data.open_images(data_path, "train") as f:
        names = data.class_names(f)
        image_size = int(f["train/images"].shape[1])
        data_prov = json.loads(f.attrs.get("provenance", "{}"))
    num_classes = len(names) if spec["net"].get("class_conditional", False) else 0

    torch.manual_seed(int(cfg["seed"]))
    model = build_model(spec, image_size, 3, num_classes).to(device)
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
    )
    diffusion = GaussianDiffusion.from_spec(spec["diffusion"])
    data_gen = torch.Generator().manual_seed(int(cfg["seed"]) + 1)
    noise_gen = torch.Generator(device=device).manual_seed(int(cfg["seed"]) + 2)
    loader = data.ImageBatches(data_path, "train", int(cfg["batch_size"]), data_gen)
    meta = {
        "spec": spec,
        "spec_hash": h,
        "code_version": code_version(),
        "image_size": image_size,
        "in_channels": 3,
        "num_classes": num_classes,
        "class_names": names,
        "data": {"path": str(data_path), "provenance": data_prov},
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }

    step = 0
    latest = state_dir / "latest.pt"
    if latest.exists():
        ckpt = load_checkpoint(latest, map_location=device)
        if ckpt["meta"]["spec_hash"] != h:
            stale = out / f"state.stale-{ckpt['meta']['spec_hash']}"
            print(f"[train] {latest} was made by another spec; moving the old state to {stale}", flush=True)
            shutil.rmtree(stale, ignore_errors=True)
            state_dir.rename(stale)
            state_dir.mkdir(parents=True)
        else:
            model.load_state_dict(ckpt["model"])
            ema.load_state_dict(ckpt["ema"])
            optimizer.load_state_dict(ckpt["optimizer"])
            loader.load_state_dict(ckpt["loader"])
            torch.set_rng_state(ckpt["rng"]["torch"])
            data_gen.set_state(ckpt["rng"]["data"])
            noise_gen.set_state(ckpt["rng"]["noise"].to(noise_gen.get_state().device))
            if device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state(ckpt["rng"]["cuda"])
            step = int(ckpt["step"])
            print(f"[train] resuming from {latest} at step {step}", flush=True)

    log_path = state_dir / "train_log.csv"
    rows: list[dict[str, str]] = []
    if step > 0 and log_path.exists():
        with open(log_path, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= step]
    with open(log_path, "w", newline="") as fh:
        csv.DictWriter(fh, LOG_FIELDS).writeheader()
        csv.DictWriter(fh, LOG_FIELDS).writerows(rows)

    def save(path: Path) -> None:
        rng = {
            "torch": torch.get_rng_state(),
            "data": data_gen.get_state(),
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
            "meta": meta,
        }
        save_checkpoint(path, state)

    preempt = Preemption()
    label_dropout = float(cfg.get("label_dropout", 0.0))
    hflip = bool(cfg.get("hflip", False))
    grad_clip = cfg.get("grad_clip")
    log_every = int(cfg.get("log_every", 50))
    print(
        f"[train] {spec.get('name', '?')}: {meta['num_parameters'] / 1e6:.2f}M parameters, {total_steps} steps, "
        f"batch {cfg['batch_size']}, device {device}, code {meta['code_version']}",
        flush=True,
    )
    model.train()
    t_start = t_window = time.time()
    window_images = 0
    with open(log_path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, LOG_FIELDS)
        while step < total_steps:
            images, labels = loader.next()
            x0 = data.to_model_range(images).to(device, non_blocking=True)
            if hflip:
                flip = torch.rand(x0.shape[0], generator=noise_gen, device=device) < 0.5
                x0 = torch.where(flip[:, None, None, None], x0.flip(3), x0)
            y = None
            if num_classes:
                y = torch.as_tensor(labels, device=device)
                drop = torch.rand(y.shape[0], generator=noise_gen, device=device) < label_dropout
                y = torch.where(drop, torch.full_like(y, num_classes), y)
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = diffusion.training_loss(model, x0, y, generator=noise_gen)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite loss ({loss.item()}) at step {step + 1}; the last good checkpoint is {latest}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float(grad_clip) if grad_clip else math.inf)
            optimizer.step()
            step += 1
            ema.update(model, step)
            window_images += x0.shape[0]
            now = time.time()
            peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0
            writer.writerow(
                {
                    "step": step,
                    "loss": f"{loss.item():.6g}",
                    "lr": f"{lr:.6g}",
                    "grad_norm": f"{float(norm):.6g}",
                    "images_per_s": f"{window_images / max(now - t_window, 1e-9):.2f}",
                    "elapsed_s": f"{now - t_start:.2f}",
                    "peak_mem_mb": f"{peak:.1f}",
                }
            )
            if step % log_every == 0 or step == total_steps:
                fh.flush()
                print(
                    f"[train] step {step}/{total_steps} loss {loss.item():.4f} lr {lr:.2e} "
                    f"{window_images / max(now - t_window, 1e-9):.1f} img/s",
                    flush=True,
                )
                t_window, window_images = now, 0
            if step % int(cfg["checkpoint_every"]) == 0 or step == total_steps:
                fh.flush()
                save(latest)
                if step in keep_steps:
                    link_or_copy(latest, state_dir / checkpoint_name(step))
            if preempt.signal is not None:
                fh.flush()
                save(latest)
                print(
                    f"[train] signal {preempt.signal} at step {step}: checkpointed to {latest}; exiting",
                    flush=True,
                )
                sys.exit(EXIT_PREEMPTED)
    loader.close()
    publish(out, keep_steps)
    print(f"[train] done in {time.time() - t_start:.1f}s", flush=True)


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (a copy where the filesystem has no hard links), replacing ``dst``."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def publish(out: Path, keep_steps: list[int]) -> None:
    """Hard-link the finished run's checkpoints and log to the paths the workflow declares."""
    (out / "ckpt").mkdir(exist_ok=True)
    for s in keep_steps:
        link_or_copy(out / "state" / checkpoint_name(s), out / "ckpt" / checkpoint_name(s))
    shutil.copyfile(out / "state" / "train_log.csv", out / "train_log.csv.tmp")
    os.replace(out / "train_log.csv.tmp", out / "train_log.csv")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", required=True, help="model spec as JSON (resolved from config.yaml)")
    p.add_argument("--data", required=True, help="HDF5 dataset with a 'train' split")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    train(json.loads(args.spec), args.data, args.out_dir, args.device)


if __name__ == "__main__":
    main()
