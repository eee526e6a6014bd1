"""Stage: a study's report — tables (Markdown and CSV) and figures — from its metrics, samples and logs.

    python -m core.stages.report --study '<JSON>' --metrics m1.json … --samples s1.h5 … --train-logs l1.csv … \
        --out-dir results/demo-a/report

Writes ``core.paths.REPORT_FILES``. One row per experiment with its 95% interval (``core.reporting.results``; a row
that selects one of several checkpoints from the fresh draws at its pick, ``--selected``),
the Findings (the study's ``claims``, each with a verdict), sweeps, quality over training, cost and the
autoencoders; a footer says how every number was made. Nothing unverified is reported: each sample file's stored
checksums must equal those its metrics file recorded when it was evaluated, and the files whose images a figure
shows are re-hashed in full. Rows made by other code than the current are marked (``code_changes: flag``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path
from typing import Any

import h5py

from core import data, rehearsal
from core.provenance import code_fingerprint, code_version, read_json, write_text
from core.reporting import figures, notes, tables
from core.reporting.findings import findings_table
from core.reporting.other_metrics import other_metrics_table
from core.reporting.results import Row, load_runs, test_claims

STAGES_RECORDED = {
    "train": ("sample_provenance", "model_code"),
    "sample": ("sample_provenance", "code"),
    "evaluate": ("provenance", "code"),
}


def check_samples(rows: dict[str, Row], samples: list[str]) -> None:
    """Every evaluated sample file (the fresh draws too) is still the one that was evaluated (its stored checksums are
    those the metrics file recorded); a file changed or remade since makes the report fail, naming it."""
    known = set(samples)
    for row in rows.values():
        for runs in [*row.runs.values(), list(row.selected.values())]:
            for run in runs:
                path = run.m["samples"]["path"]
                if path not in known:
                    continue
                with h5py.File(path, "r") as f:
                    now = {k: str(f[k].attrs.get("sha256")) for k in run.m["samples"]["checksums"]}
                if now != run.m["samples"]["checksums"]:
                    raise data.CorruptFile(
                        f"{path} is not the sample file that {run.path} evaluated (its checksums changed): rerun its "
                        "evaluation (delete the metrics file) or restore the samples"
                    )


def code_flags(rows: dict[str, Row]) -> dict[str, str]:
    """Rows whose training, sampling or evaluation code differs from the current code: {row: what differs}."""
    current = {stage: code_fingerprint(stage) for stage in STAGES_RECORDED}
    flags = {}
    for name, row in rows.items():
        differ = []
        for stage, (where, key) in STAGES_RECORDED.items():
            for run in row.reported():
                made = (run.m.get(where) or {}).get(key)
                if made is None or made["sha256"] == current[stage]["sha256"]:
                    continue
                modules = sorted(
                    m
                    for m in {*made["modules"], *current[stage]["modules"]}
                    if made["modules"].get(m) != current[stage]["modules"].get(m)
                )
                differ.append(f"{stage} (r{run.replicate}): {', '.join(modules)}")
                break
        if differ:
            flags[name] = "; ".join(differ)
    return flags


def label_csv(text: str, stamp: str) -> str:
    """The results CSV with a first column ``run`` saying what made it (a rehearsal's rows say so on every line)."""
    if not stamp:
        return text
    rows = list(csv.reader(io.StringIO(text)))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for i, row in enumerate(rows):
        w.writerow(["run" if i == 0 else f"{stamp} (not a result)", *row])
    return buf.getvalue()


def run(
    study: dict[str, Any],
    metrics: list[str],
    samples: list[str],
    train_logs: list[str],
    out_dir: str,
    autoencoders: list[str] | None = None,
    selected: list[str] | None = None,
) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = load_runs(metrics, selected)
    if not rows:
        raise ValueError("no metrics files given: nothing to report")
    check_samples(rows, samples)
    names = tables.main_rows(study, rows)
    shown = [figures.sample_file(samples, n, rows[n].first.replicate, rows[n].first.tag) for n in names]
    figures.verify_shown(samples, shown)
    flags = code_flags(rows)
    correction = study["claims"][0].get("correction", "holm") if study["claims"] else "holm"
    findings = test_claims(study["claims"], rows, study["experiments"], correction)
    first = rows[names[0]].first.m if names else next(iter(rows.values())).first.m
    stamp = rehearsal.LABEL if study.get("rehearsal") else ""
    figures.STAMP["text"] = f"{stamp}: not a result" if stamp else ""
    text = f"# {study['title']}\n\n" + (f"{rehearsal.BANNER}\n\n" if stamp else "")
    text += tables.results_table(study, rows, flags)
    text += "\n" + notes.interval_note(rows) + notes.precision_note(rows) + notes.provenance_note(first)
    if any(study["experiments"][n].get("published") for n in names):
        text += (
            "Published: the reference study's numbers for the same row (Inception FID/IS as the reference computed "
            "them). " + study["published_protocol"] + " "
        )
    text += (
        "Samples from the EMA weights unless a row says otherwise. "
        + notes.selection_note(study, rows)
        + f"Report code version `{code_version()}`.\n"
    )
    text += findings_table(findings)
    text += other_metrics_table(study, rows)
    text += tables.sweep_tables(study, rows)
    text += tables.cost_table(study, rows, train_logs, samples)
    text += tables.autoencoder_table(autoencoders or [])
    text += tables.code_table(flags)
    write_text(out / "table.md", text)
    write_text(out / "table.csv", label_csv(tables.write_csv(rows), stamp))
    figures.plot_sweeps(out / "sweeps.png", study, rows)
    figures.plot_fid_is(out / "fid_is.png", names, rows)
    figures.plot_losses(out / "loss.png", train_logs)
    figures.plot_grids(out / "grids.png", names, rows, samples)
    figures.plot_trajectories(out / "trajectory.png", names, rows, samples)
    over_training = {
        n: r
        for n, r in rows.items()
        if len(r.steps()) > 1 and study["experiments"][n].get("sweep", {}).get("kind", "checkpoints") == "checkpoints"
    }
    figures.plot_curves(out / "curves.png", over_training)
    print(text, flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", required=True, help="the study as JSON (title, layout, models, experiments, claims)")
    p.add_argument("--metrics", nargs="*", default=[])
    p.add_argument("--samples", nargs="*", default=[])
    p.add_argument("--train-logs", nargs="+", required=True)
    p.add_argument("--autoencoders", nargs="*", default=[], help="evaluate_autoencoder JSON files")
    p.add_argument(
        "--indexes", nargs="*", default=[], help="collect_checkpoints indexes of further metrics and samples"
    )
    p.add_argument("--selected", nargs="*", default=[], help="score_selected metrics files (fresh draws)")
    p.add_argument("--selected-samples", nargs="*", default=[], help="their sample files")
    p.add_argument("--out-dir", required=True)
    args = p.parse_args(argv)
    metrics, samples = list(args.metrics), list(args.samples) + list(args.selected_samples)
    for index in args.indexes:
        entry = read_json(index)
        metrics += entry["metrics"]
        samples += entry["samples"]
    run(json.loads(args.study), metrics, samples, args.train_logs, args.out_dir, args.autoencoders, args.selected)


if __name__ == "__main__":
    main()
