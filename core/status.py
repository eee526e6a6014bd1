"""Where a study stands, on one screen, from the files on disk: ``python -m core.status``.

    python -m core.status                                  # the studies `snakemake` would build here
    python -m core.status --configfile mine.yaml --config studies_to_run=[mine]
    python -m core.status --slurm                          # plus SLURM's view (job id, state, node, time)

Takes the same ``--configfile``/``--config`` as snakemake and picks the studies as the workflow does (named ones,
else ``studies_to_run``, else ``default_studies``: local, or cluster with ``--slurm``). For each job of the plan
(``core.jobs``) it prints one state, read from the files (docs/watching.md has the rules):

- done: every output exists and Snakemake has no incomplete marker on any;
- running: Snakemake marked it started (``.snakemake/incomplete``) and a Snakemake process of this directory is
  alive, or SLURM runs it;
- queued: SLURM holds it pending, or (no --slurm) Snakemake is alive and every input exists, finished;
- failed: its log ends in an error (the line is shown), or SLURM ended it failed, timed out, out of memory;
- stale: left unfinished by a run that is gone: a marker with no live Snakemake, a training state or partial
  sample file without a finished output (the next run continues it), or outputs kept under a marker;
- not started: none of the above.

Training jobs show the step reached, the recent step rate and an ETA (the live ``state/train_log.csv``); other long
jobs their last progress line (``core.progress``); experiments their latest provisional FD and IS. Reads only:
takes no Snakemake lock and writes nothing but ``<results>/<study>/status.md`` (``--no-write``: not that either).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core import paths, progress, slurm_jobs
from core.config import SAFE_LOADER, ConfigError
from core.jobs import Job, study_jobs
from core.plan import Plan
from core.provenance import atomic_path

STATES = ("done", "running", "queued", "failed", "stale", "not started")
ERROR_RE = re.compile(
    r"^(?:[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)\b.*|Killed\b.*|Segmentation fault.*|slurmstepd: error.*)"
)
TAIL_BYTES = 16384


# ---- the config, as snakemake reads it --------------------------------------------------------------------------


def parse_config_value(text: str) -> Any:
    """A ``--config key=value`` value as snakemake parses it: int, float, True/False, YAML (as strings), text."""
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    if text in ("True", "False"):
        return text == "True"
    try:
        return yaml.load(text, Loader=yaml.BaseLoader)
    except yaml.YAMLError:
        return text


def update(base: dict[str, Any], over: dict[str, Any]) -> None:
    """Snakemake's ``update_config``: nested mappings merged, anything else replaced."""
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            update(base[k], v)
        else:
            base[k] = v


def load_config(directory: Path, configfiles: list[str], entries: list[str]) -> dict[str, Any]:
    """The Snakefile's ``config.yaml``, then each ``--configfile`` in order, then the ``--config`` entries."""
    files = [directory / "config.yaml", *(Path(f) if Path(f).is_absolute() else directory / f for f in configfiles)]
    config: dict[str, Any] = {}
    for f in files:
        if f.exists() or f != files[0]:
            update(config, yaml.load(f.read_text(), Loader=SAFE_LOADER) or {})
    for entry in entries:
        key, sep, value = entry.partition("=")
        if not sep:
            raise ConfigError(f"--config {entry!r}: expected KEY=VALUE")
        update(config, {key: None if value == "" else parse_config_value(value)})
    return config


# ---- what Snakemake left on disk --------------------------------------------------------------------------------


@dataclass
class Snakemake:
    """Snakemake's records in ``<directory>/.snakemake``: incomplete markers (output path → SLURM job id or
    None), whether locks are held, and the live Snakemake processes whose working directory this is."""

    incomplete: dict[str, str | None] = field(default_factory=dict)
    locked: bool = False
    pids: list[int] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return bool(self.pids)

    @classmethod
    def read(cls, directory: Path) -> Snakemake:
        meta = directory / ".snakemake"
        view = cls(locked=any((meta / "locks").glob("*.lock")), pids=snakemake_pids(directory))
        base = meta / "incomplete"
        for dirpath, _, names in os.walk(base):
            for name in names:
                if name == "migration_underway":
                    continue
                rel = Path(dirpath, name).relative_to(base)
                encoded = "".join(part.removeprefix("@") for part in rel.parts)
                try:
                    key = base64.urlsafe_b64decode(encoded).decode()
                    record = json.loads(Path(dirpath, name).read_text() or "{}")
                except (ValueError, OSError):
                    continue
                job_id = record.get("external_jobid") if isinstance(record, dict) else None
                view.incomplete[os.path.normpath(key)] = None if job_id is None else str(job_id)
        return view


def snakemake_pids(directory: Path) -> list[int]:
    """Processes running snakemake with ``directory`` as their working directory (read from /proc; none where
    there is no /proc or the processes are another user's)."""
    found, target = [], directory.resolve()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if not _is_snakemake(argv) or int(proc.name) == os.getpid():
                continue
            if Path(os.readlink(proc / "cwd")) == target:
                found.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return sorted(found)


def _is_snakemake(argv: list[bytes]) -> bool:
    """``snakemake …``, ``python …/bin/snakemake …`` or ``python -m snakemake …``."""
    names = [os.path.basename(a.decode(errors="replace")) for a in argv[:3]] + ["", "", ""]
    return names[0] == "snakemake" or names[1] == "snakemake" or names[1:3] == ["-m", "snakemake"]


# ---- reading one job --------------------------------------------------------------------------------------------


def tail_lines(path: Path, size: int = TAIL_BYTES) -> list[str]:
    """The last lines of a file (up to ``size`` bytes of it), without reading the rest."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            end = fh.tell()
            fh.seek(max(0, end - size))
            text = fh.read().decode(errors="replace")
    except OSError:
        return []
    lines = text.splitlines()
    return lines[1:] if end > size else lines


def error_line(lines: list[str]) -> str | None:
    """The last error line of a log's tail, unless the job logged progress after it (a later attempt)."""
    for text in reversed(lines):
        s = text.strip()
        if s.startswith(("[progress]", "[train] step", "[train] resuming", "[sample] resuming")):
            return None
        if ERROR_RE.match(s):
            return s
    return None


def train_progress(csv_path: Path, total: int, now: float) -> dict[str, Any] | None:
    """Step reached, recent rate (steps/s over the last minute of the newest attempt) and ETA from the tail of a
    training log (``step,...,elapsed_s,...`` rows; a resumed attempt restarts ``elapsed_s``)."""
    lines = tail_lines(csv_path)
    if len(lines) < 2:
        return None
    rows = []
    for text in lines:
        f = text.split(",")
        if len(f) >= 6 and f[0].isdigit():
            rows.append((int(f[0]), float(f[5])))
    if not rows:
        return None
    segment = [rows[-1]]
    for step, elapsed in reversed(rows[:-1]):
        if elapsed > segment[-1][1] or segment[0][1] - elapsed > 60:
            break
        segment.append((step, elapsed))
    (step, elapsed), (step0, elapsed0) = segment[0], segment[-1]
    rate = (step - step0) / (elapsed - elapsed0) if elapsed > elapsed0 and step > step0 else None
    return {
        "step": step,
        "total": total,
        "rate": rate,
        "eta_s": (total - step) / rate if rate else None,
        "age_s": now - csv_path.stat().st_mtime,
    }


def latest_metrics(directory: Path, jobs: list[Job]) -> dict[str, dict[str, Any]]:
    """Per experiment, its newest evaluated checkpoint's FD and IS (``provisional`` while some are left)."""
    out: dict[str, dict[str, Any]] = {}
    for job in jobs:
        if job.rule != "evaluate":
            continue
        e = job.info["experiment"]
        entry = out.setdefault(e, {"evaluated": 0, "planned": 0})
        entry["planned"] += 1
        path = directory / job.outputs[0]
        if not path.exists():
            continue
        entry["evaluated"] += 1
        try:
            m = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        step = job.info["step"]
        key = -1 if step == "best" else int(step)
        if key >= entry.get("key", -2):
            entry.update(key=key, step=paths.step_tag(step), fid=m["fid"], is_mean=m["is_mean"], label=m["label"])
    return {e: v for e, v in out.items() if "fid" in v}


@dataclass
class Row:
    job: Job
    state: str
    detail: str = ""
    error: str | None = None
    log: str | None = None
    slurm: str = ""


def classify(job: Job, directory: Path, sm: Snakemake, slurm: slurm_jobs.SlurmJob | None, now: float) -> Row:
    """The job's state and what to show beside it (the rules: this module's docstring)."""
    exists = [(directory / o).exists() for o in job.outputs]
    marked = [os.path.normpath(o) in sm.incomplete for o in job.outputs]
    log = directory / job.log
    lines = tail_lines(log)
    detail = ""
    if job.rule == "train":
        state_log = directory / job.info["state_dir"] / "train_log.csv"
        csv_path = state_log if state_log.exists() else directory / job.outputs[1]
        p = train_progress(csv_path, job.info["total"], now) if csv_path.exists() else None
        if p is not None:
            upto = "≤" if job.info["early_stopping"] else ""
            detail = f"step {p['step']}/{upto}{p['total']}"
            if p["rate"] and p["step"] < p["total"]:
                detail += f", {progress.rate_text(p['rate'])} steps/s, eta {progress.clock(p['eta_s'])}"
            if p["age_s"] > 120 and p["step"] < p["total"]:
                detail += f" (last row {progress.clock(p['age_s'])} ago)"
    elif (r := progress.last_reading(lines)) is not None:
        detail = f"{r.done}/{r.total} {r.unit}" + (f", eta {progress.clock(r.eta_s)}" if r.eta_s is not None else "")
    row = Row(job, "not started", detail, slurm=slurm.summary if slurm else "")
    if slurm is not None and slurm.state in ("PENDING", "CONFIGURING", "REQUEUED"):
        row.state = "queued"
    elif (slurm is not None and slurm.state in slurm_jobs.ACTIVE) or (
        any(marked) and sm.alive and (slurm is None or slurm.state not in slurm_jobs.FAILED)
    ):
        row.state = "running"
    elif all(exists) and not any(marked):
        row.state = "done"
    elif (err := error_line(lines)) is not None or (slurm is not None and slurm.state in slurm_jobs.FAILED):
        row.state, row.log = "failed", job.log
        row.error = err or f"SLURM: {slurm.state if slurm else ''}"
    elif any(marked) or any(exists) or _partial(job, directory):
        row.state = "stale"
    elif sm.alive and all((directory / i).exists() and os.path.normpath(i) not in sm.incomplete for i in job.inputs):
        row.state = "queued"  # every input is there and finished
    return row


def _partial(job: Job, directory: Path) -> bool:
    """Work an interrupted attempt left that the next one continues: a training state, a partial sample file."""
    if job.rule == "train":
        return (directory / job.info["state_dir"] / "train_log.csv").exists()
    if job.rule == "sample":
        return Path(f"{directory / job.outputs[0]}.partial").exists()
    return False


# ---- the whole view ---------------------------------------------------------------------------------------------


def collect(
    plan: Plan,
    studies: list[str],
    directory: Path,
    use_slurm: bool = False,
    now: float | None = None,
    slurm_logdir: Path | None = None,
) -> dict[str, Any]:
    """Every study's rows, metrics and counts, and the Snakemake (and SLURM) situation (the SLURM plugin's logs
    in ``slurm_logdir``, default ``.snakemake/slurm_logs``)."""
    now = time.time() if now is None else now
    sm = Snakemake.read(directory)
    per_study = {s: study_jobs(plan, s, directory) for s in studies}
    seen: set[tuple[str, str]] = set()
    for s in studies:  # a job shared by studies (data, extractor, reference) is listed under the first
        kept = []
        for j in per_study[s]:
            if (j.rule, j.label) not in seen or j.rule == "report":
                seen.add((j.rule, j.label))
                kept.append(j)
        per_study[s] = kept
    queue: list[slurm_jobs.SlurmJob] = []
    accounting: list[slurm_jobs.SlurmJob] = []
    problems: list[str] = []
    ids: dict[tuple[str, str], set[str]] = {}
    if use_slurm:
        for s in studies:
            for j in per_study[s]:
                logs = (slurm_logdir or directory / ".snakemake" / "slurm_logs") / j.slurm_log_dir
                found = {p.stem.split("_")[0] for p in logs.glob("*.log")}
                found |= {sm.incomplete[k] for o in j.outputs if (k := os.path.normpath(o)) in sm.incomplete} - {None}
                ids[(j.rule, j.label)] = {str(i) for i in found if i}
        queue, accounting, problems = slurm_jobs.query(set().union(*ids.values()) if ids else set())
    out: dict[str, Any] = {"snakemake": sm, "studies": {}, "slurm_problems": problems, "time": now}
    for s in studies:
        rows = []
        for j in per_study[s]:
            record = None
            if use_slurm:
                record = slurm_jobs.join(j.slurm_comment, ids.get((j.rule, j.label), set()), queue, accounting)
            rows.append(classify(j, directory, sm, record, now))
        out["studies"][s] = {
            "rows": rows,
            "counts": Counter(r.state for r in rows),
            "metrics": latest_metrics(directory, per_study[s]),
        }
    return out


def _headline(view: dict[str, Any], directory: Path) -> str:
    sm: Snakemake = view["snakemake"]
    if sm.alive:
        return f"Snakemake running in {directory} (pid {', '.join(map(str, sm.pids))})"
    if sm.locked:
        return (
            f"no Snakemake process in {directory} on this host, but its locks are held (another host, or a killed run)"
        )
    return f"no Snakemake running in {directory}"


def _shown(row: Row, everything: bool) -> bool:
    return everything or row.job.rule == "train" or row.state not in ("done", "not started")


def render(view: dict[str, Any], directory: Path, everything: bool = False, markdown: bool = False) -> str:
    """The screen (or, with ``markdown``, status.md: every job, as tables)."""
    out = [("# Status\n\n" if markdown else "") + _headline(view, directory) + f" — {time.ctime(view['time'])}"]
    for p in view["slurm_problems"]:
        out.append(f"SLURM: {p}")
    for study, v in view["studies"].items():
        c = v["counts"]
        counts = ", ".join(f"{c[s]} {s}" for s in STATES if c[s])
        out.append(f"\n{'## ' if markdown else '== '}{study}: {sum(c.values())} jobs: {counts}")
        by_rule: dict[str, Counter] = {}
        for r in v["rows"]:
            by_rule.setdefault(r.job.rule, Counter())[r.state] += 1
        per_rule = "; ".join(f"{rule} {n['done']}/{sum(n.values())} done" for rule, n in by_rule.items())
        out.append(
            "\n" + per_rule if markdown else textwrap.fill(per_rule, 116, initial_indent="   ", subsequent_indent="   ")
        )
        rows = [r for r in v["rows"] if markdown or _shown(r, everything)]
        if markdown:
            out.append("\n| job | state | progress | log / error |\n|---|---|---|---|")
        for r in rows:
            extra = " ".join(x for x in (r.detail, r.slurm) if x)
            if markdown:
                err = f"`{r.log}`: {r.error}" if r.error else ""
                out.append(f"| {r.job.rule} {r.job.label} | {r.state} | {extra} | {err.replace('|', '/')} |")
                continue
            out.append(f"   {r.job.rule:<20} {r.job.label:<44} {r.state:<11} {extra}".rstrip())
            if r.error:
                out.append(f"      log {r.log}\n      {r.error}")
        if v["metrics"]:
            out.append("\n" if markdown else "   latest evaluated checkpoints (provisional while some are left):")
            for e, m in v["metrics"].items():
                left = "" if m["evaluated"] == m["planned"] else f" ({m['evaluated']}/{m['planned']} evaluated)"
                line = (
                    f"{e} {m['step']}: {m['label']['fid']} {m['fid']:.3f}, {m['label']['is']} {m['is_mean']:.3f}{left}"
                )
                out.append(f"- {line}" if markdown else f"      {line}")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("studies", nargs="*", help="studies to show (default: those snakemake builds without a target)")
    p.add_argument("--configfile", "--configfiles", nargs="+", default=[], help="as snakemake's --configfile")
    p.add_argument("--config", nargs="+", default=[], help="as snakemake's --config key=value")
    p.add_argument("--directory", "-d", default=".", help="the workflow's working directory (default: here)")
    p.add_argument("--slurm", action="store_true", help="join squeue/sacct; default studies: the cluster's")
    p.add_argument("--slurm-logdir", default=None, help="as snakemake's --slurm-logdir, if you gave one")
    p.add_argument("--all", action="store_true", help="list every job (default: training and unfinished jobs)")
    p.add_argument("--no-write", action="store_true", help="do not write <results>/<study>/status.md")
    args = p.parse_args(argv)
    directory = Path(args.directory)
    try:
        plan = Plan(load_config(directory, args.configfile, args.config))
        for s in args.studies:
            if s not in plan.studies():
                raise ConfigError(f"study '{s}' is not defined under 'studies' (known: {', '.join(plan.studies())})")
        studies = args.studies or plan.default_studies(on_cluster=args.slurm)
    except (ConfigError, OSError, yaml.YAMLError) as err:
        print(f"core.status: {err}", file=sys.stderr)
        return 2
    logdir = Path(args.slurm_logdir) if args.slurm_logdir else None
    view = collect(plan, studies, directory, use_slurm=args.slurm, slurm_logdir=logdir)
    print(render(view, directory, everything=args.all), end="")
    if not args.no_write:
        for s in studies:
            target = directory / paths.status_file(plan.root, s)
            if (directory / plan.root).is_dir():  # nothing to tell before the first job
                one = {**view, "studies": {s: view["studies"][s]}}
                with atomic_path(target) as tmp:
                    Path(tmp).write_text(render(one, directory, markdown=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
