"""Benchmark: the Fréchet distance (eigenvalue form vs scipy's sqrtm) at 2048-d, and Inception feature
extraction throughput (random weights; the speed does not depend on them).

    python bench/bench_metrics.py [--out bench/results-metrics.json] [--images 64] [--device auto]

Prints a table and writes JSON with the device, versions and date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import metrics
from core.features import Extractor
from core.nets import inception


def timed(fn, repeat: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench/results-metrics.json")
    p.add_argument("--images", type=int, default=64, help="images for the extraction timing")
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    rng = np.random.default_rng(0)
    d = 2048
    feats_a = rng.standard_normal((5000, d)) @ rng.standard_normal((d, d)) / np.sqrt(d)
    feats_b = feats_a[:, ::-1] + 0.1 * rng.standard_normal((5000, d))
    mu1, s1 = metrics.feature_statistics(feats_a)
    mu2, s2 = metrics.feature_statistics(feats_b)
    t_eig, fd_eig = timed(lambda: metrics.frechet_distance(mu1, s1, mu2, s2))
    t_sqrtm, fd_sqrtm = timed(lambda: metrics.frechet_distance_sqrtm(mu1, s1, mu2, s2), repeat=1)

    model = inception.FIDInceptionV3().eval()
    extractor = Extractor("inception", model, lambda x: inception.preprocess(torch.as_tensor(x), "pytorch-fid"))
    images = rng.integers(0, 256, (args.images, 64, 64, 3), dtype=np.uint8)
    extractor.extract(images[:8], batch_size=8, device=device)  # warm-up
    t_ext, _ = timed(lambda: extractor.extract(images, batch_size=32, device=device), 1)

    result = {
        "date": dt.date.today().isoformat(),
        "device": torch.cuda.get_device_name()
        if device == "cuda"
        else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__},
        "frechet_2048": {
            "eig_seconds": t_eig,
            "sqrtm_seconds": t_sqrtm,
            "speedup": t_sqrtm / t_eig,
            "relative_difference": abs(fd_eig - fd_sqrtm) / abs(fd_sqrtm),
            "fd": fd_eig,
        },
        "inception_extraction": {
            "images": args.images,
            "input": "64x64 -> 299x299",
            "images_per_s": args.images / t_ext,
        },
    }
    print(f"device: {result['device']}, torch {torch.__version__}, {result['date']}")
    print("| measurement | value |\n|---|---|")
    print(f"| Fréchet distance 2048-d, eigenvalue form | {t_eig:.3f} s |")
    print(f"| Fréchet distance 2048-d, scipy sqrtm form | {t_sqrtm:.3f} s |")
    print(f"| speed-up | {t_sqrtm / t_eig:.1f}× |")
    print(f"| relative difference of the two | {result['frechet_2048']['relative_difference']:.2e} |")
    print(f"| Inception feature extraction | {args.images / t_ext:.1f} images/s |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
