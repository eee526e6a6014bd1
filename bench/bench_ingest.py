"""Benchmark: ingestion of a synthetic image-folder tree (``core.ingest``) with 1 worker and with all cores.

    python bench/bench_ingest.py [--images 2000] [--width 160 --height 120] [--size 128] [--repeat 3]
                                 [--out bench/results-ingest-cpu.json]

Writes ``--images`` JPEGs (quality 90, smooth colour fields plus noise, spread over 10 class folders of an
``imagenet100``-style tree with 10 % in ``validation/``) to a temporary folder, ingests them at 1 worker and at
``os.cpu_count()`` workers (best of ``--repeat`` alternating runs), checks both outputs hold the same pixels,
prints images/s and writes JSON with the machine, its load, versions and date.
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

import h5py
import numpy as np
import PIL
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import ingest
from core.provenance import write_json


def make_tree(root: Path, n: int, width: int, height: int, classes: int = 10) -> None:
    """``n`` JPEGs in ``root/{train,validation}/c<k>/``: every 10th image goes to validation."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(n):
        split = "validation" if (i // classes) % 10 == 9 else "train"
        folder = root / split / f"c{i % classes:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        a, b, c = rng.uniform(0.01, 0.1, 3)
        field = np.stack([np.sin(a * xx + i), np.cos(b * yy), np.sin(c * (xx + yy))], axis=-1)
        img = (127.5 + 100 * field + rng.normal(0, 12, field.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"img{i:05d}.JPEG", quality=90)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--height", type=int, default=120)
    p.add_argument("--size", type=int, default=128, help="image_size of the ingested dataset")
    p.add_argument("--resize", default="stretch", choices=ingest.RESIZE_MODES)
    p.add_argument("--repeat", type=int, default=3, help="timed runs per setting (the best is reported)")
    p.add_argument("--out", default="bench/results-ingest-cpu.json")
    args = p.parse_args()
    cores = os.cpu_count() or 1
    results: dict = {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {cores} cores ({platform.processor() or 'cpu'})",
        "python": platform.python_version(),
        "pillow": PIL.__version__,
        "h5py": h5py.__version__,
        "images": args.images,
        "source_size": [args.width, args.height],
        "image_size": args.size,
        "resize": args.resize,
        "resample": "bicubic",
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        root = Path(tmp) / "tree"
        t0 = time.perf_counter()
        make_tree(root, args.images, args.width, args.height)
        results["generate_s"] = round(time.perf_counter() - t0, 2)
        print(f"generated {args.images} JPEGs {args.width}x{args.height} in {results['generate_s']} s")
        spec = {"source": "imagenet100", "path": str(root), "image_size": args.size, "resize": args.resize}
        settings = sorted({1, cores})
        times: dict[int, list[float]] = {w: [] for w in settings}
        written = 0
        for _ in range(args.repeat):  # alternate the settings so that a busy spell hits both alike
            for workers in settings:
                t0 = time.perf_counter()
                counts = ingest.ingest(spec | {"workers": workers}, Path(tmp) / f"w{workers}.h5")
                times[workers].append(time.perf_counter() - t0)
                written = sum(c["written"] for c in counts.values())
        outputs = []
        for workers in settings:
            sec = min(times[workers])
            run = {
                "workers": workers,
                "seconds_best": round(sec, 2),
                "seconds_all": [round(x, 2) for x in times[workers]],
                "images_per_s": round(written / sec, 1),
            }
            results["runs"].append(run)
            print(
                f"workers {workers}: {written} images, best of {args.repeat} {sec:.2f} s = {written / sec:.1f} images/s"
            )
            with h5py.File(Path(tmp) / f"w{workers}.h5", "r") as f:
                outputs.append({sp: f[f"{sp}/images"][:] for sp in ("train", "val")})
        same = all(np.array_equal(outputs[0][sp], o[sp]) for o in outputs[1:] for sp in ("train", "val"))
        results["outputs_identical"] = same
        if len(results["runs"]) > 1:
            results["speedup"] = round(results["runs"][-1]["images_per_s"] / results["runs"][0]["images_per_s"], 2)
            print(f"speed-up {results['speedup']}x; outputs identical: {same}")
    write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
