"""Stage: how well an autoencoder reconstructs a study's reference images (PSNR, Fréchet distance, a grid).

    python -m core.stages.evaluate_autoencoder --autoencoder results/autoencoders/shapes12-f2/vae.pt \
        --data results/data/shapes12.h5 --split val --num-images 1000 \
        --reference results/refstats/shapes12/val-classifier-n1000.npz --extractor '<JSON>' \
        --out results/demo-a/autoencoders/shapes12-f2.json --grid results/demo-a/autoencoders/shapes12-f2.png

The first ``num`` images of ``split`` (the images behind the study's reference statistics) are encoded, their
posterior mean decoded, and the reconstructions rounded to uint8 as samples are. Reported: PSNR in dB over
uint8 pixels (peak 255; the mean over images of each image's PSNR, and the PSNR of the pooled MSE), and the
Fréchet distance between the reconstructions' features and the reference statistics with the study's
extractor ("rFID" with Inception, "rFD_clf" with the dataset classifier). It bounds what the latent rows can
reach: a latent model's samples can be no more faithful than the decoder's reconstructions.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

import numpy as np
import torch
from PIL import Image

from core import costs, data, metrics, paths
from core.distributed import device_for
from core.features import load_extractor, load_reference
from core.models import load_autoencoder
from core.provenance import atomic_path, provenance, write_json


def psnr(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(mean over images of per-image PSNR, PSNR of the pooled MSE) of uint8 images, in dB, peak 255."""
    err = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    per_image = err.reshape(len(a), -1).mean(axis=1)

    def db(mse: np.ndarray | float) -> np.ndarray | float:
        return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-12))

    return float(np.mean(db(per_image))), float(db(err.mean()))


@torch.no_grad()
def reconstruct(vae: torch.nn.Module, images: np.ndarray, device: str, batch_size: int = 256) -> np.ndarray:
    """uint8 NHWC → decode(posterior mean) → uint8 NHWC."""
    out = [
        data.to_uint8(vae.decode(vae.encode(data.to_model_range(images[i : i + batch_size], device)).mode()))
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out)


def save_grid(path: str, originals: np.ndarray, recons: np.ndarray, cols: int = 12) -> None:
    """Originals (top row of each pair) above their reconstructions, enlarged to at least 48 px per image."""
    n = min(cols, len(originals))
    top, bottom = np.concatenate(list(originals[:n]), axis=1), np.concatenate(list(recons[:n]), axis=1)
    grid = np.concatenate([top, bottom], axis=0)
    scale = max(1, math.ceil(48 / originals.shape[1]))
    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).resize(
        (grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST
    )
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def run(
    autoencoder: str,
    data_path: str,
    split: str,
    num: int,
    reference: str,
    extractor_spec: dict[str, Any],
    out: str,
    grid: str,
    batch_size: int = 200,
) -> dict[str, Any]:
    device = str(device_for("auto"))
    ref, ref_meta = load_reference(reference)
    extractor = load_extractor(extractor_spec)
    if ref_meta["extractor"]["weights_sha256"] != extractor.label["weights_sha256"]:
        raise ValueError(f"{reference} was computed with other extractor weights; rebuild the reference")
    with data.open_images(data_path, split) as f:
        available = f[f"{split}/images"].shape[0]
        n = available if num == 0 else num
        if n > available:
            raise ValueError(f"{n} images requested but split '{split}' of {data_path} has {available}")
        images = f[f"{split}/images"][:n]
    vae, meta = load_autoencoder(autoencoder, device)
    meter = costs.Meter(
        "evaluate_autoencoder", device, count_flops=False, name=autoencoder, extractor=extractor.label, images=n
    )
    with meter.timed("reconstruct", n):
        recons = reconstruct(vae, images, device)
    psnr_mean, psnr_pooled = psnr(images, recons)
    with meter.timed("extract", n):
        feats, _ = extractor.extract(recons, batch_size=batch_size, device=device)
    mu, sigma = metrics.feature_statistics(feats)
    with meter.timed("fd", 1):
        fd = metrics.frechet_distance(mu, sigma, ref["mu"], ref["sigma"])
    fd_name = "rFID" if extractor.is_inception else f"rFD_{extractor.label['display']}"
    result = {
        "autoencoder": autoencoder,
        "name": meta.get("name"),
        "source": meta.get("source"),
        "num_parameters": meta["num_parameters"],
        "downsampling_factor": meta["downsampling_factor"],
        "latent_shape": meta["latent_shape"],
        "scale_factor": meta["scale_factor"],
        "psnr_db": psnr_mean,
        "psnr_pooled_db": psnr_pooled,
        "fid": fd,
        "label": {
            "fid": f"{fd_name}@{n}",
            "psnr": "PSNR (dB, uint8, mean over images)",
        },
        "reconstruction": "decoder(posterior mean), rounded to uint8",
        "n_images": n,
        "split": split,
        "extractor": extractor.label,
        "reference": {"path": reference, "split": ref_meta["split"], "num_images": ref_meta.get("num_images")},
        "provenance": provenance(None, autoencoder_code_version=meta.get("code_version")),
    }
    save_grid(grid, images, recons)
    write_json(out, result)
    meter.write(paths.cost(out))
    print(f"[evaluate_autoencoder] {autoencoder}: PSNR {psnr_mean:.2f} dB, {result['label']['fid']} = {fd:.3f}")
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--autoencoder", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--num-images", type=int, default=0, help="the first N images of the split (0: all)")
    p.add_argument("--reference", required=True)
    p.add_argument("--extractor", required=True, help="extractor spec as JSON: kind, weights")
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--out", required=True)
    p.add_argument("--grid", required=True)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    run(
        args.autoencoder,
        args.data,
        args.split,
        args.num_images,
        args.reference,
        json.loads(args.extractor),
        args.out,
        args.grid,
        args.batch_size,
    )


if __name__ == "__main__":
    main()
