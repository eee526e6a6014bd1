"""Stage: write a dataset into the HDF5 image layout (``core.data``).

    python -m core.stages.make_dataset --spec '<dataset spec JSON>' --out results/data/shapes32.h5

The built-in source ``shapes`` is generated procedurally from the spec's seed; the image-folder sources
(``imagenet100``, ``sysu-shapes``, ``folder``) are decoded and resized by ``core.ingest``.
"""

from __future__ import annotations

import argparse
import json
import time

import h5py

from core import data, shapes
from core.provenance import atomic_path, provenance


def make_shapes(spec: dict, out: str) -> None:
    size, seed = int(spec["image_size"]), int(spec["seed"])
    splits = {name: int(n) for name, n in spec["splits"].items()}
    t0 = time.time()
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        data.write_root_attrs(
            f,
            "dataset",
            size,
            shapes.CLASS_NAMES,
            provenance(spec, source="shapes (built-in procedural generator)", counts=splits),
        )
        for split, count in splits.items():
            images, labels = data.create_split(f, split, count, size, spec.get("compression"))
            block = 1024
            for start in range(0, count, block):
                n = min(block, count - start)
                imgs, labs = shapes.generate(split, start, n, size, seed)
                images[start : start + n] = imgs
                labels[start : start + n] = labs
            f[split].attrs["count"] = count
            print(f"[make_dataset] {split}: {count} images at {size}x{size}", flush=True)
    print(f"[make_dataset] wrote {out} in {time.time() - t0:.1f}s", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", required=True, help="dataset spec as JSON (one entry of config 'datasets')")
    p.add_argument("--out", required=True)
    p.add_argument("--name", default="<name>", help="the dataset's key in config.yaml (for error messages)")
    p.add_argument("--workers", type=int, default=0, help="decoding processes for image folders (0: the spec's)")
    args = p.parse_args(argv)
    spec = json.loads(args.spec)
    if spec["source"] == "shapes":
        make_shapes(spec, args.out)
        return
    from core import ingest

    if args.workers > 0 and not spec.get("workers"):
        spec["workers"] = args.workers
    counts = ingest.ingest(spec, args.out, config_key=f"datasets.{args.name}.path")
    print(f"[make_dataset] {args.out}: {json.dumps(counts)}", flush=True)


if __name__ == "__main__":
    main()
