"""Benchmark: the rehearsal's stand-ins — writing each stand-in tree (``core.standin``), ingesting it at the full
presets' size (``core.ingest``, 1 worker) and one forward of the random-weights Inception over 8 images.

    OMP_NUM_THREADS=1 python bench/bench_standin.py [--train-per-class 4 --val-per-class 1] [--per-class 100] \
        [--repeat 2] [--out bench/results-standin-cpu.json]

The Inception runs on one thread (``torch.set_num_threads(1)``): what one rehearsal job gets on the 2-core machine.
Prints each time and writes JSON with the machine, its load, versions and date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import ingest, standin
from core.features import load_extractor
from core.provenance import write_json


def timed(fn: Callable[..., Any], *args: Any, **kw: Any) -> tuple[Any, float]:
    """``fn(*args, **kw)`` and its wall time in seconds."""
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, round(time.perf_counter() - t0, 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-per-class", type=int, default=4)
    p.add_argument("--val-per-class", type=int, default=1)
    p.add_argument("--per-class", type=int, default=100, help="sysu-shapes images per category")
    p.add_argument("--repeat", type=int, default=2, help="timed Inception forwards (the best is reported)")
    p.add_argument("--out", default="bench/results-standin-cpu.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    results: dict = {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores ({platform.processor() or 'cpu'})",
        "python": platform.python_version(),
        "pillow": PIL.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "trees": {},
    }
    trees = {
        "imagenet100": ({"train_per_class": args.train_per_class, "val_per_class": args.val_per_class}, 128),
        "sysu-shapes": ({"per_class": args.per_class}, 64),
    }
    with tempfile.TemporaryDirectory(prefix="bench-standin-") as tmp:
        for layout, (spec, size) in trees.items():
            root = Path(tmp) / layout
            summary, write_s = timed(standin.write_tree, layout, root, spec)
            images = sum(summary["splits"].values())
            entry = {"source": layout, "path": str(root), "image_size": size, "workers": 1}
            if layout == "sysu-shapes":
                entry["val_fraction"] = 0
            _, ingest_s = timed(ingest.ingest, entry, Path(tmp) / f"{layout}.h5")
            mib = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 2**20
            results["trees"][layout] = {
                "spec": summary["spec"],
                "images": images,
                "modes": summary["modes"],
                "tree_mib": round(mib, 1),
                "write_s": write_s,
                "ingest_s_at_size": [ingest_s, size],
            }
            print(
                f"{layout}: {images} JPEGs ({mib:.1f} MiB) written in {write_s} s, ingested at {size}² in {ingest_s} s"
            )
        batch = np.stack(
            [ingest.load_image(f, 128) for f in sorted((Path(tmp) / "imagenet100" / "train").glob("*/*.JPEG"))[:8]]
        )
    ex, build_s = timed(load_extractor, {"kind": "inception-standin", "preprocessing": "pytorch-fid", "seed": 0})
    forward = [timed(ex.extract, batch, 8)[1] for _ in range(args.repeat)]
    results["standin_inception"] = {
        "build_s": build_s,
        "forward_8_images_128px_s": min(forward),
        "forward_all_s": forward,
        "weights_sha256": ex.label["weights_sha256"],
    }
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(f"stand-in Inception: built in {build_s} s, 8 images (128² → 299²) in {min(forward)} s (best of {forward})")
    write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
