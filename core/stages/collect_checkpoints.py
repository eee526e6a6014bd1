"""Stage: the index of an experiment's per-checkpoint results, for checkpoints known only after training.

    python -m core.stages.collect_checkpoints --metrics m1.json … --samples s1.h5 … \
        --out results/full-a/metrics/X.ckpts/checkpoints.json

An experiment that samples every checkpoint of an early-stopping model (``checkpoints: all``) learns which
steps exist only when training ends; the workflow then plans their sampling and evaluation, and this index is
what the study's report depends on, so that the rest of the report's inputs are planned from the start.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from core.provenance import code_version, now_iso, read_json, write_json


def run(metrics: list[str], samples: list[str], out: str) -> None:
    steps = sorted(int(read_json(m)["samples"]["checkpoint_step"]) for m in metrics)
    missing = [s for s in samples if not Path(s).is_file()]
    if missing:
        raise FileNotFoundError(f"sample files missing: {missing}")
    write_json(
        out,
        {"metrics": metrics, "samples": samples, "steps": steps, "code_version": code_version(), "created": now_iso()},
    )
    print(f"[collect] {len(metrics)} checkpoints ({steps}) → {out}", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--metrics", nargs="*", default=[])
    p.add_argument("--samples", nargs="*", default=[])
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    run(args.metrics, args.samples, args.out)


if __name__ == "__main__":
    main()
