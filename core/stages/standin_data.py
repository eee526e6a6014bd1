"""Stage: write a synthetic stand-in image tree in a real dataset's layout, for the rehearsal (``core.standin``).

    python -m core.stages.standin_data --layout imagenet100 \
        --spec '{"train_per_class": 4, "val_per_class": 2}' --out results/rehearsal/standin/imagenet100

``--spec`` keys: ``imagenet100``: ``train_per_class``, ``val_per_class``; ``sysu-shapes``: ``per_class``; both:
``seed`` (default 0). The same tree already at ``--out`` is kept; a folder without ``STANDIN.txt`` is refused.
"""

from __future__ import annotations

import argparse
import json
import time

from core import standin


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layout", required=True, choices=standin.LAYOUTS)
    p.add_argument("--spec", required=True, help="JSON: images per class (and seed); see above")
    p.add_argument("--out", required=True, help="the tree's root folder")
    args = p.parse_args(argv)
    try:
        spec = json.loads(args.spec)
    except json.JSONDecodeError as err:
        p.error(f"--spec is not JSON ({err})")
    if not isinstance(spec, dict):
        p.error(f"--spec must be a JSON object, got {args.spec!r}")
    t0 = time.time()
    s = standin.write_tree(args.layout, args.out, spec)
    splits = ", ".join(f"{n} {split}" for split, n in s["splits"].items())
    what = "kept (same spec)" if s["reused"] else f"written in {time.time() - t0:.1f}s"
    print(f"[standin_data] {args.layout} stand-in at {args.out}: {s['classes']} classes, {splits} images; {what}")


if __name__ == "__main__":
    main()
