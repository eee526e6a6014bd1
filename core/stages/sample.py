"""Stage: draw one replicate's samples from a checkpoint into an HDF5 file (``core.data``'s layout, split ``samples``).

    python -m core.stages.sample --checkpoint results/demo-a/models/unet-cfg/r0/ckpt/step0000800.pt \
        --spec '<sample spec JSON>' --out results/demo-a/samples/DDIM/r0/step0000800.h5

Samples are written batch by batch into ``<out>.partial`` (held under the lock ``.<name>.lock``: a second writer
fails at once, naming the holder); the root attribute ``num_done`` advances only after a batch is on disk. A rerun
with the same settings continues from ``num_done``; each batch draws from its own generator seeded by (seed, batch
index), so a resumed file equals an uninterrupted one. A partial file made by other settings, or unreadable, is
moved aside (never deleted). A batch with a non-finite value fails the job naming the batch and the checkpoint;
only a complete file is sealed (checksums of its images and labels, ``core.data.seal``) and renamed to ``<out>``.

Conditional models get class-balanced labels (i mod num_classes). Latent models sample latents (never clipped) and
the autoencoder given by ``--autoencoder`` (checked against the SHA-256 the model recorded) decodes z/scale_factor
to pixels before anything is written. Under ``torchrun`` rank r draws batches r, r + W, … into its own shard and the
main rank assembles ``<out>`` in batch order: the same file as one process writes. The first ``trajectory_images``
images are also stored at ``trajectory_points`` timesteps in ``/trajectory/images`` (K, P, H, W, C) with
``/trajectory/timesteps`` (−1 marks the final x₀).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from core import costs, data, distributed, paths, sampling
from core.diffusion import GaussianDiffusion
from core.models import load_autoencoder, load_denoiser
from core.progress import Progress
from core.provenance import code_fingerprint, code_version, exclusive, file_sha256, now_iso, spec_hash


def _decoder(
    checkpoint: str,
    latent: dict[str, Any] | None,
    autoencoder: str | None,
    sampler: dict[str, Any],
    device: torch.device,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Identity for pixel models; for latent models, the checked autoencoder's decoder of z / scale_factor."""
    if latent is None:
        if autoencoder:
            raise ValueError(f"{checkpoint} is a pixel-space model; do not pass --autoencoder")
        return lambda x: x
    if sampler["clip_denoised"]:
        raise ValueError(
            f"{checkpoint} is a latent model: sampler.clip_denoised must be false (latents are not bounded by ±1; "
            "clipping them truncates the distribution)"
        )
    if not autoencoder:
        raise ValueError(f"{checkpoint} is a latent model; pass --autoencoder (trained on {latent['autoencoder']})")
    digest = file_sha256(autoencoder)
    if digest != latent["autoencoder_sha256"]:
        raise ValueError(
            f"autoencoder {autoencoder} has SHA-256 {digest[:12]}…, but {checkpoint} was trained on latents of "
            f"{latent['autoencoder']} ({latent['autoencoder_sha256'][:12]}…); retrain the model or use that file"
        )
    vae, _ = load_autoencoder(autoencoder, str(device))
    scale = float(latent["scale_factor"])

    @torch.no_grad()
    def decode(z: torch.Tensor) -> torch.Tensor:
        return vae.decode(z / scale)

    return decode


def move_aside(path: Path, why: str) -> None:
    aside = path.with_name(f"{path.name}.aside-{int(time.time())}")
    print(f"[sample] {path} {why}: moved aside to {aside}", flush=True)
    path.rename(aside)


def run(
    checkpoint: str, spec: dict[str, Any], out: str, device_name: str = "auto", autoencoder: str | None = None
) -> None:
    device = distributed.device_for(device_name)
    ctx = distributed.init(device)
    out_path = Path(out)
    lock = out_path.with_name(f".{out_path.name}.lock")
    with exclusive(lock, f"sample file {out}") if ctx.is_main else contextlib.nullcontext():
        _sample(checkpoint, spec, out_path, device, ctx, autoencoder or None)


def _sample(
    checkpoint: str,
    spec: dict[str, Any],
    out: Path,
    device: torch.device,
    ctx: distributed.Context,
    autoencoder: str | None,
) -> None:
    sampler = spec["sampler"]
    model, meta = load_denoiser(checkpoint, use_ema=bool(spec["use_ema"]), device=str(device))
    guidance = float(spec["guidance_scale"])
    if meta["num_classes"] == 0 and guidance != 1.0:
        raise ValueError(
            f"guidance_scale = {guidance} needs a class-conditional model, but {checkpoint} is unconditional "
            "(set net.class_conditional: true on its model, or drop guidance_scale from the experiment)"
        )
    diffusion = GaussianDiffusion.from_spec(meta["spec"]["diffusion"])
    n, batch = int(spec["num_samples"]), int(spec["batch_size"])
    size, seed = int(meta["image_size"]), int(spec["seed"])
    latent = meta["latent"]
    decode = _decoder(checkpoint, latent, autoencoder, sampler, device)
    pixel_size = int(latent["pixel_size"]) if latent else size
    channels = int(latent["pixel_channels"]) if latent else int(meta["in_channels"])
    num_classes = int(meta["num_classes"])
    labels_all = np.arange(n) % num_classes if num_classes else np.full(n, -1)
    record_images = min(int(spec["trajectory_images"]), batch, n)
    record_points = int(spec["trajectory_points"]) if record_images else 0
    identity = {
        "spec": spec,
        "checkpoint": os.path.abspath(checkpoint),
        "checkpoint_step": int(meta["step"]),
        "model_identity": meta.get("identity_hash", meta["spec_hash"]),
    }
    prov = {
        "code_version": code_version(),
        "code": code_fingerprint("sample"),
        "model_code": meta.get("code"),
        "experiment": spec["experiment"],
        "replicate": spec["replicate"],
        "model_replicate": spec["model_replicate"],
        "checkpoint": os.path.abspath(checkpoint),
        "checkpoint_step": int(meta["step"]),
        "model_spec": meta["spec"],
        "training_precision": meta.get("precision"),  # as the model trained (a CPU rehearsal: fp32)
        "model_identity": identity["model_identity"],
        "model_code_version": meta["code_version"],
        "sampler": sampler["name"],
        "sampler_label": sampling.label(sampler),
        "steps": sampler["steps"],
        "spacing": sampler["spacing"],
        "guidance_scale": guidance,
        "seed": seed,
        "use_ema": bool(spec["use_ema"]),
        "space": "latent" if latent else "pixel",
        "autoencoder": latent,
        "spec": spec,
    }

    def open_partial(path: Path, resume_hash: str) -> h5py.File:
        """The partial file at ``path``, reopened if it was made by the same settings, else made anew."""
        if path.exists():
            try:
                with h5py.File(path, "r") as f:
                    same = f.attrs.get("resume_hash") == resume_hash
                why = "was made by other settings"
            except OSError:
                same, why = False, "is unreadable"
            if not same:
                move_aside(path, why)
        if not path.exists():
            with h5py.File(path, "w") as f:
                data.write_root_attrs(f, "samples", pixel_size, meta["class_names"], prov)
                for key in ("experiment", "sampler", "sampler_label", "spacing"):
                    f.attrs[key] = str(prov[key])
                for key in ("checkpoint_step", "steps", "guidance_scale", "seed", "replicate", "model_replicate"):
                    f.attrs[key] = prov[key]
                f.attrs["code_version"] = prov["code_version"]
                f.attrs["resume_hash"] = resume_hash
                f.attrs["num_done"] = 0
                f.attrs["complete"] = False
                data.create_split(f, "samples", n, pixel_size, channels=channels)
                f["samples/labels"][:] = labels_all
        return h5py.File(path, "a")

    # a rehearsal runs the first `sampler_steps` steps of each batch's real schedule (core.rehearsal)
    steps_run = int((spec.get("rehearsal") or {}).get("sampler_steps") or sampler["steps"])
    meter = costs.Meter(
        "sample",
        device,
        count_flops=bool(spec.get("rehearsal")),  # only a rehearsal counts (core.costs)
        name=f"{spec['study']}/{spec['experiment']}",
        replicate=spec["replicate"],
        checkpoint_step=int(meta["step"]),
        parameters=sum(p.numel() for p in model.parameters()),
        input_shape=[int(meta["in_channels"]), size, size],
        batch_size=batch,
        sampler_steps=int(sampler["steps"]),
        sampler_steps_run=steps_run,
        guided=bool(num_classes) and guidance not in (0.0, 1.0),
        world_size=ctx.world_size,
        rehearsal=spec.get("rehearsal"),
    )

    def count_one_image(x_T: torch.Tensor, y: torch.Tensor | None) -> None:
        """FLOPs of one sampler step of one image and of decoding it, counted apart (``Meter.count_one``) on a
        generator of its own: the batches' draws are untouched."""
        gen = torch.Generator(device=device).manual_seed(seed)
        one_step = sampling.truncated(None, 1)
        x = meter.count_one(
            "denoise", lambda: sampling.sample(model, diffusion, x_T.clone(), sampler, y, guidance, gen, one_step)
        )
        meter.count_one("decode", lambda: decode(x))

    def draw(b: int, f: h5py.File) -> int:
        """Sample batch ``b`` (its own generator: the same images whichever process draws it) into ``f``."""
        start = b * batch
        m = min(batch, n - start)
        gen = torch.Generator(device=device).manual_seed(seed * 1_000_003 + b)
        x_T = torch.randn((m, int(meta["in_channels"]), size, size), generator=gen, device=device)
        y = torch.as_tensor(labels_all[start : start + m], device=device) if num_classes else None
        record = record_points if (start == 0 and record_images) else 0
        callback, traj = sampling.trajectory_recorder(record, sampler["steps"]) if record else (None, [])
        if not ctx.enabled and meter.counting("denoise"):
            count_one_image(x_T[:1], None if y is None else y[:1])
        with meter.timed("denoise", m, units=steps_run):
            x0 = sampling.sample(
                model, diffusion, x_T, sampler, y, guidance, gen, sampling.truncated(callback, steps_run)
            )
        with meter.timed("decode", m):
            pixels = decode(x0)
        try:
            f["samples/images"][start : start + m] = data.to_uint8(pixels)
        except FloatingPointError as err:
            raise FloatingPointError(
                f"batch {b} (images {start}–{start + m - 1}) sampled from {checkpoint} has {err}: the model's "
                "weights or the sampler diverged; nothing of it was written"
            ) from None
        if traj:
            stack = np.stack([data.to_uint8(decode(x[:record_images])) for _, x in traj], axis=1)
            if "trajectory" in f:
                del f["trajectory"]
            g = f.create_group("trajectory")
            g.create_dataset("images", data=stack)
            g.create_dataset("timesteps", data=np.array([t for t, _ in traj], dtype=np.int64))
        return start + m

    def finish(f: h5py.File, seconds: float) -> None:
        f.attrs["num_done"] = n
        f.attrs["complete"] = True
        f["samples"].attrs["count"] = n
        f.attrs["sampling_device_seconds"] = seconds
        f.attrs["completed"] = now_iso()
        data.seal(f)

    partial = Path(f"{out}.partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    num_batches = -(-n // batch)
    t0 = time.time()
    h = spec_hash(identity)
    if not ctx.enabled:
        with open_partial(partial, h) as f:
            done = int(f.attrs["num_done"])
            if done:
                print(f"[sample] resuming {partial} at {done}/{n}", flush=True)
            progress = Progress("sample", n, "images", start=done)
            for b in range(done // batch, num_batches):
                end = draw(b, f)
                f.attrs["num_done"] = end
                f.flush()
                progress.update(end)
            finish(f, time.time() - t0)  # this run's wall time × 1 process
        os.replace(partial, out)
        meter.write(paths.cost(str(out)))
        print(f"[sample] wrote {out} in {time.time() - t0:.1f}s", flush=True)
        return

    # Several processes: rank r draws batches r, r + W, r + 2W, … into its own shard (resumable the same way,
    # counting its own batches in num_done), then the main rank copies the batches in order into <out>.
    shards = [Path(f"{out}.partial.rank{r}of{ctx.world_size}") for r in range(ctx.world_size)]
    mine = list(range(ctx.rank, num_batches, ctx.world_size))
    with open_partial(shards[ctx.rank], spec_hash({**identity, "world_size": ctx.world_size})) as f:
        done = int(f.attrs["num_done"])
        # the main rank's share, in batches, stands for the job's progress (the ranks draw alike)
        progress = Progress("sample", len(mine), "batches", start=done, enabled=ctx.is_main)
        for k, b in enumerate(mine[done:], start=done):
            draw(b, f)
            f.attrs["num_done"] = k + 1
            f.flush()
            progress.update(k + 1)
        print(f"[sample] rank {ctx.rank}: {len(mine)} batches in {time.time() - t0:.1f}s", flush=True)
    distributed.barrier(ctx)
    if ctx.is_main:
        with open_partial(partial, h) as f:
            for b in range(num_batches):
                rows = slice(b * batch, min((b + 1) * batch, n))
                with h5py.File(shards[b % ctx.world_size], "r") as src:
                    f["samples/images"][rows] = src["samples/images"][rows]
                    if b == 0 and "trajectory" in src:
                        src.copy("trajectory", f)
            finish(f, (time.time() - t0) * ctx.world_size)
        os.replace(partial, out)
        meter.write(paths.cost(str(out)))
        for shard in shards:
            shard.unlink()
        print(f"[sample] wrote {out} from {ctx.world_size} processes in {time.time() - t0:.1f}s", flush=True)
    distributed.barrier(ctx)
    distributed.shutdown(ctx)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--spec", required=True, help="sample spec as JSON (core.plan.Plan.sample_spec)")
    p.add_argument("--out", required=True)
    p.add_argument("--autoencoder", default="", help="latent models: the vae.pt whose latents they learned")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    run(args.checkpoint, json.loads(args.spec), args.out, args.device, args.autoencoder)


if __name__ == "__main__":
    main()
