"""Stage: encode a dataset once into its latent cache, which every latent experiment then trains from.

    python -m core.stages.encode_latents --data results/data/shapes12.h5 \
        --autoencoder results/autoencoders/shapes12-f2/vae.pt --out results/latents/shapes12-f2.h5

For every split of the dataset, ``/<split>/moments`` holds the posterior's mean and log-variance
(float32, N × 2C × h × w, unscaled) and ``/<split>/labels`` the labels (layout ``core.data.LATENT_LAYOUT``).
Storing the posterior rather than one sample lets training draw a fresh z ~ q(z|x) at each step, as
training through the encoder would. The scale factor, latent shape and the autoencoder's path and SHA-256
are root attributes, so a denoiser trained from the cache records which autoencoder decodes it.
"""

from __future__ import annotations

import argparse
import json
import time

import h5py
import numpy as np
import torch

from core import costs, data, paths
from core.models import load_autoencoder
from core.provenance import atomic_path, file_sha256, provenance


@torch.no_grad()
def run(
    data_path: str,
    autoencoder: str,
    out: str,
    batch_size: int = 256,
    device_name: str = "auto",
    rehearsal_images: int = 0,
) -> None:
    """Encode every split; a rehearsal (``rehearsal_images`` > 0) encodes that many images of each split and fills
    the other rows by repeating them, recorded in the file's ``rehearsal_encoded`` attribute (core.rehearsal)."""
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device_name == "auto" else device_name
    vae, meta = load_autoencoder(autoencoder, device)
    meter = costs.Meter(
        "encode_latents",
        device,
        count_flops=rehearsal_images > 0,
        name=str(autoencoder),
        parameters=meta.get("num_parameters"),
    )
    c, h, w = meta["latent_shape"]
    t0 = time.time()
    with h5py.File(data_path, "r") as src:
        splits = [s for s in src if isinstance(src[s], h5py.Group) and "images" in src[s]]
        if not splits:
            raise ValueError(f"{data_path} has no /<split>/images; expected {data.expected_layout('train')}")
        with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
            data.write_root_attrs(
                f,
                "latents",
                int(src.attrs["image_size"]),
                data.class_names(src),
                provenance(
                    None,
                    dataset=str(data_path),
                    dataset_sha256=data.content_sha256(src, data_path),
                    dataset_provenance=json.loads(src.attrs.get("provenance", "{}")),
                    autoencoder=str(autoencoder),
                    autoencoder_spec_hash=meta["spec_hash"],
                ),
            )
            f.attrs["layout"] = data.LATENT_LAYOUT
            f.attrs["latent_shape"] = [c, h, w]
            f.attrs["scale_factor"] = float(meta["scale_factor"])
            f.attrs["autoencoder"] = str(autoencoder)
            f.attrs["autoencoder_sha256"] = file_sha256(autoencoder)
            f.attrs["pixel_channels"] = int(meta["in_channels"])
            for split in splits:
                with data.open_images(data_path, split) as check:
                    n = check[f"{split}/images"].shape[0]
                rows = max(1, min(n, data.CHUNK_BYTES // (2 * c * h * w * 4)))
                moments = f.create_dataset(
                    f"{split}/moments", shape=(n, 2 * c, h, w), dtype=np.float32, chunks=(rows, 2 * c, h, w)
                )
                f[f"{split}/labels"] = src[f"{split}/labels"][:]
                encoded = min(n, rehearsal_images) if rehearsal_images else n
                for i in range(0, encoded, batch_size):
                    x = data.to_model_range(src[f"{split}/images"][i : min(i + batch_size, encoded)], device)
                    if meter.counting("encode"):
                        meter.count_one("encode", lambda x=x: vae.encode(x[:1]))
                    with meter.timed("encode", len(x)):
                        posterior = vae.encode(x)
                    rows_out = torch.cat([posterior.mean, posterior.logvar], 1).float()
                    if not bool(torch.isfinite(rows_out).all()):
                        raise FloatingPointError(
                            f"{autoencoder} encodes images {i}– of split {split} to non-finite latents"
                        )
                    moments[i : i + len(x)] = rows_out.cpu().numpy()
                for i in range(encoded, n, encoded):  # a rehearsal's repeated rows
                    moments[i : min(i + encoded, n)] = moments[: min(encoded, n - i)]
                f[split].attrs["rehearsal_encoded"] = encoded if encoded < n else 0
                f[split].attrs["count"] = n
                print(f"[encode] {split}: {n} images → {c}×{h}×{w} latents", flush=True)
            data.seal(f)
    meter.write(paths.cost(out))
    print(f"[encode] wrote {out} in {time.time() - t0:.1f}s", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--autoencoder", required=True, help="vae.pt written by core.stages.train_autoencoder")
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--rehearsal-images", type=int, default=0, help="a rehearsal's images encoded per split (0: all)")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    run(args.data, args.autoencoder, args.out, args.batch_size, args.device, args.rehearsal_images)


if __name__ == "__main__":
    main()
