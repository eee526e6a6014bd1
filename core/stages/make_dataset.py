"""Stage: write a dataset into the HDF5 image layout (``core.data``).

    python -m core.stages.make_dataset --spec '<datasets entry JSON, with its name>' \
        --requirements '<JSON>' --out results/data/shapes12.h5

The built-in source ``shapes`` is generated procedurally from the spec's seed; the image-folder sources
(``imagenet100``, ``sysu-shapes``, ``folder``) are decoded and resized by ``core.ingest``. This is the first job
that knows the size of each split of an image folder, so it checks the studies' needs (``--requirements``: the
reference images, KID subsets, batch sizes, a val split; ``core.requirements``) before anything
trains on the data, naming the config key and the real count. The finished file is sealed (checksums of every
split, ``content_sha256``: the identity a model trained on it records) and only then appears at ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import h5py

from core import data, folders, shapes
from core.provenance import atomic_path, provenance


def make_shapes(spec: dict[str, Any], out: str | Path) -> dict[str, int]:
    """The built-in procedural dataset: ``splits`` images per split at ``image_size``², seeded by ``seed``."""
    size, seed = int(spec["image_size"]), int(spec["seed"])
    splits = {name: int(n) for name, n in spec["splits"].items()}
    t0 = time.time()
    with h5py.File(out, "w") as f:
        data.write_root_attrs(
            f,
            "dataset",
            size,
            shapes.CLASS_NAMES,
            provenance(spec, source="shapes (built-in procedural generator)", counts=splits),
        )
        f.attrs["channels"] = 3
        for split, count in splits.items():
            images, labels = data.create_split(f, split, count, size, spec["compression"])
            block = 1024
            for start in range(0, count, block):
                n = min(block, count - start)
                imgs, labs = shapes.generate(split, start, n, size, seed)
                images[start : start + n] = imgs
                labels[start : start + n] = labs
            f[split].attrs["count"] = count
            print(f"[make_dataset] {split}: {count} images at {size}x{size}", flush=True)
    print(f"[make_dataset] generated in {time.time() - t0:.1f}s", flush=True)
    return splits


def run(spec: dict[str, Any], out: str, requirements: list[dict[str, Any]], workers: int = 0) -> dict[str, Any]:
    """Make the dataset ``spec`` (a complete ``datasets`` entry with its ``name``) at ``out``; return the counts."""
    name = spec["name"]
    entry = {k: v for k, v in spec.items() if k != "name"}
    with atomic_path(out) as tmp:
        if entry["source"] == "shapes":
            counts: dict[str, Any] = make_shapes(entry, tmp)
        else:
            from core import ingest

            if workers > 0 and not entry["workers"]:
                entry["workers"] = workers
            counts = ingest.ingest(entry, tmp, config_key=f"datasets.{name}.path")
        folders.check_requirements(counts, requirements, name)
        with h5py.File(tmp, "a") as f:
            digest = data.seal(f)
    print(f"[make_dataset] {out}: {json.dumps(counts)}; content {digest[:16]}…", flush=True)
    return counts


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", required=True, help="the dataset's config entry as JSON, with its name")
    p.add_argument("--requirements", default="[]", help="JSON: what the studies need of its splits")
    p.add_argument("--out", required=True)
    p.add_argument("--workers", type=int, default=0, help="decoding processes for image folders (0: the spec's)")
    args = p.parse_args(argv)
    run(json.loads(args.spec), args.out, json.loads(args.requirements), args.workers)


if __name__ == "__main__":
    main()
