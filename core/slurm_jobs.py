"""SLURM's view of a study's jobs (``python -m core.status --slurm``): ``squeue`` and ``sacct`` output, parsed by
pure functions, joined to the plan's jobs.

How a job is found (snakemake-executor-plugin-slurm 2.x): every sbatch gets ``--job-name <run uuid>`` and
``--comment rule_<rule>_wildcards_<wildcard values joined by _>`` (``core.jobs.Job.slurm_comment``), and its log
is ``<logdir>/rule_<rule>/<wildcards>/<jobid>.log`` (``--slurm-logdir``, default ``.snakemake/slurm_logs``);
Snakemake's incomplete marker of a submitted job holds its SLURM job id. ``squeue`` is joined by the comment or
the job id, ``sacct`` (which stores comments only with ``AccountingStoreFlags=job_comment``) by the job ids those
logs and markers name.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

# --states=all: finished jobs too, for MinJobAge after they end (where sacct has no accounting to read)
SQUEUE = ["squeue", "--me", "--states=all", "--noheader", "--format=%i|%T|%M|%l|%N|%r|%k"]
SACCT_FORMAT = "JobIDRaw,State,Elapsed,Timelimit,NodeList,Comment"
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", "STOPPED"}
FAILED = {"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "CANCELLED", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}


@dataclass(frozen=True)
class SlurmJob:
    """One SLURM job as squeue or sacct shows it (``elapsed``/``limit`` as SLURM prints them)."""

    job_id: str
    state: str
    elapsed: str
    limit: str
    nodes: str
    reason: str
    comment: str

    @property
    def summary(self) -> str:
        where = self.nodes or (f"({self.reason})" if self.reason and self.reason != "None" else "")
        return f"slurm {self.job_id} {self.state} {self.elapsed}/{self.limit} {where}".rstrip()


def _state(text: str) -> str:
    """``CANCELLED by 1234`` → ``CANCELLED``."""
    return text.split()[0] if text.strip() else ""


def parse_squeue(text: str) -> list[SlurmJob]:
    """Rows of ``squeue --noheader --format=%i|%T|%M|%l|%N|%r|%k`` (``SQUEUE``; the comment last: it may hold
    ``|``)."""
    jobs = []
    for row in text.splitlines():
        if not row.strip():
            continue
        f = row.split("|", 6)
        if len(f) != 7:
            raise ValueError(f"squeue row with {len(f)} fields, expected 7 (%i|%T|%M|%l|%N|%r|%k): {row!r}")
        comment = "" if f[6] == "(null)" else f[6]
        jobs.append(SlurmJob(f[0], _state(f[1]), f[2], f[3], f[4], f[5], comment))
    return jobs


def parse_sacct(text: str) -> list[SlurmJob]:
    """Rows of ``sacct -X --parsable2 --noheader --format=JobIDRaw,State,Elapsed,Timelimit,NodeList,Comment``."""
    jobs = []
    for row in text.splitlines():
        if not row.strip():
            continue
        f = row.split("|", 5)
        if len(f) != 6:
            raise ValueError(f"sacct row with {len(f)} fields, expected 6 ({SACCT_FORMAT}): {row!r}")
        nodes = "" if f[4] in ("None assigned", "(null)") else f[4]
        jobs.append(SlurmJob(f[0], _state(f[1]), f[2], f[3], nodes, "", f[5]))
    return jobs


def newest(candidates: list[SlurmJob]) -> SlurmJob | None:
    """The latest submission among a job's records (highest job id; retries get new ids)."""

    def key(j: SlurmJob) -> tuple[int, str]:
        head = j.job_id.split("_")[0]
        return (int(head) if head.isdigit() else -1, j.job_id)

    return max(candidates, key=key) if candidates else None


def join(comment: str, job_ids: set[str], queue: list[SlurmJob], accounting: list[SlurmJob]) -> SlurmJob | None:
    """The newest record of one planned job. Its own job ids (from its sbatch logs and Snakemake's markers) decide
    whenever there are any: the comment names only the rule and wildcards, so a run of the same study into another
    results folder has the same comments. Without ids, the comment. squeue rows win over sacct rows (the queue is
    current; accounting may lag)."""

    def mine(j: SlurmJob) -> bool:
        return j.job_id in job_ids if job_ids else bool(j.comment) and j.comment == comment

    in_queue = [j for j in queue if mine(j)]
    if in_queue:
        return newest(in_queue)
    return newest([j for j in accounting if mine(j)])


def query(job_ids: set[str]) -> tuple[list[SlurmJob], list[SlurmJob], list[str]]:
    """Run squeue (this user's jobs) and sacct (``job_ids``); returns both and the problems met (a missing
    command, no accounting), which the status shows instead of failing."""
    problems: list[str] = []

    def run(cmd: list[str]) -> str:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as err:
            problems.append(f"{cmd[0]}: {err}")
            return ""
        if proc.returncode != 0:
            problems.append(f"{cmd[0]} exited {proc.returncode}: {proc.stderr.strip()[:200]}")
            return ""
        return proc.stdout

    queue = parse_squeue(run(SQUEUE))
    accounting: list[SlurmJob] = []
    if job_ids:
        ids = ",".join(sorted(job_ids))
        accounting = parse_sacct(
            run(["sacct", "-X", "--parsable2", "--noheader", f"--format={SACCT_FORMAT}", "-j", ids])
        )
    return queue, accounting, problems
