"""What a study will cost on GPUs, from FLOP counts: ``python -m core.forecast [--configfile …] [--out DIR]``.

Every job of the selected studies (the cluster studies by default) is sized at its real budget: each network is
built on PyTorch's meta device and one step is counted with ``torch.utils.flop_counter`` (no memory, no compute):

- ``train``: steps × batch × FLOPs of one training step per image (forward and backward of the ε-loss). Models
  with early stopping are counted to their step limit (an upper bound). Memory: weights, gradients, AdamW's two
  moments and the EMA (20 bytes a parameter) plus the activations the forward pass saves for the backward at the
  per-GPU batch (counted with saved-tensor hooks; fp32, and attention as the math kernel saves it: an upper bound
  for bf16 and for CUDA's flash attention);
- ``train_autoencoder`` and ``encode_latents``: the KL autoencoder's forward (× 3 with the backward) per image;
- ``sample``: images × network evaluations (× 2 for a guided row, whose two branches share a batch) × one forward,
  plus the decoder for latent rows, for every checkpoint the experiment samples;
- ``reference_stats`` and ``evaluate``: one Inception-v3 forward at 299² per image.

GPU-hours = FLOPs / (dense peak × an assumed share of it achieved, ``MFU``), per GPU type and precision: the
peaks are the vendors' dense figures, the shares are assumptions stated in the output and to be replaced by
measured step times (``bench/gpu_check.sh`` on a first GPU node). Flags come first: a job whose forecast exceeds
what the SLURM profile gives it (``runtime`` × (``retries`` + 1) for ``train`` and ``sample``, which resume;
``runtime`` for the others) or whose training memory exceeds a GPU's. Writes ``forecast.md`` and ``forecast.csv``
to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from core import costs, measured, paths, preflight
from core.config import ConfigError
from core.diffusion import GaussianDiffusion
from core.models import build_autoencoder, build_model
from core.plan import Plan
from core.provenance import write_text

# Dense peak TFLOP/s (datasheets, without sparsity) and memory in GB.
GPUS: dict[str, dict[str, float]] = {
    "A100-40GB": {"bf16": 312.0, "fp32": 19.5, "mem_gb": 40},
    "A100-80GB": {"bf16": 312.0, "fp32": 19.5, "mem_gb": 80},
    "H100-SXM": {"bf16": 989.0, "fp32": 67.0, "mem_gb": 80},
    "H200": {"bf16": 989.0, "fp32": 67.0, "mem_gb": 141},
}
MFU = {"bf16": 0.35, "fp32": 0.6}  # assumed achieved share of the dense peak (not measured here)
INCEPTION_SIZE = 299
PROFILE = Path(__file__).resolve().parent.parent / "profiles" / "slurm" / "config.yaml"
RESUMABLE = ("train", "sample")  # a retry continues from the checkpoint or the partial sample file


@dataclass
class Job:
    rule: str
    name: str
    flops: float  # the whole job's
    count: int = 1  # identical jobs (replicates, checkpoints)
    gpus: int = 1
    train_mem_bytes: float | None = None  # per GPU, training jobs
    note: str = ""
    hours: dict[str, float] = field(default_factory=dict)  # "<gpu>/<precision>" -> GPU-hours of one job
    # the work by section (core.costs): section -> (image-units at the real budget, FLOPs per image-unit)
    work: dict[str, tuple[float, float]] = field(default_factory=dict)
    params: int | None = None
    batch_per_gpu: int | None = None
    measured: dict[str, Any] | None = None  # the rehearsal's cost record (core.costs) of one such job


def train_costs(plan: Plan, study: str, model: str, classes: int) -> tuple[float, float, float, int]:
    """(FLOPs of one training image, forward FLOPs of one image, activation bytes saved per image, parameters).
    Activations are what a batch of two saves beyond a batch of one (the weights the backward also keeps do not
    grow with the batch; they are counted with the parameters)."""
    spec = plan.model(study, model)
    size = plan.input_size(study, spec)
    channels = int(plan.autoencoder_spec(spec["autoencoder"])["net"]["z_channels"]) if spec["space"] == "latent" else 3
    k = classes if spec["net"].get("class_conditional") else 0
    diffusion = GaussianDiffusion.from_spec(spec["diffusion"])
    params = [0]

    def build() -> torch.nn.Module:
        net = build_model(spec, size, channels, k)
        params[0] = sum(p.numel() for p in net.parameters())
        return net

    fwd, bwd, saved_1 = costs.meta_counts(build, costs.epsilon_loss(diffusion, 1, channels, size, k))
    saved_2 = costs.meta_counts(build, costs.epsilon_loss(diffusion, 2, channels, size, k))[2]
    return fwd + bwd, fwd, saved_2 - saved_1, params[0]


def autoencoder_costs(plan: Plan, name: str) -> tuple[float, float]:
    """(encoder forward FLOPs, decoder forward FLOPs) of one image of the autoencoder ``name``."""
    ae = plan.autoencoder_spec(name)
    size = int(plan.config["datasets"][ae["dataset"]]["image_size"])
    with torch.device("meta"):
        vae = build_autoencoder(ae["net"], size)
        x = torch.zeros(1, 3, size, size)
        with FlopCounterMode(display=False) as enc:
            z = vae.encode(x).mean
        with FlopCounterMode(display=False) as dec:
            vae.decode(z)
    return float(enc.get_total_flops()), float(dec.get_total_flops())


def inception_flops() -> float:
    """Forward FLOPs of the FID Inception-v3 on one 299² image."""
    from core.nets.inception import FIDInceptionV3

    with torch.device("meta"), FlopCounterMode(display=False) as c:
        FIDInceptionV3()(torch.zeros(1, 3, INCEPTION_SIZE, INCEPTION_SIZE))
    return float(c.get_total_flops())


def jobs_of(plan: Plan, studies: list[str], counts: dict[str, preflight.DataSize]) -> list[Job]:
    """Every job of the studies with its FLOPs (and memory for training)."""
    jobs: list[Job] = []
    inception = inception_flops()
    for name in dict.fromkeys(a for s in studies for a in plan.study_autoencoders(s)):
        ae = plan.autoencoder_spec(name)
        enc, dec = autoencoder_costs(plan, name)
        t = ae["train"]
        units = float(int(t["steps"]) * int(t["batch_size"]))
        jobs.append(Job("train_autoencoder", name, 3 * (enc + dec) * units, work={"step": (units, 3 * (enc + dec))}))
        images = counts[ae["dataset"]].splits
        n = sum(images.values()) if images else 0
        note = "" if images else "dataset not found: 0 images"
        jobs.append(Job("encode_latents", name, enc * n, note=note, work={"encode": (float(n), enc)}))
    for study in studies:
        dataset = plan.dataset_of(study)
        classes = counts[dataset].classes or 100
        forward: dict[str, float] = {}
        for model in plan.models[study]:
            spec = plan.model(study, model)
            train, res = spec["train"], spec["resources"]
            world = max(1, int(res["gpus"])) * int(res["nodes"])
            batch = int(train["batch_size"])
            per_image, forward[model], activations, params = train_costs(plan, study, model, classes)
            mem = 20.0 * params + activations * (batch // world)
            note = "early stopping: up to" if "early_stopping" in train else ""
            reps = len(plan.model_replicates(study, model))
            units = float(batch * int(train["steps"]))
            job = Job("train", f"{study}/{model}", per_image * units, reps, world, mem, note)
            job.work, job.params, job.batch_per_gpu = {"step": (units, per_image)}, params, batch // world
            jobs.append(job)
        ev = plan.config["studies"][study]["evaluation"]
        ref = int(ev["reference_num"]) or sum((counts[dataset].splits or {}).values()) or 5000
        jobs.append(Job("reference_stats", f"{study}/{dataset}", inception * ref, work={"extract": (ref, inception)}))
        for name in plan.study_autoencoders(study):  # reconstructions of the reference images, their rFID
            enc, dec = autoencoder_costs(plan, name)
            work = {"reconstruct": (float(ref), enc + dec), "extract": (float(ref), inception), "fd": (1.0, 0.0)}
            flops = sum(u * f for u, f in work.values())
            jobs.append(Job("evaluate_autoencoder", f"{study}/{name}", flops, work=work))
        for exp in plan.experiments[study]:
            e = plan.experiment(study, exp)
            model_spec = plan.model(study, e["model"])
            nfe = int(e["sampler"]["steps"])
            guided = bool(model_spec["net"].get("class_conditional")) and float(e["guidance_scale"]) not in (0.0, 1.0)
            n = int(e["num_samples"])
            step_flops = forward[e["model"]] * (2 if guided else 1)
            work = {"denoise": (float(n * nfe), step_flops)}
            if model_spec["space"] == "latent":
                work["decode"] = (float(n), autoencoder_costs(plan, model_spec["autoencoder"])[1])
            count = len(plan.experiment_replicates(study, exp)) * len(plan.eval_steps(study, exp))
            flops = sum(u * f for u, f in work.values())
            jobs.append(Job("sample", f"{study}/{exp}", flops, count, int(e["gpus"]), work=work))
            # CPU work, timed and no FLOPs: the Fréchet distance and one per bootstrap resample
            resamples = float(plan.config["studies"][study]["evaluation"]["bootstrap"])
            scoring = {"extract": (float(n), inception), "fd": (1.0 + resamples, 0.0)}
            jobs.append(Job("evaluate", f"{study}/{exp}", inception * n, count, work=scoring))
            if plan.selects_checkpoint(study, exp):  # a fresh draw at each replicate's selected checkpoint
                both = {**work, **scoring}
                reps = len(plan.experiment_replicates(study, exp))
                flops = sum(u * f for u, f in both.values())
                jobs.append(Job("score_selected", f"{study}/{exp}", flops, reps, int(e["gpus"]), work=both))
    for job in jobs:
        price(job)
    return jobs


def price(job: Job) -> Job:
    """Fill ``job.hours``: GPU-hours of one such job per GPU type and precision (FLOPs over the assumed rate)."""
    for gpu, peak in GPUS.items():
        for precision in ("bf16", "fp32"):
            job.hours[f"{gpu}/{precision}"] = job.flops / (peak[precision] * 1e12 * MFU[precision]) / 3600
    return job


def profile_limits(path: Path = PROFILE) -> dict[str, Any]:
    """Per rule: the runtime (minutes) and the attempts the SLURM profile gives it; the profile's job limit."""
    prof = yaml.safe_load(path.read_text())
    default = prof.get("default-resources", {})
    retries = int(prof.get("retries", 0))
    rules = {r: {**default, **(v or {})} for r, v in (prof.get("set-resources") or {}).items()}
    threads = dict(prof.get("set-threads") or {})
    return {
        "retries": retries,
        "jobs": int(prof.get("jobs", 1)),
        "rules": rules,
        "default": default,
        "threads": threads,
    }


def flags(jobs: list[Job], limits: dict[str, Any], gpu: str, precision: str) -> list[str]:
    """Jobs that cannot finish within what the profile gives them, or cannot fit a GPU's memory."""
    out = []
    for job in jobs:
        res = limits["rules"].get(job.rule, limits["default"])
        runtime_h = float(res.get("runtime", 60)) / 60
        attempts = limits["retries"] + 1 if job.rule in RESUMABLE else 1
        wall = job.hours[f"{gpu}/{precision}"] / job.gpus
        if wall > runtime_h * attempts:
            out.append(
                f"{job.rule} {job.name}: {wall:,.1f} h on {job.gpus} {gpu} ({precision}) > runtime {runtime_h:g} h × "
                f"{attempts} attempt(s) in profiles/slurm (set-resources.{job.rule}.runtime, retries, or more GPUs: "
                "resources.gpus)"
            )
        if job.train_mem_bytes and job.train_mem_bytes > GPUS[gpu]["mem_gb"] * 1e9:
            out.append(
                f"{job.rule} {job.name}: ~{job.train_mem_bytes / 1e9:,.0f} GB per GPU > {GPUS[gpu]['mem_gb']:g} GB "
                f"of a {gpu} (fp32 activations, an upper bound; a smaller batch per GPU: resources.gpus)"
            )
    return out


def makespan(jobs: list[Job], key: str, gpus: int) -> float:
    """Wall hours on ``gpus`` GPUs: the larger of the work spread over them and the longest training job plus
    the longest sampling and evaluation after it (the chain that cannot be split)."""
    total = sum(j.hours[key] * j.count for j in jobs)
    chain = sum(max((j.hours[key] / j.gpus for j in jobs if j.rule == r), default=0.0) for r in ("train", "sample"))
    return max(total / gpus, chain)


def render(studies: list[str], jobs: list[Job], limits: dict[str, Any], rehearsal: str = "") -> str:
    """forecast.md; with ``rehearsal`` (its root) the FLOPs are the rehearsal's counts and its measurements shown."""
    key_gpu = "A100-80GB"
    problems = flags(jobs, limits, key_gpu, "bf16")
    if rehearsal:
        problems += measured.memory_flags(jobs, limits)
        source = f"from the rehearsal in {rehearsal}: FLOPs counted on the real networks, then priced"
    else:
        source = "from FLOP counts, not measured"
    lines = [f"# Forecast: {', '.join(studies)} ({source})", ""]
    if problems:
        lines += [f"**{len(problems)} job(s) do not fit profiles/slurm on {key_gpu} in bf16:**", ""]
        lines += [f"- {p}" for p in problems] + [""]
    else:
        lines += [f"Every job fits profiles/slurm on {key_gpu} in bf16 (runtime × attempts, GPU memory).", ""]
    fp32 = flags(jobs, limits, key_gpu, "fp32")
    if fp32:
        lines += [f"In fp32 (TF32 off), {len(fp32)} job(s) would not fit; e.g. {fp32[0]}", ""]
    lines += [
        "## Totals",
        "",
        f"| GPU | precision | GPU-hours | wall on 8 GPUs | wall on {limits['jobs']} GPUs (jobs:) |",
    ]
    lines += ["|---|---|---|---|---|"]
    for gpu in GPUS:
        for precision in ("bf16", "fp32"):
            key = f"{gpu}/{precision}"
            total = sum(j.hours[key] * j.count for j in jobs)
            lines.append(
                f"| {gpu} | {precision} | {total:,.0f} | {makespan(jobs, key, 8) / 24:,.1f} d | "
                f"{makespan(jobs, key, limits['jobs']) / 24:,.1f} d |"
            )
    on_gpu = {j.measured["device_name"] for j in jobs if measured.measured_hours(j) is not None}
    for name in sorted(on_gpu):
        hours = sum((measured.measured_hours(j) or 0.0) * j.count for j in jobs if j.measured)
        lines.append(f"| {name} (measured by the rehearsal) | as run | {hours:,.0f} | {hours / 8 / 24:,.1f} d | |")
    lines += ["", "## Per rule (A100-80GB, bf16)", "", "| rule | jobs | PFLOP | GPU-hours |", "|---|---|---|---|"]
    for rule in dict.fromkeys(j.rule for j in jobs):
        group = [j for j in jobs if j.rule == rule]
        n = sum(j.count for j in group)
        pf = sum(j.flops * j.count for j in group) / 1e15
        gh = sum(j.hours[f"{key_gpu}/bf16"] * j.count for j in group)
        lines.append(f"| {rule} | {n} | {pf:,.1f} | {gh:,.1f} |")
    sizes = sorted({int(v["mem_gb"]) for v in GPUS.values()})
    head = "| model | GPUs | FLOP | wall h (A100 bf16) | memory / GPU | " + " | ".join(f"fits {m} GB" for m in sizes)
    lines += ["", "## Training jobs", "", head + " |", "|---|---|---|---|---|" + "---|" * len(sizes)]
    for j in jobs:
        if j.rule == "train":
            mem = j.train_mem_bytes or 0.0
            fits = " | ".join("yes" if mem <= m * 1e9 else "**no**" for m in sizes)
            wall = j.hours[key_gpu + "/bf16"] / j.gpus
            lines.append(
                f"| {j.name} | {j.gpus} | {j.note} {j.flops:.3g} | {wall:,.1f} | {mem / 1e9:,.1f} GB | {fits} |"
            )
    lines += [
        "",
        "## Assumptions",
        "",
        "- FLOPs: torch.utils.flop_counter over one step of each network on the meta device (matmuls and "
        "convolutions; elementwise work is not counted).",
        f"- Achieved share of the dense peak (MFU): bf16 {MFU['bf16']:.0%}, fp32 {MFU['fp32']:.0%}; peaks (TFLOP/s): "
        + "; ".join(f"{g} bf16 {v['bf16']:g}, fp32 {v['fp32']:g}" for g, v in GPUS.items())
        + ". Assumed, not measured: `bash bench/gpu_check.sh` on a GPU node measures s/step at the real shapes.",
        "- Training memory: 20 bytes per parameter (fp32 weights, gradients, AdamW moments, EMA) plus the "
        "activations saved for the backward at the per-GPU batch in fp32 (attention as the math kernel saves "
        "it): an upper bound for bf16 autocast and flash attention.",
        "- An evaluation's Fréchet distances (one, and one per bootstrap resample) run on the CPU: no FLOPs here; "
        "a rehearsal times one only where it has more images than feature dimensions (else ~1.4 s each at 2048-d "
        "on 2 threads, bench/RESULTS.md).",
        "- Early-stopping models are counted to their step limit; sampling every kept checkpoint counts every "
        "step they may keep.",
        "- Wall time on N GPUs: the larger of the GPU-hours spread over N and the longest training job plus the "
        "longest sampling job after it; queue waits are not counted (a lower bound).",
        f"- Profile: profiles/slurm/config.yaml (retries {limits['retries']}, jobs {limits['jobs']}).",
    ]
    if rehearsal:
        lines += ["", *measured.table(jobs, limits)]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, jobs: list[Job]) -> None:
    keys = [f"{g}/{p}" for g in GPUS for p in ("bf16", "fp32")]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "rule",
                "job",
                "count",
                "gpus",
                "flops",
                "train_mem_bytes",
                "note",
                *[f"gpu_hours:{k}" for k in keys],
                "measured_device",
                "measured_hours_on_device",
                "measured_peak_rss_bytes",
            ]
        )
        for j in jobs:
            rec = j.measured
            mem = "" if j.train_mem_bytes is None else f"{j.train_mem_bytes:.0f}"
            w.writerow(
                [
                    j.rule,
                    j.name,
                    j.count,
                    j.gpus,
                    f"{j.flops:.6g}",
                    mem,
                    j.note,
                    *[f"{j.hours[k]:.6g}" for k in keys],
                    f"{rec['device']} ({rec['device_name']})" if rec else "",
                    f"{rec['forecast_seconds'] / 3600:.6g}" if rec and rec.get("forecast_seconds") is not None else "",
                    rec["peak_rss_bytes"] if rec else "",
                ]
            )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configfile", action="append", default=[], help="merged over config.yaml, as for snakemake")
    p.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE", help="as for snakemake")
    p.add_argument(
        "--out", default="", help="folder for forecast.md and forecast.csv (default: <results_dir>/forecast)"
    )
    p.add_argument("--profile", default=str(PROFILE), help="the SLURM profile whose limits are checked")
    p.add_argument("--config-json", default="", help="the whole config as JSON (the forecast rule's), not the files")
    p.add_argument(
        "--rehearsal",
        default="",
        metavar="ROOT",
        help="price from the cost records of the rehearsal under ROOT (<results_dir>/rehearsal) instead of meta counts",
    )
    args = p.parse_args(argv)
    try:
        if args.config_json:
            config = json.loads(args.config_json)
        else:
            config = preflight.load_config(args.configfile, args.config)
        config["rehearse"] = False  # the real plan: its budgets are what is priced
        plan = Plan(config)
        studies = preflight.selected_studies(plan, plan.config)
    except ConfigError as err:
        print(f"forecast: {err}", file=sys.stderr)
        return 2
    _, counts = preflight.inputs(plan, studies)
    jobs = jobs_of(plan, studies, counts)
    if args.rehearsal:
        missing = measured.attach(jobs, args.rehearsal)
        if len(missing) == len(jobs):
            print(f"forecast: no cost records under {args.rehearsal}: run the rehearsal first", file=sys.stderr)
            return 2
        for job in jobs:
            price(job)
    out = Path(args.out or paths.forecast_dir(plan.root))
    out.mkdir(parents=True, exist_ok=True)
    text = render(studies, jobs, profile_limits(Path(args.profile)), args.rehearsal)
    write_text(out / "forecast.md", text)
    write_csv(out / "forecast.csv", jobs)
    print(text, end="")
    print(f"wrote {out / 'forecast.md'} and {out / 'forecast.csv'}")
    return 0 if math.isfinite(sum(j.flops for j in jobs)) else 1


if __name__ == "__main__":
    sys.exit(main())
