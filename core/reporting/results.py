"""A study's results as the report reads them: metrics files grouped by experiment, replicate and checkpoint, and
each row's numbers with their 95% intervals (``core.stats``).

A row (an experiment) reports one checkpoint step: its only one, or — evaluated at several — the step each
replicate selected on its per-checkpoint draw, scored on a fresh draw there (``selected``: the
``core.stages.score_selected`` metrics files, checked against the per-checkpoint ones by ``core.selection.check``);
every number of the row then comes from the fresh draws. Without them (files made before, or a report of
per-checkpoint files alone) the row reports the step whose FD, averaged over the replicates, is lowest, with its IS
of that same step, scored on the very draw that chose it (biased low). Over R ≥ 2 replicates a number is the mean
with a Student t interval; a single run carries the bootstrap interval over its generated images written by
``core.stages.evaluate``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core import selection, stats, verdicts
from core.config import METRIC_VALUE_KEY as VALUE_KEY
from core.provenance import read_json

METRICS = {"fid": "fid_interval", "is": "is_interval"}


@dataclass
class Run:
    """One metrics file: an experiment replicate's sample file at one checkpoint."""

    path: str
    m: dict[str, Any]

    @property
    def experiment(self) -> str:
        return self.m["samples"]["experiment"]

    @property
    def replicate(self) -> int:
        return int(self.m["samples"]["replicate"])

    @property
    def step(self) -> int:
        return int(self.m["samples"]["checkpoint_step"])

    @property
    def tag(self) -> str:
        return Path(self.path).stem  # step0000800 or best

    def value(self, metric: str) -> float:
        return float(self.m[VALUE_KEY[metric]])

    def resamples(self, metric: str) -> list[float] | None:
        boot = self.m.get("bootstrap")
        return None if boot is None else boot[VALUE_KEY[metric]]

    def interval(self, metric: str) -> stats.Interval | None:
        boot = self.m.get("bootstrap")
        return None if boot is None else stats.Interval.from_dict(boot[METRICS[metric]])


@dataclass
class Row:
    """An experiment's runs (per replicate, sorted by step) and the step it reports."""

    name: str
    runs: dict[int, list[Run]]
    selected: dict[int, Run] = field(default_factory=dict)
    step: int = field(init=False)

    def __post_init__(self) -> None:
        by_step: dict[int, list[float]] = defaultdict(list)
        for runs in self.runs.values():
            for r in runs:
                by_step[r.step].append(r.value("fid"))
        full = [s for s, v in by_step.items() if len(v) == len(self.runs)]  # steps every replicate reached
        self.step = min(full or by_step, key=lambda s: (float(np.mean(by_step[s])), s))

    @property
    def replicates(self) -> list[int]:
        return sorted(self.runs)

    def at(self, replicate: int, step: int | None = None) -> Run | None:
        """A replicate's run at ``step``; by default the reported one (its fresh draw where the row has them)."""
        if step is None and self.selected:
            return self.selected.get(replicate)
        step = self.step if step is None else step
        return next((r for r in self.runs[replicate] if r.step == step), None)

    def reported(self) -> list[Run]:
        """The run of each replicate at the reported step (the fresh draws of a row that selected checkpoints)."""
        return [r for rep in self.replicates if (r := self.at(rep)) is not None]

    def step_label(self) -> str:
        """The reported step: one number, or each replicate's selected step where they differ (``300/600/600``)."""
        steps = [r.step for r in self.reported()] if self.selected else [self.step]
        return str(steps[0]) if len(set(steps)) == 1 else "/".join(map(str, steps))

    def selection_estimate(self, metric: str = "fid") -> float:
        """The mean over replicates of the selection draw's value at each selected step: what the row would report
        if it were scored on the draw that chose it (biased low for FD). NaN without fresh draws."""
        if not self.selected:
            return math.nan
        values = [r.value(metric) for rep, s in self.selected.items() if (r := self.at(rep, s.step)) is not None]
        return float(np.mean(values)) if values else math.nan

    def steps(self) -> list[int]:
        return sorted({r.step for runs in self.runs.values() for r in runs})

    @property
    def first(self) -> Run:
        return self.reported()[0]

    def last_step(self) -> int:
        return self.steps()[-1]

    def values(self, metric: str, step: int | None = None) -> verdicts.RowValues:
        """Per-replicate values at a step (default: the reported one), with replicate 0's resamples."""
        runs = {rep: r for rep in self.replicates if (r := self.at(rep, step)) is not None}
        r0 = runs.get(0)
        return verdicts.RowValues(
            {rep: r.value(metric) for rep, r in runs.items()}, r0.resamples(metric) if r0 else None
        )

    def interval(self, metric: str, step: int | None = None) -> stats.Interval | None:
        """The number a table shows for this row: mean and 95% interval over replicates, or the single run's
        bootstrap interval (None when neither exists: one run evaluated without resamples)."""
        runs = [r for rep in self.replicates if (r := self.at(rep, step)) is not None]
        if len(runs) >= 2:
            return stats.t_interval([r.value(metric) for r in runs])
        return runs[0].interval(metric) if runs else None

    def estimate(self, metric: str, step: int | None = None) -> float:
        runs = [r for rep in self.replicates if (r := self.at(rep, step)) is not None]
        return float(np.mean([r.value(metric) for r in runs])) if runs else math.nan


def load_runs(metric_files: list[str], selected_files: list[str] | None = None) -> dict[str, Row]:
    """Metrics files → rows by experiment (replicates and steps sorted); ``selected_files`` are fresh draws
    (``core.stages.score_selected``), each checked against its replicate's per-checkpoint files. A row with fresh
    draws for some of its replicates only is refused (its replicates would report different things)."""
    grouped: dict[str, dict[int, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for path in metric_files:
        run = Run(path, read_json(path))
        grouped[run.experiment][run.replicate].append(run)
    fresh: dict[str, dict[int, Run]] = defaultdict(dict)
    for path in selected_files or []:
        run = Run(path, read_json(path))
        per_step = grouped.get(run.experiment, {}).get(run.replicate)
        if not per_step:
            raise ValueError(f"{path}: no per-checkpoint metrics of {run.experiment} r{run.replicate} were given")
        seeds = {int(r.m["samples"]["seed"]) for r in per_step}
        if len(seeds) != 1:
            raise ValueError(f"{run.experiment} r{run.replicate}: per-checkpoint draws with seeds {sorted(seeds)}")
        selection.check(path, run.m, {r.step: r.value("fid") for r in per_step}, seeds.pop())
        if run.replicate in fresh[run.experiment]:
            raise ValueError(f"{path}: a second fresh draw of {run.experiment} r{run.replicate}")
        fresh[run.experiment][run.replicate] = run
    rows = {}
    for exp, reps in grouped.items():
        for runs in reps.values():
            runs.sort(key=lambda r: r.step)
        if exp in fresh and fresh[exp].keys() != reps.keys():
            missing = sorted(reps.keys() - fresh[exp].keys())
            raise ValueError(f"{exp}: fresh draws at the selected checkpoint are missing for replicate(s) {missing}")
        rows[exp] = Row(exp, dict(sorted(reps.items())), dict(sorted(fresh.get(exp, {}).items())))
    return rows


@dataclass
class Finding:
    """A claim of the study tested on its rows: the difference, its interval (95%, or 90% for an equivalence
    claim: TOST at 5%), raw and adjusted p-values, the verdict, and the reference study's direction."""

    claim: dict[str, Any]
    difference: stats.Interval | None
    verdict: str
    published: str | None
    published_values: tuple[float, float] | None
    note: str = ""
    tentative: bool = False
    p_raw: float | None = None
    p_adjusted: float | None = None
    floor: float | None = None


def relative_seed_sd(rows: dict[str, Row], metric: str) -> float | None:
    """The median over rows with R ≥ 2 replicates of their seed sd relative to their mean (at the reported step):
    the spread our own training seeds show, which scales the noise floor of the reference's single numbers."""
    ratios = []
    for row in rows.values():
        vals = [r.value(metric) for r in row.reported()]
        if len(vals) >= 2 and np.mean(vals) != 0:
            ratios.append(float(np.std(vals, ddof=1) / abs(np.mean(vals))))
    return float(np.median(ratios)) if ratios else None


def published_verdict(
    claim: dict[str, Any], experiments: dict[str, Any], relative_sd: float | None = None
) -> tuple[str | None, tuple[float, float] | None, float | None]:
    """The reference study's direction on a claim, read off its published numbers: those of the claim's own rows,
    or, for a claim with a ``reference`` (resolved by ``core.plan``), those of the claim it names, with that claim's
    expectation and margin, against the noise floor ``verdicts.noise_floor`` scaled from ``relative_sd``.
    (None, None, None) where a row has no published number."""
    if ref := claim.get("reference"):
        values = (float(ref["published"]["a"]), float(ref["published"]["b"]))
        expect, margin = ref["expect"], ref.get("margin")
    else:
        pa, pb = (experiments.get(x, {}).get("published") or {} for x in (claim["a"], claim["b"]))
        key = VALUE_KEY[claim["metric"]]
        if key not in pa or key not in pb:
            return None, None, None
        values = (float(pa[key]), float(pb[key]))
        expect, margin = claim["expect"], claim.get("margin")
    floor = verdicts.noise_floor(relative_sd, *values)
    return verdicts.published_direction(*values, expect, margin, floor), values, floor


def test_claims(
    claims: list[dict[str, Any]], rows: dict[str, Row], experiments: dict[str, Any], correction: str = "holm"
) -> list[Finding]:
    """Every claim's Δ = a − b on its metric (``verdicts.difference``), its p-value adjusted over the study's claims
    that have results (``correction``), the verdict, and the reference study's published direction."""
    diffs: list[verdicts.Difference | None] = []
    notes: list[str] = []
    for c in claims:
        a, b = c["a"], c["b"]
        if a not in rows or b not in rows:
            diffs.append(None)
            notes.append("no results for " + ", ".join(x for x in (a, b) if x not in rows))
            continue
        try:
            diffs.append(verdicts.difference(rows[a].values(c["metric"]), rows[b].values(c["metric"])))
            notes.append("")
        except ValueError as err:  # e.g. a single run evaluated without bootstrap resamples
            diffs.append(None)
            notes.append(str(err))
    tested = [i for i, d in enumerate(diffs) if d is not None]
    raw = {i: verdicts.claim_p_value(diffs[i], claims[i]["expect"], claims[i].get("margin")) for i in tested}  # type: ignore[arg-type]
    adjusted = dict(zip(tested, verdicts.adjust([raw[i] for i in tested], correction), strict=True))
    relative = {m: relative_seed_sd(rows, m) for m in ("fid", "is")}
    out = []
    for i, c in enumerate(claims):
        published, pub_values, floor = published_verdict(c, experiments, relative[c["metric"]])
        d = diffs[i]
        if d is None:
            out.append(Finding(c, None, "not resolved", published, pub_values, notes[i], floor=floor))
            continue
        margin = c.get("margin")
        verdict = verdicts.decide(d, c["expect"], margin, adjusted[i], len(tested))
        level = 0.90 if c["expect"] == "equal" else 0.95
        out.append(
            Finding(
                c,
                d.interval(level),
                verdict,
                published,
                pub_values,
                tentative=not d.seed_variance,
                p_raw=raw[i],
                p_adjusted=adjusted[i],
                floor=floor,
            )
        )
    return out
