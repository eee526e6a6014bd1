"""Stage: the KL autoencoder of the latent rows, trained on a dataset or imported from a checkpoint.

    python -m core.stages.train_autoencoder --spec '<autoencoders entry JSON>' --data results/data/shapes12.h5 \
        --out results/autoencoders/shapes12-f2/vae.pt --log results/autoencoders/shapes12-f2/train_log.csv

Training minimises ``core.nets.vae.vae_loss`` (L1 reconstruction + ``kl_weight`` · KL; no perceptual or adversarial
term) with AdamW on random batches of the ``train`` split. With ``checkpoint`` set, no training happens: the
user's state dict is verified (SHA-256 when ``checkpoint_sha256`` is given) and loaded strictly.

Either way the latent scale factor is then computed from the data, not hard-coded: 1 / std of posterior
samples z ~ q(z|x) of the first ``scale_images`` training images, so that the scaled latents the diffusion
model sees have unit variance (the reference used 0.1845 for its VAE; Stable Diffusion's 0.18215 is the same
idea). ``<out>`` holds the weights and a ``meta`` dict (net, image size, latent shape, scale factor, source,
code version, data provenance); ``--log`` is the per-step training log (CSV: loss, L1, KL, elapsed time,
``input_wait_s`` as in ``core.stages.train``; only a header for an import).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import time
from pathlib import Path
from typing import Any

import torch

from core import costs, data, paths
from core.models import build_autoencoder, save_checkpoint
from core.nets.vae import latent_scale_factor, vae_loss
from core.provenance import atomic_path, code_version, file_sha256, spec_hash

LOG_FIELDS = ["step", "loss", "rec_l1", "kl", "elapsed_s", "input_wait_s"]


def import_weights(vae: torch.nn.Module, spec: dict[str, Any]) -> dict[str, Any]:
    """Load the user's checkpoint into ``vae`` after checking its hash; errors name the config key."""
    key = f"autoencoders.{spec['name']}.checkpoint"
    path = Path(spec["checkpoint"])
    if not path.is_file():
        raise FileNotFoundError(f"config key {key}: {path} does not exist")
    digest = file_sha256(path)
    want = spec["checkpoint_sha256"]
    if want and digest != want:
        raise ValueError(f"config key {key}: {path} has SHA-256 {digest}, but checkpoint_sha256 is {want}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:  # LDM/Lightning checkpoints nest the weights
        state = state["state_dict"]
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    own = vae.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} ≠ {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        raise ValueError(
            f"config key {key}: {path} does not fit the configured net (autoencoders.{spec['name']}.net); "
            f"missing keys {missing[:5]}{'…' if len(missing) > 5 else ''}, "
            f"unexpected keys {unexpected[:5]}{'…' if len(unexpected) > 5 else ''}, "
            f"other shapes {shapes[:3]}{'…' if len(shapes) > 3 else ''}"
        )
    vae.load_state_dict(state)
    return {"source": "checkpoint", "checkpoint": str(path.resolve()), "checkpoint_sha256": digest}


def train_weights(
    vae: torch.nn.Module,
    spec: dict[str, Any],
    data_path: str,
    log_path: str,
    device: torch.device,
    meter: costs.Meter | None = None,
):
    """Train ``vae`` in place; write the per-step log to ``log_path``; ``meter`` counts the first step, times the
    others."""
    train = spec["train"]
    steps, batch = int(train["steps"]), int(train["batch_size"])
    kl_weight = float(train["kl_weight"])
    gen = torch.Generator().manual_seed(int(train["seed"]) + 1)
    noise = torch.Generator(device=device).manual_seed(int(train["seed"]) + 2)
    loader = data.Prefetcher(data.ImageBatches(data_path, "train", batch, gen))
    waiting = data.InputWait(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=float(train["lr"]), weight_decay=0.0)
    vae.train()
    t0 = time.time()
    with atomic_path(log_path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, LOG_FIELDS)
        writer.writeheader()
        for step in range(1, steps + 1):
            waiting.before_batch()
            images, _ = loader.next()
            x = data.to_model_range(images, device)
            waiting.batch_ready()
            with meter.timed("step", len(x)) if meter else contextlib.nullcontext():
                loss, parts = vae_loss(vae, x, kl_weight, noise)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite autoencoder loss at step {step}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            writer.writerow(
                {
                    "step": step,
                    "loss": f"{loss.item():.6g}",
                    "rec_l1": f"{parts['rec']:.6g}",
                    "kl": f"{parts['kl']:.6g}",
                    "elapsed_s": f"{time.time() - t0:.2f}",
                    "input_wait_s": f"{waiting.step_done():.6f}",
                }
            )
            if step % 100 == 0 or step == steps:
                print(f"[autoencoder] step {step}/{steps} L1 {parts['rec']:.4f} KL {parts['kl']:.1f}", flush=True)
    loader.close()
    vae.eval()
    return {"source": "trained", "steps": steps, "train_seconds": round(time.time() - t0, 2)}


def reconstruction_l1(vae: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The L1 reconstruction through the posterior mean: ``vae_loss``'s network work (what ``core.costs`` counts on
    the meta device, where ``vae_loss``'s logged floats cannot be read)."""
    return (vae.decode(vae.encode(x).mean) - x).abs().mean()


@torch.no_grad()
def scale_factor_from_data(vae: torch.nn.Module, data_path: str, num: int, seed: int, device: torch.device) -> float:
    """1 / std of posterior samples of the first ``num`` training images (all of them if fewer)."""
    with data.open_images(data_path, "train") as f:
        images = f["train/images"][:num]
    gen = torch.Generator(device=device).manual_seed(seed)
    latents = [
        vae.encode(data.to_model_range(images[i : i + 256], device)).sample(gen).cpu()
        for i in range(0, len(images), 256)
    ]
    return latent_scale_factor(torch.cat(latents))


def run(spec: dict[str, Any], data_path: str, out: str, log_path: str, device_name: str = "auto") -> dict[str, Any]:
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device_name == "auto" else device_name)
    with data.open_images(data_path, "train") as f:
        image_size, channels = int(f["train/images"].shape[1]), int(f["train/images"].shape[3])
        data_prov = json.loads(f.attrs.get("provenance", "{}"))
        data_sha256 = data.content_sha256(f, data_path)
    torch.manual_seed(int(spec["train"]["seed"]))
    vae = build_autoencoder(spec["net"], image_size, channels).to(device)
    meter = costs.Meter(
        "train_autoencoder",
        device,
        count_flops=bool(spec.get("rehearsal")),  # only a rehearsal counts (core.costs)
        name=spec["name"],
        parameters=sum(p.numel() for p in vae.parameters()),
        input_shape=[channels, image_size, image_size],
        batch_size=int(spec["train"]["batch_size"]),
    )
    if spec["checkpoint"]:
        source = import_weights(vae, spec)
        vae.to(device).eval()
    else:
        batch = int(spec["train"]["batch_size"])
        costs.count_step(  # one step on the meta device (core.costs)
            meter,
            "step",
            lambda: build_autoencoder(spec["net"], image_size, channels),
            lambda b: lambda net: reconstruction_l1(net, torch.zeros(b, channels, image_size, image_size)),
            batch,
        )
        source = train_weights(vae, spec, data_path, log_path, device, meter)
    factor = scale_factor_from_data(vae, data_path, int(spec["scale_images"]), int(spec["train"]["seed"]), device)
    f = vae.downsampling_factor
    meta = {
        "name": spec["name"],
        "spec": spec,
        "spec_hash": spec_hash(spec),
        "net": spec["net"],
        "image_size": image_size,
        "in_channels": channels,
        "latent_shape": [vae.embed_dim, image_size // f, image_size // f],
        "downsampling_factor": f,
        "scale_factor": factor,
        "num_parameters": sum(p.numel() for p in vae.parameters()),
        "code_version": code_version(),
        "data": {"path": str(data_path), "content_sha256": data_sha256, "provenance": data_prov},
        **source,
    }
    save_checkpoint(out, {"model": vae.state_dict(), "meta": meta})
    meter.write(paths.cost(out))
    if spec["checkpoint"]:  # an imported model has no training log; say so in the file the rule declares
        with atomic_path(log_path) as tmp:
            Path(tmp).write_text(",".join(LOG_FIELDS) + "\n")
    print(
        f"[autoencoder] {meta['num_parameters'] / 1e6:.2f}M parameters, f = {f}, latents "
        f"{'×'.join(map(str, meta['latent_shape']))}, scale factor {factor:.4f} → {out}",
        flush=True,
    )
    return meta


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", required=True, help="one `autoencoders` entry of config.yaml as JSON, with its name")
    p.add_argument("--data", required=True, help="HDF5 dataset with a 'train' split")
    p.add_argument("--out", required=True)
    p.add_argument("--log", required=True, help="training log (CSV)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    run(json.loads(args.spec), args.data, args.out, args.log, args.device)


if __name__ == "__main__":
    main()
