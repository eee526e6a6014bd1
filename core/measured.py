"""A rehearsal's measured costs (``core.costs`` records) attached to the forecast's jobs (``core.forecast``).

Each job of the real plan is matched with the cost record its rehearsal twin wrote (the same study, model,
experiment or dataset under ``<results_dir>/rehearsal``). Its FLOPs become the real budget's image-units × the
FLOPs per image-unit the rehearsal *counted on the real network* (instead of the meta-device count); its time on
the rehearsal's device is the image-units × the measured seconds per image-unit; a GPU rehearsal's time is its
GPU-hours (``measured_hours``), replacing the FLOP estimate for that GPU. Training memory per GPU is 20 bytes a
parameter plus the activations the rehearsal's step saved per image × the real per-GPU batch.
"""

from __future__ import annotations

import copy
import glob
from pathlib import Path
from typing import Any

from core import costs, paths

PER_PARAMETER_BYTES = 20.0  # fp32 weights, gradients, AdamW's two moments and the EMA


def _existing(*files: str) -> list[str]:
    return [f for f in files if Path(f).is_file()]


def cost_files(root: str, job: Any) -> list[str]:
    """The rehearsal cost records of ``job`` (a ``core.forecast.Job``) under the rehearsal root ``root``."""
    if job.rule == "train":
        study, model = job.name.split("/", 1)
        return sorted(glob.glob(paths.train_cost(root, study, model, "r*")))
    if job.rule == "train_autoencoder":
        return _existing(paths.cost(paths.autoencoder(root, job.name)))
    if job.rule == "encode_latents":
        return _existing(paths.cost(paths.latents(root, job.name)))
    study, what = job.name.split("/", 1)
    if job.rule == "evaluate_autoencoder":
        return _existing(paths.cost(paths.autoencoder_report(root, study, what, "json")))
    if job.rule == "reference_stats":
        return sorted(glob.glob(paths.cost(f"{root}/refstats/{what}/*.npz")))
    if job.rule == "sample":
        return sorted(glob.glob(paths.cost(paths.samples(root, study, what, "r*", "*"))))
    if job.rule == "evaluate":
        return sorted(glob.glob(paths.cost(paths.metrics(root, study, what, "r*", "*"))))
    if job.rule == "score_selected":  # its sampling and its evaluation, one record each
        both = [
            paths.cost(paths.selected_samples(root, study, what, 0)),
            paths.cost(paths.selected_metrics(root, study, what, 0)),
        ]
        return both if all(Path(p).is_file() for p in both) else []
    return []


def merged(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One record of a job that ran others (``score_selected``: sampling, then evaluation): their sections, the
    largest peak memory."""
    out = dict(records[0])
    out["sections"] = {k: v for rec in records for k, v in rec["sections"].items()}
    out["peak_rss_bytes"] = max(rec["peak_rss_bytes"] for rec in records)
    return out


def attach(jobs: list[Any], root: str) -> list[str]:
    """Give each job its rehearsal record and re-price it from the measurement; the jobs without one, named.

    A sweep point the rehearsal did not run (it runs each sweep list's largest point) is priced from its base row's
    record, each section scaled by the ratio of the two jobs' counted FLOPs per image-unit (the same network: a
    guided point costs twice an unguided one per step, whatever the sampler), and says so (``twin``)."""
    missing = []
    for job in jobs:
        files = cost_files(root, job)
        if not files:
            continue
        job.measured = merged([costs.read(f) for f in files]) if job.rule == "score_selected" else costs.read(files[0])
        apply(job)
    by_name = {(j.rule, j.name): j for j in jobs}
    for job in jobs:
        if job.measured is not None:
            continue
        study, what = job.name.split("/", 1)
        twin = by_name.get((job.rule, f"{study}/{what.split('.', 1)[0]}"))
        if "." not in what or twin is None or twin.measured is None:
            missing.append(f"{job.rule} {job.name}")
            continue
        job.measured = scaled(twin, job)
        apply(job)
    return missing


def scaled(twin: Any, job: Any) -> dict[str, Any]:
    """``twin``'s record for ``job``: each section's FLOPs and seconds per image-unit × the ratio of the two jobs'
    meta-counted FLOPs per image-unit in that section."""
    rec = copy.deepcopy(twin.measured)
    rec["twin"] = twin.name
    for section, (_, per_unit) in job.work.items():
        m = rec["sections"].get(section)
        base = twin.work.get(section, (0.0, 0.0))[1]
        if not m or not base:
            continue
        for key in ("flops_per_image_unit", "seconds_per_image_unit"):
            if m.get(key) is not None:
                m[key] *= per_unit / base
    return rec


def apply(job: Any) -> None:
    """Re-price ``job`` from ``job.measured``: FLOPs and seconds per section, memory, GPU-hours if on a GPU."""
    rec = job.measured
    flops = seconds = 0.0
    timed = True
    for section, (units, meta_per_unit) in job.work.items():
        m = rec["sections"].get(section) or {}
        per_unit = m.get("flops_per_image_unit")
        flops += units * (per_unit if per_unit is not None else meta_per_unit)
        if m.get("seconds_per_image_unit") is None:
            # untimed CPU-side work (a rehearsal's Fréchet distance on fewer images than dimensions) adds
            # nothing; untimed network work leaves the job's time unknown
            timed = timed and not meta_per_unit
        else:
            seconds += units * m["seconds_per_image_unit"]
    job.flops = flops
    rec["forecast_seconds"] = seconds if timed else None
    step = rec["sections"].get("step") or {}
    if job.rule == "train" and rec.get("parameters") and step.get("activation_bytes_per_image") is not None:
        job.params = int(rec["parameters"])
        job.train_mem_bytes = PER_PARAMETER_BYTES * job.params + step["activation_bytes_per_image"] * (
            job.batch_per_gpu or 1
        )


def measured_hours(job: Any) -> float | None:
    """GPU-hours of one such job at the real budget from a GPU rehearsal's measured time; None on a CPU."""
    rec = job.measured
    if not rec or rec["device"] != "cuda" or rec.get("forecast_seconds") is None:
        return None
    return rec["forecast_seconds"] / 3600


def profile_memory_mb(limits: dict[str, Any], job: Any) -> float | None:
    """The host memory the SLURM profile gives one process of ``job`` (mem_mb, or mem_mb_per_cpu × its CPUs)."""
    res = {**limits["default"], **limits["rules"].get(job.rule, {})}
    if "mem_mb_per_cpu" in res:
        return float(res["mem_mb_per_cpu"]) * int(limits["threads"].get(job.rule, res.get("cpus_per_task", 1)))
    return float(res["mem_mb"]) if "mem_mb" in res else None


def memory_flags(jobs: list[Any], limits: dict[str, Any]) -> list[str]:
    """Jobs whose measured peak host memory exceeds what the profile gives them."""
    out = []
    for job in jobs:
        rec, mem = job.measured, profile_memory_mb(limits, job)
        if rec and mem and rec["peak_rss_bytes"] > mem * 2**20:
            out.append(
                f"{job.rule} {job.name}: peak host memory {rec['peak_rss_bytes'] / 2**30:,.1f} GiB measured "
                f"({rec['device']}) > {mem / 1024:,.1f} GiB that profiles/slurm gives it (set-resources.{job.rule}."
                "mem_mb or mem_mb_per_cpu)"
            )
    return out


def table(jobs: list[Any], limits: dict[str, Any]) -> list[str]:
    """The markdown table of what each rehearsal job measured and what that makes of the real budget."""
    lines = [
        "## Measured by the rehearsal",
        "",
        "FLOPs per image-unit counted on the real network during the rehearsal's own step (a training image, one "
        "sampler step of one image, one image through the extractor), and its seconds per image-unit on the "
        "rehearsal's device; × the real budget's image-units.",
        "",
        "| rule | job | device | image-units (real) | GFLOP / unit (by section) | s / unit (by section) | "
        "hours on that device | "
        "peak RSS | profile memory |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for job in jobs:
        rec = job.measured
        if not rec:
            lines.append(f"| {job.rule} | {job.name} | not rehearsed | | | | | | |")
            continue
        units = next(iter(job.work.values()))[0]  # the main section's (the others: decode, bootstrap)
        per_unit = [
            (rec["sections"].get(sec) or {}).get("flops_per_image_unit") for sec in job.work
        ]  # the main section first
        secs = [(rec["sections"].get(sec) or {}).get("seconds_per_image_unit") for sec in job.work]
        gflop = " + ".join("–" if f is None else f"{f / 1e9:,.2f}" for f in per_unit)
        spu = " + ".join("–" if t is None else f"{t:.3g}" for t in secs)
        hours = rec.get("forecast_seconds")
        mem = profile_memory_mb(limits, job)
        device = f"{rec['device']} ({rec['device_name']})" + (f", as {rec['twin']}" if rec.get("twin") else "")
        lines.append(
            f"| {job.rule} | {job.name} | {device} | {units:,.0f} | {gflop} | {spu} | "
            f"{'–' if hours is None else f'{hours / 3600:,.1f}'} | {rec['peak_rss_bytes'] / 2**30:,.2f} GiB | "
            f"{'–' if mem is None else f'{mem / 1024:,.0f} GiB'} |"
        )
    return lines
