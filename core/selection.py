"""Checkpoint selection apart from scoring (the winner's curse). Free of heavy imports (planning uses it).

An experiment sampled at every checkpoint (``checkpoints: all``) picks one to report. Picking the lowest FD and
reporting that same FD reports the minimum of several noisy values: biased low, more so the more checkpoints and
the noisier each FD. So the pick and the score use different draws of images. The *selection draw* is the
per-checkpoint sample files (seed ``s`` = the experiment's seed + replicate k, the same at every checkpoint); each
replicate picks the step with the lowest FD of that draw (``select_step``; ties: the earliest step). The *fresh
draw* is a new sample file at the picked checkpoint: same sampler, number of images and model, seed
``fresh_seed(s)`` = s + 2³¹. A config's seeds are at most 2³¹ − 1, so the fresh seed is never a selection draw's
seed. Every metric the report shows for the row (FD, IS, KID, precision/recall, their intervals and the claims'
verdicts) comes from the fresh draw, which the pick never saw: unbiased for the picked checkpoint.

``core.stages.score_selected`` makes the fresh draw and records the pick (``selection`` in its metrics file);
``check`` lets the report confirm that record against the per-checkpoint metrics it reads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: added to the selection draw's seed (at most 2³¹ − 1 + replicate) for the fresh draw
FRESH_SEED_OFFSET = 2**31
RULE = "the lowest FD of the selection draw (ties: the earliest step)"


def fresh_seed(selection_seed: int) -> int:
    """The fresh draw's seed from the selection draw's (the experiment's seed + replicate)."""
    return int(selection_seed) + FRESH_SEED_OFFSET


def select_step(fds: Mapping[int, float]) -> int:
    """The checkpoint step with the lowest FD; ties go to the earliest step. A NaN or infinite FD is an error (it
    would silently lose or win every comparison)."""
    if not fds:
        raise ValueError("no checkpoints to select from")
    bad = {s: v for s, v in fds.items() if not math.isfinite(v)}
    if bad:
        raise ValueError(f"non-finite FD at step(s) {sorted(bad)}: cannot select a checkpoint")
    return min(fds, key=lambda s: (fds[s], s))


def record(candidates: Mapping[int, float], selection_seed: int, fresh: dict[str, Any], files: list[str]) -> dict:
    """The ``selection`` entry of a fresh draw's metrics file: the rule, the candidates, both draws' seeds and FDs."""
    step = select_step(candidates)
    return {
        "rule": RULE,
        "selected_step": step,
        "candidates": {str(s): float(v) for s, v in sorted(candidates.items())},
        "selection_fid": float(candidates[step]),
        "selection_seed": int(selection_seed),
        "fresh_seed": int(fresh["samples"]["seed"]),
        "fresh_fid": float(fresh["fid"]),
        "metrics_files": list(files),
    }


def check(path: str, m: dict[str, Any], candidates: Mapping[int, float], selection_seed: int) -> dict[str, Any]:
    """The ``selection`` record of the fresh draw's metrics file ``m`` (at ``path``), confirmed against the
    per-checkpoint FDs ``candidates`` and seed of the selection draw the report reads; ValueError naming ``path`` if
    it is missing, stale (made from other per-checkpoint metrics) or not a fresh draw."""
    sel = m.get("selection")
    if not isinstance(sel, dict):
        raise ValueError(f"{path} has no selection record: it is not a fresh draw of core.stages.score_selected")
    recorded = {int(s): float(v) for s, v in sel["candidates"].items()}
    if recorded != {int(s): float(v) for s, v in candidates.items()}:
        raise ValueError(
            f"{path} selected among other per-checkpoint FDs ({recorded}) than the metrics files now hold "
            f"({dict(candidates)}): it is stale; rerun it (delete it)"
        )
    step = select_step(candidates)
    if sel["selected_step"] != step or int(m["samples"]["checkpoint_step"]) != step:
        raise ValueError(f"{path}: the rule selects step {step}, the file holds step {m['samples']['checkpoint_step']}")
    seed = int(m["samples"]["seed"])
    if seed != fresh_seed(selection_seed) or sel["selection_seed"] != selection_seed or seed == selection_seed:
        raise ValueError(
            f"{path}: sampled with seed {seed}, not the fresh seed {fresh_seed(selection_seed)} of the selection "
            f"draw's seed {selection_seed}: it is not a fresh draw"
        )
    if float(sel["fresh_fid"]) != float(m["fid"]):
        raise ValueError(f"{path}: its FD {m['fid']} is not the fresh draw's {sel['fresh_fid']}")
    return sel
