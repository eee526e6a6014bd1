"""The report's footer notes: how every number of the tables was made — intervals (and their measured coverage),
checkpoint selection apart from scoring, training precision, the extractor and its provenance — read from the rows
themselves."""

from __future__ import annotations

from typing import Any

from core import verdicts
from core.reporting.results import Row
from core.reporting.tables import main_rows


def selection_note(study: dict[str, Any], rows: dict[str, Row]) -> str:
    """How rows evaluated at several checkpoints report one: selection apart from scoring (core.selection), or, for
    rows without fresh draws, the biased pick on the same draw, said as such."""
    several = [n for n in main_rows(study, rows) if len(rows[n].steps()) > 1]
    if not several:
        return ""
    if all(rows[n].selected for n in several):
        return (
            "Rows evaluated at every checkpoint select one per replicate by the FD of its per-checkpoint samples "
            "(the selection draw; the lowest FD, ties to the earliest step) and report every metric (FD, IS, KID, "
            "precision/recall, their intervals and the Findings) from a fresh draw at that checkpoint: the same "
            "sampler and number of images, seed = the selection draw's seed + 2³¹ (recorded in `selected.json`). The "
            "lowest of several noisy FDs is biased low (the winner's curse); the fresh draw never took part in the "
            "choice, so it is not. The selection draw's FD at the selected steps is shown beside it. "
        )
    return (
        "Rows with several checkpoints report the step with the best mean Fréchet distance and the IS of that same "
        "step. That step is chosen and scored on the same samples, so its FD is biased low (the winner's curse: the "
        "minimum of several noisy values); the Findings compare rows at their chosen steps. "
    )


def interval_note(rows: dict[str, Row]) -> str:
    """How the intervals were made (replicates, bootstrap), from the rows themselves."""
    reps = sorted({len(r.replicates) for r in rows.values()})
    single = [r for r in rows.values() if len(r.replicates) == 1]
    boots = {r.first.m["bootstrap"]["resamples"] for r in single if "bootstrap" in r.first.m}
    parts = []
    if any(k >= 2 for k in reps):
        parts.append(
            "a row with R ≥ 2 replicates (independently trained models and sample sets, seeds seed + k) shows the mean "
            "over them and a 95% Student t interval (t₀.₉₇₅,R−1 · s/√R; the per-replicate values are in `table.csv`)"
        )
    if boots:
        resamples = ", ".join(map(str, sorted(boots)))
        parts.append(
            f"a single run shows its value and a 95% bootstrap interval over its generated images ({resamples} "
            "seeded resamples with replacement, reference statistics fixed, the percentile interval moved down by the "
            "bootstrap's bias estimate: it covers the expected FD at this number of samples, not FD∞; it measures "
            "sampling noise only, not the spread between training runs: where trained models differ by seed it "
            f"covers the seed-averaged FD {verdicts.coverage_range('fd_boot')} of the time at nominal 95%, measured "
            "in bench/RESULTS.md, coverage under training-seed variance)"
        )
    if not parts:
        return "Intervals: none (single runs evaluated without bootstrap resamples: `evaluation.bootstrap: 0`). "
    return "Intervals: " + "; ".join(parts) + ". "


def precision_note(rows: dict[str, Row]) -> str:
    """The precision each row's model trained in (``training_precision`` of its metrics files): one phrase when all
    rows agree, else the rows of each; metrics are fp32 whatever it was."""
    by: dict[str, list[str]] = {}
    for name, r in rows.items():
        by.setdefault(r.first.m.get("training_precision") or "not recorded", []).append(name)
    if len(by) == 1:
        return f"Training precision: {next(iter(by))} (every row; metrics in fp32). "
    return "Training precision: " + "; ".join(f"{p}: {', '.join(n)}" for p, n in by.items()) + " (metrics in fp32). "


def provenance_note(m: dict[str, Any]) -> str:
    """How the metric numbers were made, from one metrics file (extractor, weights, preprocessing, N)."""
    ex = m["extractor"]
    splits = m["label"]["is"].split("(")[-1].rstrip(")")
    counts = f"{m['n_generated']} generated images against {m['n_real']} real `{m['reference']['split']}` images"
    if ex.get("standin"):  # before the Inception branch: the same architecture, but random weights
        return (
            "How these numbers were made: Fréchet distance and Inception-Score-style score on the 2048-d pool "
            "features and 1008 logits of the FID Inception-v3 architecture with random weights, a rehearsal stand-in "
            f"({ex['weights']}; SHA-256 `{ex['weights_sha256'][:16]}…`), preprocessing `{ex['preprocessing']}`; "
            f"{counts}; IS over {splits}. These are not FID/IS: they show that evaluation ran at its real shapes and "
            "say nothing about image quality. "
        )
    if ex["extractor"].startswith("inception"):
        return (
            "How these numbers were made: FID on the 2048-d pool features and IS on the 1008 logits (fc bias "
            f"excluded) of the same TF-ported FID Inception-v3 (weights SHA-256 `{ex['weights_sha256'][:16]}…`), "
            f"preprocessing `{ex['preprocessing']}`; {counts}; IS over {splits}. "
        )
    acc = ex.get("classifier_val_accuracy")
    return (
        "How these numbers were made: Fréchet distance and Inception-Score-style score on the features and "
        f"softmax of the dataset's `classifier` extractor (weights SHA-256 `{ex['weights_sha256'][:16]}…`, "
        f"preprocessing: {ex['preprocessing']}"
        + (f", validation accuracy {acc:.3f}" if acc else "")
        + f"); {counts}; IS over {splits}. These are not Inception FID/IS and are not comparable with "
        "published numbers. "
    )
