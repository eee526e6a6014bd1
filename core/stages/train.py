"""Stage: train one replicate of a denoiser on an HDF5 dataset (or a latent cache), resumably.

    python -m core.stages.train --spec '<train spec JSON>' --data results/data/shapes12.h5 \
        --out-dir results/demo-a/models/unet-cfg/r0

A latent model (``space: latent``) trains on the latent cache of ``core.stages.encode_latents``: each step draws
z ~ q(z|x) from the cached posterior and multiplies it by the autoencoder's scale factor (flips then flip the
latent, an approximation of encoding the flipped image); the checkpoint's ``meta['latent']`` records the
autoencoder (path, SHA-256, scale factor) that decodes the samples.

Writes, under ``--out-dir``:
- ``state/latest.pt`` every ``checkpoint_every`` steps and ``state/step<N>.pt`` at each multiple and at the end:
  the full training state (``core.training.TrainState``), written atomically, and only when every weight is finite;
- ``state/train_log.csv``: one row per step (loss, LR, grad norm, img/s, peak memory, input wait);
- with ``train.early_stopping``: ``state/val_log.csv`` and ``state/best.pt``, the state at the lowest validation
  loss; training stops once ``patience`` evaluations in a row have not improved on it (or at ``steps``);
- on success, ``ckpt/step<N>.pt`` (and ``ckpt/best.pt``) and ``train_log.csv`` (``val_log.csv``): the published
  copies, read-only and sharing no storage with the live state.

Identity: a rerun continues from the live state only if it was made by the same spec and the same data (the
training file's ``content_sha256``); a state from another spec or other data is moved aside to
``state.stale-<hash>``. A corrupt state file is named, and training falls back to the newest readable one. The run
holds ``<out-dir>/.lock``: a second writer (another clone pointed at the same results) fails at once, naming the
holder. SIGTERM or SIGUSR1 (SLURM's warning before a time limit) checkpoint and exit with status 75. A non-finite
loss or gradient stops training with an error naming the step and the last checkpoint on disk.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core import costs, data, distributed, paths, progress, tboard, training
from core import models as networks
from core.config import precision_of
from core.diffusion import GaussianDiffusion
from core.models import EMA, UnreadableCheckpoint, build_model, load_checkpoint, save_checkpoint
from core.paths import checkpoint_steps, step_tag
from core.provenance import clone, code_fingerprint, code_version, exclusive, share, spec_hash

LOG_FIELDS = ["step", "loss", "lr", "grad_norm", "images_per_s", "elapsed_s", "peak_mem_mb", "input_wait_s"]
VAL_FIELDS = ["step", "val_loss", "best_step", "best_val_loss"]
EXIT_PREEMPTED = 75


def checkpoint_name(step: int | str) -> str:
    return f"{step_tag(step)}.pt"


class Preemption:
    """Remember SIGTERM/SIGUSR1 so the loop can checkpoint at the next step boundary."""

    def __init__(self) -> None:
        self.signal: int | None = None
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        self.signal = signum


def read_data_meta(data_path: str, latent: bool) -> dict[str, Any]:
    """What the model needs to know of its training file: classes, input shape, latent info, content identity."""
    key = "moments" if latent else "images"
    with data.open_split(data_path, "train", key) as f:
        shape = f[f"train/{key}"].shape
        meta: dict[str, Any] = {
            "class_names": data.class_names(f),
            "content_sha256": data.content_sha256(f, data_path),
            "provenance": json.loads(f.attrs.get("provenance", "{}")),
        }
        if latent:
            meta["in_channels"], meta["image_size"] = shape[1] // 2, int(shape[2])
            meta["latent"] = {
                "autoencoder": str(f.attrs["autoencoder"]),
                "autoencoder_sha256": str(f.attrs["autoencoder_sha256"]),
                "scale_factor": float(f.attrs["scale_factor"]),
                "latent_shape": [int(v) for v in f.attrs["latent_shape"]],
                "pixel_size": int(f.attrs["image_size"]),
                "pixel_channels": int(f.attrs["pixel_channels"]),
            }
        else:
            meta["in_channels"], meta["image_size"], meta["latent"] = int(shape[3]), int(shape[1]), None
    return meta


def newest_readable_state(state_dir: Path, move_aside: bool = True) -> tuple[Path, dict[str, Any]] | None:
    """``latest.pt``, or where it is unreadable the newest readable ``step<N>.pt`` (saying so, and moving the
    unreadable file aside to ``<name>.corrupt-<time>`` when ``move_aside``); None if there is none. Loaded on the
    CPU whatever the training device: RNG and loader states must stay CPU tensors (``TrainState.load_state_dict``
    moves the weights to the device)."""
    candidates = [state_dir / "latest.pt", *sorted(state_dir.glob("step*.pt"), reverse=True)]
    for path in candidates:
        if not path.exists():
            continue
        try:
            return path, load_checkpoint(path, map_location="cpu")
        except UnreadableCheckpoint as err:
            print(f"[train] {err}; falling back to an older state", flush=True)
            if move_aside:
                path.rename(path.with_name(f"{path.name}.corrupt-{int(time.time())}"))
    return None


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


def last_checkpoint_on_disk(state_dir: Path) -> str:
    saved = sorted(state_dir.glob("step*.pt"))
    return str(saved[-1]) if saved else "none yet (nothing was saved)"


def publish(out: Path, keep_steps: list[int], best: bool = False) -> None:
    """Publish the finished run's checkpoints (read-only second names of the kept states, which are replaced whole,
    never written in place: nothing done to the live state can reach them, and they take no disk of their own) and
    copies of its logs at the paths the workflow declares."""
    (out / "ckpt").mkdir(exist_ok=True)
    names = [checkpoint_name(s) for s in keep_steps] + (["best.pt"] if best else [])
    for name in names:  # second names of the kept states (never written in place: they take no extra disk)
        share(out / "state" / name, out / "ckpt" / name, read_only=True)
    for log in ["train_log.csv"] + (["val_log.csv"] if best else []):
        clone(out / "state" / log, out / log)


@dataclass
class Setup:
    """Everything a run is made of, built from its spec and its data (``setup``)."""

    state: training.TrainState
    net: torch.nn.Module
    diffusion: GaussianDiffusion
    levers: training.Levers
    recipe: training.BatchRecipe
    share: slice
    validation: training.Validation | None
    identity_hash: str


def setup(spec: dict[str, Any], data_path: str, device: torch.device, ctx: distributed.Context) -> Setup:
    """The model (with DDP and the levers), EMA, optimizer, loader, validation batch and the run's identity (the
    spec and the training data's content)."""
    train = spec["train"]
    latent = spec["space"] == "latent"
    rows_key = "moments" if latent else "images"
    data_meta = read_data_meta(data_path, latent)
    num_classes = len(data_meta["class_names"]) if spec["net"]["class_conditional"] else 0
    identity = {"spec_hash": spec_hash(spec), "data_sha256": data_meta["content_sha256"]}
    torch.manual_seed(int(train["seed"]))
    levers = training.Levers.from_spec(train)
    precision = precision_of(train)
    if spec.get("rehearsal") and device.type != "cuda" and levers.bf16:
        # bf16 autocast on a CPU without bf16 units is ~20× slower than fp32 (a 64² UNet step: 117 s against 6 s,
        # measured): a rehearsal on a CPU runs fp32 (its shapes and FLOPs are the same) and says so
        levers = dataclasses.replace(levers, bf16=False)
        precision = f"fp32 (a rehearsal on a CPU; configured: {precision})"
    model = build_model(spec, data_meta["image_size"], data_meta["in_channels"], num_classes)
    model = levers.apply(model.to(device), device)
    distributed.seed_rank(ctx, int(train["seed"]))  # the weights above are shared; each rank's dropout is its own
    net: torch.nn.Module = model
    if ctx.enabled:  # gradients averaged over ranks; the EMA and checkpoints use the unwrapped model
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    ema_spec = train["ema"]
    ema = EMA(model, float(ema_spec["decay"]), int(ema_spec["update_every"]), float(ema_spec["warmup_power"]))
    diffusion = GaussianDiffusion.from_spec(spec["diffusion"])
    data_gen = torch.Generator().manual_seed(int(train["seed"]) + 1)
    share = ctx.shard(int(train["batch_size"]))  # this rank reads only its rows of each global batch
    loader: data.ImageBatches | data.Prefetcher = data.ImageBatches(
        data_path, "train", int(train["batch_size"]), data_gen, key=rows_key, share=share
    )
    if train["prefetch"]:
        loader = data.Prefetcher(loader)
    scale = data_meta["latent"]["scale_factor"] if latent else None
    early, validation = None, None
    if "early_stopping" in train:
        early = training.EarlyStopping(train["early_stopping"])
        n_val = int(train["early_stopping"]["num_images"])
        validation = training.Validation(data_path, rows_key, n_val, diffusion, device, scale, num_classes, ctx)
    meta = {
        "spec": spec,
        "spec_hash": identity["spec_hash"],
        "identity": identity,
        "identity_hash": spec_hash(identity),
        "code_version": code_version(),
        "code": code_fingerprint("train"),
        "image_size": data_meta["image_size"],
        "in_channels": data_meta["in_channels"],
        "num_classes": num_classes,
        "latent": data_meta["latent"],
        "class_names": data_meta["class_names"],
        "data": {"path": str(data_path), **{k: data_meta[k] for k in ("content_sha256", "provenance")}},
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "world_size": ctx.world_size,
        "precision": precision,
    }
    noise_gen = torch.Generator(device=device).manual_seed(int(train["seed"]) + 2)
    state = training.TrainState(model, ema, levers.optimizer(model, train), loader, noise_gen, device, meta, early)
    recipe = training.BatchRecipe(scale, bool(train["hflip"]), num_classes, float(train["label_dropout"]))
    return Setup(
        state,
        levers.wrap(net),
        diffusion,
        levers,
        recipe,
        share,
        validation,
        meta["identity_hash"],
    )


def resume(s: Setup, out: Path, ctx: distributed.Context) -> None:
    """Continue from the newest readable live state if it has this run's identity; move another's aside."""
    state_dir = out / "state"
    found = newest_readable_state(state_dir, move_aside=ctx.is_main)
    distributed.barrier(ctx, "the barrier after reading the live state")
    if found is None:
        return
    path, ckpt = found
    made_by = ckpt["meta"].get("identity_hash", ckpt["meta"]["spec_hash"])
    if made_by == s.identity_hash:
        s.state.load_state_dict(ckpt, ctx)
        print(f"[train] resuming from {path} at step {s.state.step}", flush=True)
        return
    stale = out / f"state.stale-{made_by}"
    if ctx.is_main:
        why = "spec" if ckpt["meta"]["spec_hash"] != s.state.meta["spec_hash"] else "training data"
        print(f"[train] {path} was made by another {why}; moving the old state to {stale}", flush=True)
        shutil.rmtree(stale, ignore_errors=True)
        state_dir.rename(stale)
        state_dir.mkdir(parents=True)
    distributed.barrier(ctx, "the barrier after moving a stale state aside")


class Logs:
    """``train_log.csv`` (a row per step) and ``val_log.csv`` in the live state, restarted at the resumed step;
    a line on stdout every ``every`` steps and a progress line with rate and ETA every ``progress.INTERVAL_S``
    (``core.progress``, read by ``core.status``); with ``board`` (``core.tboard``) the same curves in TensorBoard
    every ``every`` steps. Only the main rank writes."""

    def __init__(
        self,
        state_dir: Path,
        step: int,
        early: bool,
        ctx: distributed.Context,
        every: int,
        cuda: bool,
        board: tboard.Board | None = None,
    ):
        self.main, self.every, self.cuda, self.board = ctx.is_main, every, cuda, board
        train_path = restart_log(state_dir / "train_log.csv", LOG_FIELDS, step) if self.main else Path(os.devnull)
        val_path = restart_log(state_dir / "val_log.csv", VAL_FIELDS, step) if self.main and early else None
        self.train = open(train_path, "a", newline="")  # noqa: SIM115 (closed by close())
        self.writer = csv.DictWriter(self.train, LOG_FIELDS)
        self.val_path = val_path or Path(os.devnull)
        self.t_start = self.t_window = time.time()
        self.window_images = 0
        self.first_step, self.window_start = step, step
        self.progress: progress.Progress | None = None

    def step(self, step: int, total: int, result: training.StepResult, lr: float, images: int, wait: float) -> None:
        now = time.time()
        self.window_images += images
        rate = self.window_images / max(now - self.t_window, 1e-9)
        if self.progress is None:
            self.progress = progress.Progress("train", total, "steps", start=self.first_step, enabled=self.main)
        self.progress.update(step)
        peak = torch.cuda.max_memory_allocated() / 2**20 if self.cuda else 0.0
        self.writer.writerow(
            {
                "step": step,
                "loss": f"{result.loss:.6g}",
                "lr": f"{lr:.6g}",
                "grad_norm": f"{result.grad_norm:.6g}",
                "images_per_s": f"{rate:.2f}",
                "elapsed_s": f"{now - self.t_start:.2f}",
                "peak_mem_mb": f"{peak:.1f}",
                "input_wait_s": f"{wait:.6f}",
            }
        )
        if self.main and (step % self.every == 0 or step == total):
            self.train.flush()
            print(f"[train] step {step}/{total} loss {result.loss:.4f} lr {lr:.2e} {rate:.1f} img/s", flush=True)
            if self.board is not None:
                step_s = (now - self.t_window) / max(step - self.window_start, 1)
                self.board.scalars(
                    step,
                    {
                        "train/loss": result.loss,
                        "train/lr": lr,
                        "train/grad_norm": result.grad_norm,
                        "train/step_time_s": step_s,
                        "train/images_per_s": rate,
                    },
                )
            self.t_window, self.window_images, self.window_start = now, 0, step

    def validation(self, step: int, val_loss: float, early: training.EarlyStopping) -> None:
        best = early.best
        with open(self.val_path, "a", newline="") as vh:
            csv.DictWriter(vh, VAL_FIELDS).writerow(
                {
                    "step": step,
                    "val_loss": f"{val_loss:.6g}",
                    "best_step": best["step"],
                    "best_val_loss": f"{best['val_loss']:.6g}",
                }
            )
        if self.main and self.board is not None:
            self.board.scalars(step, {"val/loss": val_loss, "val/best_loss": float(best["val_loss"])})
        if self.main:
            print(
                f"[train] step {step}: validation ε-loss {val_loss:.5f} (best {best['val_loss']:.5f} at step "
                f"{best['step']}, {best['bad']}/{early.patience} without improvement)",
                flush=True,
            )

    def flush(self) -> None:
        self.train.flush()
        if self.board is not None:
            self.board.flush()

    def __enter__(self) -> Logs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.train.close()
        if self.board is not None:
            self.board.close()


def run(
    spec: dict[str, Any],
    data_path: str,
    out_dir: str,
    device_name: str = "auto",
    collective_timeout_s: float = distributed.COLLECTIVE_TIMEOUT_S,
) -> None:
    out = Path(out_dir)
    device = distributed.device_for(device_name)
    ctx = distributed.init(device, collective_timeout_s)
    with exclusive(out / ".lock", f"model {out}") if ctx.is_main else contextlib.nullcontext():
        train_run(spec, data_path, out, device, ctx)


def train_run(spec: dict[str, Any], data_path: str, out: Path, device: torch.device, ctx: distributed.Context) -> None:
    """Set up, resume, loop over steps (batch, step, log, validate, checkpoint, stop when asked), publish."""
    train = spec["train"]
    state_dir = out / "state"
    state_dir.mkdir(parents=True, exist_ok=True)
    total_steps, keep_steps = int(train["steps"]), checkpoint_steps(train)
    s = setup(spec, data_path, device, ctx)
    state, early = s.state, s.state.early
    resume(s, out, ctx)
    board = tboard.open_board(out / paths.TENSORBOARD, state.step, ctx.is_main)
    logs = Logs(state_dir, state.step, early is not None, ctx, int(train["log_every"]), device.type == "cuda", board)
    preempt = Preemption()
    if ctx.is_main:
        print(
            f"[train] {spec['name']} replicate {spec['replicate']}: {state.meta['num_parameters'] / 1e6:.2f}M "
            f"parameters, {total_steps} steps, batch {train['batch_size']} over {ctx.world_size} process(es), "
            f"device {device}, precision {state.meta['precision']}, code {state.meta['code_version']}",
            flush=True,
        )

    def save(path: Path) -> None:
        ckpt = state.state_dict(train, ctx)  # every rank checks that the weights are finite; the main rank writes
        if ctx.is_main:
            save_checkpoint(path, ckpt)

    state.model.train()
    waiting = data.InputWait(device)
    meter = costs.Meter(
        "train",
        device,
        count_flops=bool(spec.get("rehearsal")),  # only a rehearsal counts (core.costs)
        name=f"{spec['study']}/{spec['name']}",
        replicate=spec["replicate"],
        parameters=state.meta["num_parameters"],
        input_shape=[state.meta["in_channels"], state.meta["image_size"], state.meta["image_size"]],
        batch_size=int(train["batch_size"]),
        world_size=ctx.world_size,
        precision=state.meta["precision"],
        rehearsal=spec.get("rehearsal"),
    )
    # FLOPs and saved activations of one step at this process's batch, counted on the meta device (core.costs)
    n_local = len(range(int(train["batch_size"]))[s.share])
    costs.count_step(
        meter,
        "step",
        # a fresh network of the same spec (not the training one, nor anything hooked into it)
        lambda: networks.build_model(
            spec, state.meta["image_size"], state.meta["in_channels"], state.meta["num_classes"]
        ),
        lambda b: costs.epsilon_loss(
            s.diffusion, b, state.meta["in_channels"], state.meta["image_size"], state.meta["num_classes"]
        ),
        n_local,
    )
    with logs:
        while state.step < total_steps:
            # ---- a step
            waiting.before_batch()
            rows, labels = state.loader.next()
            n_global = int(train["batch_size"])
            x0, y = training.make_batch(rows, labels, s.recipe, s.share, n_global, state.noise_gen, device)
            waiting.batch_ready()
            lr = training.lr_at(state.step, train)
            try:
                with meter.timed("step", int(x0.shape[0])):
                    result = training.train_step(
                        s.net,
                        state.model,
                        s.diffusion,
                        state.optimizer,
                        state.ema,
                        x0,
                        y,
                        n_global,
                        s.share,
                        state.noise_gen,
                        s.levers,
                        train["grad_clip"],
                        lr,
                        state.step,
                        ctx,
                        preempt.signal is not None,
                    )
            except training.NonFinite as err:
                raise training.NonFinite(
                    f"{err}; the last checkpoint on disk is {last_checkpoint_on_disk(state_dir)}"
                ) from None
            state.step += 1
            step = state.step
            logs.step(step, total_steps, result, lr, n_global, waiting.step_done())
            if board is not None and (step % int(train["log_every"]) == 0 or step == total_steps):
                with s.levers.autocast(device):
                    board.scalars(
                        step,
                        {"train/ema_loss": training.ema_loss(s.diffusion, state.ema.model, x0, y, step, train["seed"])},
                    )

            # ---- validation and early stopping
            improved = converged = False
            if s.validation is not None and early is not None and early.due(step, total_steps):
                weights = state.ema.model if early.weights == "ema" else state.model
                with s.levers.autocast(device):
                    val_loss = s.validation.loss(weights, int(train["batch_size"]))
                improved, converged = early.update(step, val_loss), early.converged
                logs.validation(step, val_loss, early)

            # ---- checkpoints: the live state, the kept steps, the best state
            if step % int(train["checkpoint_every"]) == 0 or step == total_steps or improved or converged:
                logs.flush()
                save(state_dir / "latest.pt")
                if step in keep_steps and ctx.is_main:
                    # a second name, read-only: latest.pt is replaced at its next save, never written in place
                    share(state_dir / "latest.pt", state_dir / checkpoint_name(step), read_only=True)
                if improved and ctx.is_main:
                    share(state_dir / "latest.pt", state_dir / "best.pt", read_only=True)
            if converged:
                if ctx.is_main:
                    print(
                        f"[train] early stopping at step {step}: no improvement of the validation loss in "
                        f"{early.patience} evaluations; best step {early.best['step']}",
                        flush=True,
                    )
                break

            # ---- preemption: checkpoint and exit 75 (SLURM retries; the next attempt resumes)
            if result.stop:
                logs.flush()
                save(state_dir / "latest.pt")
                print(
                    f"[train] rank {ctx.rank}: signal {preempt.signal} (or another rank's) at step {step}: "
                    f"checkpointed to {state_dir / 'latest.pt'}; exiting",
                    flush=True,
                )
                distributed.barrier(ctx, "the barrier after the preemption checkpoint")
                distributed.shutdown(ctx)
                sys.exit(EXIT_PREEMPTED)

    # ---- publish
    state.loader.close()
    if ctx.is_main:
        meter.write(paths.cost(str(out / "train")))
        publish(out, [s for s in keep_steps if s <= state.step], best=early is not None)
        print(f"[train] done in {time.time() - logs.t_start:.1f}s", flush=True)
    distributed.barrier(ctx, "the barrier after publishing the checkpoints")
    distributed.shutdown(ctx)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", required=True, help="train spec as JSON (core.plan.Plan.train_spec)")
    p.add_argument("--data", required=True, help="HDF5 dataset (or latent cache) with a 'train' split")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.add_argument(
        "--collective-timeout",
        type=float,
        default=distributed.COLLECTIVE_TIMEOUT_S,
        help="seconds a collective or barrier may wait for the other ranks before the job fails naming them",
    )
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
    run(json.loads(args.spec), args.data, args.out_dir, args.device, args.collective_timeout)


if __name__ == "__main__":
    main()
