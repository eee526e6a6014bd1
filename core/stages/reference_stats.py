"""Stage: features and statistics of real images, computed once and reused by every experiment.

    python -m core.stages.reference_stats --data results/data/shapes32.h5 --split val --num-images 1000 \
        --extractor '<extractor spec JSON>' --out results/refstats/shapes32/val-clf-n1000.npz

The ``.npz`` holds ``features`` (N, D), ``logits``, ``mu`` and ``sigma`` (float64) and ``meta`` (a JSON
string: dataset, split, N, extractor label, code version). N is the first ``--num-images`` images of the split
(all of them when ``--num-images`` is 0).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from core import costs, data, distributed, metrics, paths, progress
from core.features import load_extractor
from core.provenance import atomic_path, provenance


def run(data_path: str, split: str, num: int, extractor_spec: dict[str, Any], out: str, batch_size: int = 200) -> None:
    device = distributed.device_for("auto")
    ctx = distributed.init(device)  # under torchrun the extraction is split; rank 0 writes
    extractor = load_extractor(extractor_spec)
    with data.open_images(data_path, split) as f:
        available = f[f"{split}/images"].shape[0]
        n = available if num == 0 else num
        if n > available:
            raise ValueError(f"reference statistics need {n} images but split '{split}' of {data_path} has {available}")
        meter = costs.Meter(
            "reference_stats",
            device,
            count_flops=False,
            name=f"{data_path}:{split}",
            extractor=extractor.label,
            images=n,
        )
        feats, logits = progress.extract(
            extractor, f[f"{split}/images"][:n], batch_size, device, ctx, "reference_stats", meter
        )
        data_sha256 = data.content_sha256(f, data_path)
    distributed.shutdown(ctx)
    if not ctx.is_main:
        return
    mu, sigma = metrics.feature_statistics(feats)
    meta = provenance(
        None,
        dataset=str(data_path),
        dataset_sha256=data_sha256,
        split=split,
        num_images=n,
        extractor=extractor.label,
    )
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, features=feats, logits=logits, mu=mu, sigma=sigma, meta=json.dumps(meta))
    meter.write(paths.cost(out))
    print(f"[reference_stats] {n} images of {data_path}:{split} -> {out}", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--num-images", type=int, default=0, help="the first N images of the split (0: all)")
    p.add_argument("--extractor", required=True, help="extractor spec as JSON: kind, weights")
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    run(args.data, args.split, args.num_images, json.loads(args.extractor), args.out, args.batch_size)


if __name__ == "__main__":
    main()
