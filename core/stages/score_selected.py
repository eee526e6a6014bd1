"""Stage: select an experiment replicate's checkpoint on one draw of samples, score it on a fresh one.

    python -m core.stages.score_selected --metrics results/demo-b/metrics/baseline/r0/step0000300.json … \
        --checkpoint-dir results/demo-b/models/baseline/r0/ckpt --spec '<selected spec JSON>' \
        --reference results/refstats/shapes12/train-classifier-n1000.npz --extractor '<JSON>' --options '<JSON>' \
        --samples-out results/demo-b/samples/baseline/r0/selected.h5 \
        --out results/demo-b/metrics/baseline/r0/selected.json

The per-checkpoint metrics files (the selection draw) choose the step (``core.selection.select_step``: lowest FD,
ties to the earliest). The ``sample`` stage then draws ``num_samples`` new images from that checkpoint with the
spec's fresh seed (``core.plan.Plan.selected_spec``) and the ``evaluate`` stage scores them, each run as its own
process (``python -m core.stages.<stage>``: no stage imports another; TensorBoard off, the fresh draw is no point of
the training curve). The metrics file is the evaluation's plus ``selection``: the rule, every candidate's FD, the
selected step, both seeds and both FDs; it appears only complete. Everything is checked before sampling: the
metrics files belong to this experiment replicate, share the selection draw's seed, and the fresh seed differs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from core import paths, selection, tboard
from core.provenance import read_json, write_json


def candidates(metric_files: list[str], spec: dict[str, Any]) -> tuple[dict[int, float], int]:
    """{step: FD} of the selection draw and its seed, from the per-checkpoint metrics files of the spec's
    experiment replicate; ValueError naming the file that belongs elsewhere or breaks the draw's seed."""
    if not metric_files:
        raise ValueError("no per-checkpoint metrics files given (--metrics)")
    fds: dict[int, float] = {}
    seeds = set()
    for path in metric_files:
        m = read_json(path)
        s = m["samples"]
        if (s["experiment"], int(s["replicate"])) != (spec["experiment"], int(spec["replicate"])):
            raise ValueError(
                f"{path} is of {s['experiment']} r{s['replicate']}, not {spec['experiment']} r{spec['replicate']}"
            )
        step = int(s["checkpoint_step"])
        if step in fds:
            raise ValueError(f"{path}: step {step} is given twice")
        fds[step] = float(m["fid"])
        seeds.add(int(s["seed"]))
    if len(seeds) != 1:
        raise ValueError(f"the per-checkpoint samples were drawn with different seeds {sorted(seeds)}: not one draw")
    seed = seeds.pop()
    if seed != spec["selection_seed"] or spec["seed"] != selection.fresh_seed(seed):
        raise ValueError(
            f"the spec's seeds (selection {spec['selection_seed']}, fresh {spec['seed']}) do not match the selection "
            f"draw's seed {seed} and its fresh seed {selection.fresh_seed(seed)}"
        )
    return fds, seed


def run_stage(stage: str, args: list[str]) -> None:
    """``python -m core.stages.<stage> <args>`` in this job's environment with TensorBoard off; a failure names it."""
    cmd = [sys.executable, "-m", f"core.stages.{stage}", *args]
    done = subprocess.run(cmd, env={**os.environ, tboard.ENV: "0"}, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the {stage} stage of the fresh draw failed (exit status {done.returncode}); see above")


def run(
    metric_files: list[str],
    checkpoint_dir: str,
    spec: dict[str, Any],
    reference: str,
    extractor: dict[str, Any],
    options: dict[str, Any],
    samples_out: str,
    out: str,
    autoencoder: str | None = None,
    device: str = "auto",
    threads: int = 0,
) -> dict[str, Any]:
    fds, seed = candidates(metric_files, spec)
    step = selection.select_step(fds)
    checkpoint = paths.checkpoint_in(checkpoint_dir, step)
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"{checkpoint}: the selected checkpoint (step {step}) does not exist")
    print(f"[score_selected] step {step} selected (FD {fds[step]:.4f} on seed {seed}) among {sorted(fds)}", flush=True)
    sample_args = ["--checkpoint", checkpoint, "--spec", json.dumps(spec), f"--autoencoder={autoencoder or ''}"]
    run_stage("sample", [*sample_args, "--out", samples_out, "--device", device, "--threads", str(threads)])
    scored = Path(out).with_name(f".{Path(out).name}.evaluate")  # the evaluation alone, before its selection
    evaluation = ["--reference", reference, "--extractor", json.dumps(extractor), "--options", json.dumps(options)]
    run_stage("evaluate", ["--samples", samples_out, *evaluation, "--out", str(scored)])
    result = read_json(scored)
    result["selection"] = selection.record(fds, seed, result, metric_files)
    write_json(out, result)
    scored.unlink()
    if Path(paths.cost(str(scored))).is_file():  # what the evaluation cost, beside the file it became
        os.replace(paths.cost(str(scored)), paths.cost(out))
    print(
        f"[score_selected] fresh draw (seed {spec['seed']}): FD {result['fid']:.4f}; selection draw {fds[step]:.4f}",
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--metrics", nargs="+", required=True, help="the replicate's per-checkpoint metrics files")
    p.add_argument("--checkpoint-dir", required=True)
    p.add_argument("--spec", required=True, help="sample spec as JSON (core.plan.Plan.selected_spec)")
    p.add_argument("--reference", required=True)
    p.add_argument("--extractor", required=True, help="extractor spec as JSON")
    p.add_argument("--options", required=True, help="JSON: core.plan.Plan.evaluation_options")
    p.add_argument("--samples-out", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--autoencoder", default="", help="latent models: the vae.pt whose latents they learned")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    run(
        args.metrics,
        args.checkpoint_dir,
        json.loads(args.spec),
        args.reference,
        json.loads(args.extractor),
        json.loads(args.options),
        args.samples_out,
        args.out,
        args.autoencoder or None,
        args.device,
        args.threads,
    )


if __name__ == "__main__":
    main()
