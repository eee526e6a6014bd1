"""Benchmark: the training input pipeline (``core.data.ImageBatches`` and ``core.data.Prefetcher``).

    python bench/bench_loader.py [--images 4096] [--size 128] [--batch 64]
                                 [--train-images 65536] [--steps 10] [--rounds 5] [--device auto]
                                 [--out bench/results-loader-cpu.json]

Two parts, on HDF5 files in the project's layout written to a temporary folder (so they sit in the page cache:
this measures reading and decoding the HDF5 chunks, not the disk):

1. **Reading.** Milliseconds per batch of random rows at ``--size``: the split held in memory; streamed with
   a shuffle buffer read chunk by chunk (``ImageBatches`` now); streamed reading the batch's scattered rows
   straight from the file (``ImageBatches`` before 2026-12-01, re-created here as ``RowReads``).
2. **Training.** The training step users run (``core.training.make_batch`` and ``train_step``: ε-loss, the
   finite checks, clipping, AdamW, EMA; on a CPU the demo's UNet: base 32, mult 1-2-2, 1 res block, attention
   at 4², 1 torch thread as a demo job has, at 16²: 48 chunks of 1 MiB; on a GPU Study B's dim-64 UNet at 64²),
   fed by each of those loaders with the prefetch thread off and on. Per step: the input wait
   as ``train_log.csv`` logs it (``core.data.InputWait``: on a CPU the time from asking for the batch to
   holding it in model range, on a GPU the GPU's idle time over that span, from CUDA events), and the mean wall
   time per step.

3. **Latent input** (the lever "precomputed latents"): a batch of scaled latents from the latent cache against
   encoding the batch's 128² images with Study A's KL-f4 encoder at every step.

Prints a table and writes JSON with the machine, versions and date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import config, data
from core import training as training_lib
from core.diffusion import GaussianDiffusion
from core.models import EMA, build_model
from core.nets.vae import AutoencoderKL
from core.provenance import code_version, write_json


class RowReads(data.ImageBatches):
    """The streaming read before 2026-12-01: each batch's rows read straight from the file (sorted, as h5py
    needs), which makes HDF5 read a whole chunk for every row."""

    def _read_streamed(self, idx: np.ndarray, which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sorted_idx = np.sort(idx)
        inverse = np.argsort(np.argsort(idx))
        return self.images_ds[sorted_idx][inverse], self.labels_ds[sorted_idx][inverse]


LOADERS = {  # name: (class, max_memory_bytes)
    "in memory": (data.ImageBatches, 1 << 40),
    "streamed, buffer read by chunks": (data.ImageBatches, 0),
    "streamed, scattered rows (before)": (RowReads, 0),
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def write_dataset(path: Path, n: int, size: int) -> None:
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        images, labels = data.create_split(f, "train", n, size)
        for i in range(0, n, 256):
            images[i : i + 256] = rng.integers(0, 256, (min(256, n - i), size, size, 3), dtype=np.uint8)
        labels[:] = np.arange(n) % 10
        data.write_root_attrs(f, "dataset", size, [f"c{k}" for k in range(10)], {"bench": True})


def reading(path: Path, batch: int, batches: int) -> dict[str, Any]:
    out = {}
    for name, (cls, limit) in LOADERS.items():
        loader = cls(path, "train", batch, torch.Generator().manual_seed(0), limit)
        loader.next()  # the first read of the in-memory split and the first epoch's order
        times = []
        for _ in range(batches):
            t0 = time.perf_counter()
            loader.next()
            times.append(time.perf_counter() - t0)
        loader.close()
        ms = 1000 * float(np.median(times))
        out[name] = {"ms_per_batch_median": ms, "ms_per_batch_mean": 1000 * float(np.mean(times))}
        out[name]["images_per_s"] = batch / (float(np.mean(times)) or 1e-9)
    return out


SPECS = {  # the trained network: the demo's UNet on a CPU, Study B's dim-64 UNet on a GPU
    "cpu": {"base_channels": 32, "channel_mult": [1, 2, 2], "num_res_blocks": 1, "attention_resolutions": [4]},
    "cuda": {"base_channels": 64, "channel_mult": [1, 2, 4, 8], "num_res_blocks": 2, "attention_resolutions": [8]},
}


def training(path: Path, size: int, batch: int, steps: int, rounds: int, device: torch.device) -> dict[str, Any]:
    """``core.stages.train``'s step as it runs it — ``core.training.make_batch`` and ``train_step`` timed around
    ``InputWait`` as the training log measures it (uint8 batches converted on the device, one synchronisation
    per step) — fed by each loader with the prefetch thread off and on. Every setting is built and warmed up
    first, then timed for ``steps`` steps in each of ``rounds`` interleaved rounds, so that load from other
    processes hits all settings alike; images/s is the median over rounds."""
    if device.type == "cpu":
        torch.set_num_threads(1)
    spec = config.complete_model({"net": SPECS[device.type], "diffusion": {"schedule": "cosine"}}, size)
    diffusion = GaussianDiffusion.from_spec(spec["diffusion"])
    train = spec["train"]
    levers = training_lib.Levers.from_spec(train)
    recipe = training_lib.BatchRecipe(None, False, 0, 0.0)
    share = slice(0, batch)

    def run(setting: dict[str, Any], n: int) -> tuple[list[float], float]:
        waits = []
        synchronize(device)
        t_start = time.perf_counter()
        for _ in range(n):
            setting["wait"].before_batch()
            rows, labels = setting["loader"].next()
            x0, y = training_lib.make_batch(rows, labels, recipe, share, batch, setting["gen"], device)
            setting["wait"].batch_ready()
            training_lib.train_step(
                setting["model"],
                setting["model"],
                diffusion,
                setting["opt"],
                setting["ema"],
                x0,
                y,
                len(rows),
                share,
                setting["gen"],
                levers,
                train["grad_clip"],
                float(train["lr"]),
                setting["step"],
            )
            setting["step"] += 1
            waits.append(setting["wait"].step_done())
        synchronize(device)
        return waits, time.perf_counter() - t_start

    settings = {}
    for name, (cls, limit) in LOADERS.items():
        for prefetch in (False, True):
            torch.manual_seed(0)
            model = build_model(spec, size).to(device)
            loader: Any = cls(path, "train", batch, torch.Generator().manual_seed(0), limit)
            setting = {
                "model": model,
                "opt": levers.optimizer(model, train),
                "ema": EMA(model, train["ema"]["decay"], train["ema"]["update_every"], train["ema"]["warmup_power"]),
                "gen": torch.Generator(device=device).manual_seed(1),
                "step": 0,
                "loader": data.Prefetcher(loader) if prefetch else loader,
                "wait": data.InputWait(device),
            }
            run(setting, 3)  # first reads, allocator and kernel warm-up
            settings[f"{name}, prefetch {'on' if prefetch else 'off'}"] = setting | {"waits": [], "walls": []}
    for _ in range(rounds):
        for setting in settings.values():
            waits, wall = run(setting, steps)
            setting["waits"] += waits
            setting["walls"].append(wall)
    out = {}
    for key, setting in settings.items():
        setting["loader"].close()
        waits, walls = setting["waits"], setting["walls"]
        out[key] = {
            "input_wait_ms_median": 1000 * float(np.median(waits)),
            "input_wait_ms_mean": 1000 * float(np.mean(waits)),
            "step_ms_mean": 1000 * float(np.median(walls)) / steps,
            "input_share": float(np.sum(waits) / np.sum(walls)),
            "images_per_s": batch * steps / float(np.median(walls)),
            "images_per_s_rounds": [batch * steps / w for w in walls],
        }
    return out


def latent_input(path: Path, batch: int, reps: int, device: torch.device) -> dict[str, Any]:
    """The lever "precomputed latents": one batch of scaled latents from the cache (read, to the device,
    z ~ q(z|x)) against encoding the images at every step (Study A's KL-f4 encoder at 128², no gradient)."""

    def timed(fn: Any) -> float:
        fn()  # warm-up
        times = []
        for _ in range(reps):
            synchronize(device)
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            times.append(time.perf_counter() - t0)
        return float(np.median(times))

    torch.manual_seed(0)
    vae = AutoencoderKL(ch=128, ch_mult=(1, 2, 4), num_res_blocks=2, z_channels=3).to(device).eval()
    x = torch.rand(batch, 3, 128, 128, device=device) * 2 - 1
    with torch.no_grad():
        encode_s = timed(lambda: vae.encode(x).sample())
    loader = data.ImageBatches(path, "train", batch, torch.Generator().manual_seed(0), key="moments")

    def from_cache() -> None:
        rows, _ = loader.next()
        mean, logvar = torch.as_tensor(rows).to(device).chunk(2, dim=1)
        _ = (mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)) * 0.5

    cache_s = timed(from_cache)
    loader.close()
    return {
        "batch": batch,
        "encoder_parameters": sum(p.numel() for p in vae.encoder.parameters()),
        "encode_ms_per_batch": 1000 * encode_s,
        "cache_ms_per_batch": 1000 * cache_s,
        "encode_images_per_s": batch / encode_s,
        "cache_images_per_s": batch / cache_s,
    }


def write_latent_cache(path: Path, n: int) -> None:
    """``n`` rows of 32×32×3 posteriors (mean, log-variance) in the latent cache layout."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        moments = np.concatenate([rng.normal(size=(n, 3, 32, 32)), rng.normal(-4, 0.5, (n, 3, 32, 32))], 1)
        rows = data.CHUNK_BYTES // (6 * 32 * 32 * 4)
        f.create_dataset("train/moments", data=moments.astype(np.float32), chunks=(rows, 6, 32, 32))
        f.create_dataset("train/labels", data=np.arange(n) % 10)
        data.write_root_attrs(f, "latents", 128, [f"c{k}" for k in range(10)], {"bench": True})
        f.attrs["layout"] = data.LATENT_LAYOUT


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=4096, help="images in the reading part's file")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=40, help="timed batches per loader in the reading part")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (the training part)")
    p.add_argument("--train-images", type=int, default=65536)
    p.add_argument("--train-size", type=int, default=0, help="default: 16 on a CPU, 64 on a GPU")
    p.add_argument("--train-batch", type=int, default=0, help="default: 32 on a CPU, 64 on a GPU")
    p.add_argument("--steps", type=int, default=10, help="timed training steps per setting and round")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds of the training part")
    p.add_argument("--latent-batch", type=int, default=0, help="latent part's batch (default: 4 on a CPU, 64 on a GPU)")
    p.add_argument("--latent-reps", type=int, default=3, help="timed batches of the latent part")
    p.add_argument("--out", default="bench/results-loader-cpu.json")
    args = p.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: CUDA is not available to this torch build")
    args.train_size = args.train_size or (64 if device.type == "cuda" else 16)
    args.train_batch = args.train_batch or (64 if device.type == "cuda" else 32)
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_1min_at_start": os.getloadavg()[0],
            "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        },
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "h5py": h5py.__version__},
        "code_version": code_version(),
        "settings": vars(args),
    }
    with tempfile.TemporaryDirectory() as tmp:
        read_file, train_file = Path(tmp) / "read.h5", Path(tmp) / "train.h5"
        write_dataset(read_file, args.images, args.size)
        write_dataset(train_file, args.train_images, args.train_size)
        with h5py.File(read_file) as f:
            results["chunk_rows"] = {"reading": f["train/images"].chunks[0]}
        with h5py.File(train_file) as f:
            results["chunk_rows"]["training"] = f["train/images"].chunks[0]
        results["reading"] = reading(read_file, args.batch, args.batches)
        latent_file = Path(tmp) / "latents.h5"
        write_latent_cache(latent_file, 2048)
        latent_batch = args.latent_batch or (64 if device.type == "cuda" else 4)
        results["latent_input"] = latent_input(latent_file, latent_batch, args.latent_reps, device)
        results["training"] = training(train_file, args.train_size, args.train_batch, args.steps, args.rounds, device)
    results["machine"]["load_1min_at_end"] = os.getloadavg()[0]
    rows = results["chunk_rows"]
    print(f"\nReading, batch {args.batch} at {args.size}² ({args.images} images; chunks of {rows['reading']} rows):")
    print(f"{'loader':<40} {'ms/batch (median)':>18} {'images/s':>10}")
    for name, r in results["reading"].items():
        print(f"{name:<40} {r['ms_per_batch_median']:>18.2f} {r['images_per_s']:>10.0f}")
    print(f"\nTraining on {device}, UNet {SPECS[device.type]} at {args.train_size}², batch {args.train_batch}:")
    print(f"{'loader':<54} {'input wait ms':>14} {'step ms':>9} {'input share':>12} {'images/s':>9}")
    for name, r in results["training"].items():
        print(
            f"{name:<54} {r['input_wait_ms_median']:>14.2f} {r['step_ms_mean']:>9.1f} "
            f"{100 * r['input_share']:>11.1f}% {r['images_per_s']:>9.1f}"
        )
    lat = results["latent_input"]
    print(
        f"\nLatent input, batch {lat['batch']} on {device}: encoding 128² images with the KL-f4 encoder "
        f"({lat['encoder_parameters'] / 1e6:.1f}M) {lat['encode_ms_per_batch']:.1f} ms "
        f"({lat['encode_images_per_s']:.1f} images/s); from the latent cache {lat['cache_ms_per_batch']:.2f} ms "
        f"({lat['cache_images_per_s']:.0f} images/s)"
    )
    write_json(args.out, results)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
