"""The report's tables (Markdown) and its CSV: results with intervals, sweeps, curves, cost, autoencoders (the notes
that say how every number was made: ``core.reporting.notes``)."""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from core.provenance import read_json
from core.reporting.markdown import md_table, number, with_interval
from core.reporting.results import Row


def fmt_lr(x: float) -> str:
    return f"{x:.0e}".replace("e-0", "e-")


def network_evaluations(exp: dict[str, Any]) -> int:
    """Denoiser evaluations per image: one per step, two with classifier-free guidance (w ∉ {0, 1})."""
    return int(exp["sampler"]["steps"]) * (1 if exp["guidance_scale"] in (0.0, 1.0) else 2)


def guidance_cell(exp: dict[str, Any], model: dict[str, Any]) -> str:
    if not model["net"]["class_conditional"]:
        return "no (unconditional model)"
    w = exp["guidance_scale"]
    return {0.0: "no (w=0: unconditional branch)", 1.0: "no (w=1: conditional)"}.get(w, f"w={w:g}")


def main_rows(study: dict[str, Any], rows: dict[str, Row]) -> list[str]:
    """The study's own experiments (not sweep points) that have results, in config order."""
    exps = study["experiments"]
    return [e for e in study["experiment_order"] if e in rows and "sweep" not in exps[e]]


def published_cells(p: dict[str, Any] | None, with_step: bool = False) -> list[str]:
    if not p:
        return ["–", "–"]
    fid = f"{p['fid']:.2f}" + (f" ({p['step']})" if with_step and "step" in p else "") if "fid" in p else "–"
    is_ = f"{p['is_mean']:.2f}" + (f" ± {p['is_std']:.2f}" if "is_std" in p else "") if "is_mean" in p else "–"
    return [fid, is_ + (f" ({p['note']})" if p.get("note") else "")]


def results_table(study: dict[str, Any], rows: dict[str, Row], flags: dict[str, str]) -> str:
    names = main_rows(study, rows)
    if not names:
        return ""
    exps, models = study["experiments"], study["models"]
    first = rows[names[0]].first.m
    fd_h, is_h = f"{first['label']['fid']} ↓ [95% CI]", f"{first['label']['is']} ↑ [95% CI]"
    pub = any(exps[n].get("published") for n in names)
    fd_inf = any("fd_infinity" in run.m for n in names for run in rows[n].reported())
    fresh = any(rows[n].selected for n in names)  # rows scored on a fresh draw at their selected checkpoint
    out = []
    for n in names:
        r, exp = rows[n], exps[n]
        model = models[exp["model"]]
        name = n + (" †" if n in flags else "")
        fd = with_interval(r.interval("fid"), r.estimate("fid"))
        is_ = with_interval(r.interval("is"), r.estimate("is"))
        sampler = r.first.m["samples"]["sampler_label"]
        if study["layout"] == "ablation":
            width = model["net"].get("base_channels", model["net"].get("hidden_size", ""))
            last = r.estimate("fid", r.last_step())
            cells = [
                name,
                width,
                fmt_lr(model["train"]["lr"]),
                "yes" if model["train"]["hflip"] else "no",
                sampler,
                len(r.replicates),
                f"{fd} ({r.step_label()})",
                is_,
            ]
            cells += [selection_cell(r)] if fresh else []
            cells.append(number(last))
            cells += published_cells(exp.get("published"), with_step=True) if pub else []
        else:
            vae = f"yes ({model['autoencoder']})" if model["space"] == "latent" else "no"
            cells = [name, vae, guidance_cell(exp, model), model["label"], sampler, r.step_label(), len(r.replicates)]
            cells += [fd, is_] + ([selection_cell(r)] if fresh else [])
            cells += published_cells(exp.get("published")) if pub else []
        if fd_inf:
            values = [run.m["fd_infinity"]["value"] for run in r.reported() if "fd_infinity" in run.m]
            cells.append(number(float(np.mean(values))) if values else "–")
        out.append(cells)
    if study["layout"] == "ablation":
        headers = [
            "run",
            "width",
            "LR",
            "h-flip",
            "sampler",
            "replicates",
            f"{fd_h}, fresh draw at the selected step (step)" if fresh else f"best {fd_h} (step)",
            f"{is_h} at that step",
        ]
        headers += [SELECTION_HEADER] if fresh else []
        headers.append(f"last {first['label']['fid']} ↓")
        headers += ["published best FID (step)", "published IS at that step"] if pub else []
    else:
        headers = ["name", "VAE", "CFG", "backbone", "sampler", "step", "replicates", fd_h, is_h]
        headers += [SELECTION_HEADER] if fresh else []
        headers += ["published FID", "published IS"] if pub else []
    if fd_inf:
        headers.append("FD∞ ↓ (Chong & Forsyth 2020)")
    return md_table(headers, out)


SELECTION_HEADER = "selection draw's FD there (biased low)"


def selection_cell(r: Row) -> str:
    """The mean FD that chose the row's checkpoints, on the draw that chose them (– for a row that chose none)."""
    return number(r.selection_estimate()) if r.selected else "–"


def sweep_series(study: dict[str, Any], rows: dict[str, Row], kind: str) -> dict[str, list[str]]:
    """Per swept base experiment, the experiments of its ``kind`` sweep (the base included) that have results."""
    series: dict[str, list[str]] = defaultdict(list)
    for name in study["experiment_order"]:
        exp = study["experiments"][name]
        if exp.get("sweep", {}).get("kind") == kind:
            base = exp["sweep"]["base"]
            if not series[base] and base in rows:
                series[base].append(base)
            if name in rows:
                series[base].append(name)
    return dict(series)


def sweep_tables(study: dict[str, Any], rows: dict[str, Row]) -> str:
    out = io.StringIO()
    exps = study["experiments"]
    for base, names in sweep_series(study, rows, "nfe").items():
        b = exps[base]
        out.write(
            f"\n## Sweep: quality against sampler steps ({base}: model {b['model']}, w={b['guidance_scale']:g})\n\n"
        )
        m0 = rows[base].first.m
        table = []
        for n in sorted(names, key=lambda n: (exps[n]["sampler"]["name"], exps[n]["sampler"]["steps"])):
            r, s = rows[n], exps[n]["sampler"]
            table.append(
                [
                    n,
                    r.first.m["samples"]["sampler_label"],
                    s["spacing"],
                    network_evaluations(exps[n]),
                    with_interval(r.interval("fid", r.last_step()), r.estimate("fid", r.last_step())),
                    with_interval(r.interval("is", r.last_step()), r.estimate("is", r.last_step())),
                ]
            )
        out.write(
            md_table(
                [
                    "experiment",
                    "sampler",
                    "spacing",
                    "network evaluations per image",
                    f"{m0['label']['fid']} ↓ [95% CI]",
                    f"{m0['label']['is']} ↑ [95% CI]",
                ],
                table,
            )
        )
        out.write(
            "\nSpacing: DDPM and DDIM points keep the base row's timestep spacing (the reference's protocol); "
            "DPM-Solver++(2M) points use trailing spacing (a leading or linspace grid ends with one long step to "
            "t = 0 that handicaps a multistep solver; Lin et al. 2024).\n"
        )
    for base, names in sweep_series(study, rows, "guidance").items():
        b, label = exps[base], rows[base].first.m["samples"]["sampler_label"]
        out.write(f"\n## Sweep: guidance scale ({base}: model {b['model']}, {label})\n\n")
        m0 = rows[base].first.m
        table = [
            [
                n,
                f"{exps[n]['guidance_scale']:g}",
                with_interval(
                    rows[n].interval("fid", rows[n].last_step()), rows[n].estimate("fid", rows[n].last_step())
                ),
                with_interval(rows[n].interval("is", rows[n].last_step()), rows[n].estimate("is", rows[n].last_step())),
            ]
            for n in sorted(names, key=lambda n: exps[n]["guidance_scale"])
        ]
        out.write(
            md_table(
                [
                    "experiment",
                    "guidance scale w",
                    f"{m0['label']['fid']} ↓ [95% CI]",
                    f"{m0['label']['is']} ↑ [95% CI]",
                ],
                table,
            )
        )
    if out.getvalue():
        out.write("\nSweep points are sampled from the same checkpoint as their base row (its last evaluated one).\n")
    for name in study["experiment_order"]:
        exp = exps[name]
        if name not in rows or not (exp.get("sweep", {}).get("kind") == "checkpoints" or len(rows[name].steps()) > 1):
            continue
        r = rows[name]
        title = exp["sweep"]["base"] if "sweep" in exp else name
        m0 = r.first.m
        out.write(
            f"\n## Quality over training: {title} (model {exp['model']}, {m0['samples']['sampler_label']}, "
            f"{m0['n_generated']} images, {len(r.replicates)} replicate(s), every kept checkpoint)\n\n"
        )
        table = [
            [
                s,
                with_interval(r.interval("fid", s), r.estimate("fid", s)),
                with_interval(r.interval("is", s), r.estimate("is", s)),
            ]
            for s in r.steps()
        ]
        out.write(md_table(["step", f"{m0['label']['fid']} ↓ [95% CI]", f"{m0['label']['is']} ↑ [95% CI]"], table))
    return out.getvalue()


def training_cost(log: str, gpus: int) -> dict[str, Any]:
    """Throughput, peak memory and device-hours of one training run, from its train_log.csv (a resumed run's
    elapsed time restarts at 0: the segments are summed)."""
    with open(log, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return {"steps": 0, "images_per_s": math.nan, "peak_mem_mb": 0.0, "device_hours": 0.0, "input_wait": math.nan}
    elapsed, last = 0.0, 0.0
    for r in rows:
        e = float(r["elapsed_s"])
        if e < last:
            elapsed += last
        last = e
    elapsed += last
    waited = sum(float(r["input_wait_s"]) for r in rows)
    return {
        "steps": int(rows[-1]["step"]),
        "images_per_s": float(np.median([float(r["images_per_s"]) for r in rows])),
        "peak_mem_mb": max(float(r["peak_mem_mb"]) for r in rows),
        "device_hours": elapsed * gpus / 3600,
        "input_wait": waited / elapsed if elapsed > 0 else math.nan,
    }


def cost_table(study: dict[str, Any], rows: dict[str, Row], train_logs: list[str], samples: list[str]) -> str:
    """Per experiment: its model's training (all replicates) and its own sampling (all replicates and checkpoints)."""
    by_model: dict[str, list[str]] = defaultdict(list)
    for log in train_logs:
        by_model[Path(log).parent.parent.name].append(log)  # <model>/r<k>/train_log.csv
    costs: dict[str, dict[str, Any]] = {}  # a model shared by several rows: its logs read once
    out = []
    for name in study["experiment_order"]:
        exp = study["experiments"][name]
        model = exp["model"]
        if name not in rows or model not in by_model:
            continue
        if model not in costs:
            gpus = max(1, int(study["models"][model]["resources"]["gpus"]))
            runs = [training_cost(log, gpus) for log in sorted(by_model[model])]
            costs[model] = {
                "steps": runs[0]["steps"],
                "images_per_s": float(np.median([r["images_per_s"] for r in runs])),
                "peak_mem_mb": max(r["peak_mem_mb"] for r in runs),
                "device_hours": sum(r["device_hours"] for r in runs),
                "input_wait": float(np.mean([r["input_wait"] for r in runs])),
                "replicates": len(runs),
            }
        c = costs[model]
        seconds = 0.0
        for f in (s for s in samples if f"/samples/{name}/" in s):
            with h5py.File(f, "r") as h:
                seconds += float(h.attrs["sampling_device_seconds"])
        mem = f"{c['peak_mem_mb'] / 1024:.1f} GiB" if c["peak_mem_mb"] > 0 else "– (CPU run)"
        wait = "–" if math.isnan(c["input_wait"]) else f"{100 * c['input_wait']:.1f}%"
        out.append(
            [
                name,
                model,
                c["replicates"],
                c["steps"],
                f"{c['images_per_s']:.1f}",
                mem,
                f"{c['device_hours']:.3f}",
                wait,
                f"{seconds / 3600:.4f}",
            ]
        )
    return (
        "\n## Cost\n\n"
        + md_table(
            [
                "experiment",
                "model",
                "replicates",
                "training steps",
                "training images/s (median)",
                "peak GPU memory",
                "training device-hours (all replicates)",
                "waiting for input",
                "sampling device-hours (all its sample files)",
            ],
            out,
        )
        + "\nFrom the training logs (`train_log.csv`: images/s per logging window, peak `torch.cuda` memory) and the "
        "sample files (`sampling_device_seconds`). Device-hours = wall time × GPUs (× 1 process on a CPU run). Waiting "
        "for input: the share of training time the device spent waiting for its next batch (`input_wait_s`). A model "
        "shared by several rows is trained once and its cost is listed on each.\n"
    )


def autoencoder_table(files: list[str]) -> str:
    """The autoencoders behind the latent rows: size, latents, scale factor and reconstruction quality."""
    if not files:
        return ""
    entries = [read_json(f) for f in files]
    rows = [
        [
            f"[{e['name']}](../autoencoders/{Path(f).with_suffix('.png').name})",
            e["source"],
            f"{e['num_parameters'] / 1e6:.2f}M",
            e["downsampling_factor"],
            "×".join(map(str, e["latent_shape"])),
            f"{e['scale_factor']:.4f}",
            f"{e['psnr_db']:.2f}",
            f"{e['fid']:.2f}",
        ]
        for e, f in zip(entries, files, strict=True)
    ]
    return (
        "\n## Autoencoders of the latent rows\n\n"
        + md_table(
            [
                "autoencoder",
                "source",
                "parameters",
                "f",
                "latent",
                "scale factor",
                "PSNR (dB) ↑",
                f"{entries[0]['label']['fid']} ↓",
            ],
            rows,
        )
        + f"\nReconstructions of the first {entries[0]['n_images']} `{entries[0]['split']}` images (decoder of the "
        "posterior mean, rounded to uint8) against the same images' reference statistics; PSNR over uint8 pixels, "
        "mean over images. The scale factor is 1/std of posterior samples of training images.\n"
    )


def code_table(flags: dict[str, str]) -> str:
    if not flags:
        return ""
    return (
        "\n## Made by other code\n\n"
        + md_table(["row", "what differs from the current code"], [[k, v] for k, v in flags.items()])
        + "\nRows marked † were trained, sampled or evaluated by code other than the current (`code_changes: flag`, "
        "docs/guarantees.md): rerun them with `snakemake --forcerun <rule> <target>` (or set `code_changes: rerun`), "
        "or keep them knowingly.\n"
    )


CSV_FIELDS = [
    "experiment",
    "replicate",
    "draw",
    "checkpoint_step",
    "fid",
    "fid_low",
    "fid_high",
    "is_mean",
    "is_low",
    "is_high",
    "is_std",
    "kid_mean",
    "kid_subset_sd",
    "precision",
    "recall",
    "fd_infinity",
    "fid_label",
    "is_label",
    "extractor",
    "weights_sha256",
    "n_generated",
    "n_real",
    "sampler",
    "steps",
    "guidance_scale",
    "seed",
    "code_version",
    "metrics_file",
]


def write_csv(rows: dict[str, Row]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_FIELDS)
    w.writeheader()
    for exp, row in rows.items():
        for rep, runs in row.runs.items():
            fresh = [row.selected[rep]] if rep in row.selected else []
            for run, draw in [(r, "per checkpoint") for r in runs] + [(r, "fresh (selected step)") for r in fresh]:
                m, s = run.m, run.m["samples"]
                fid_iv, is_iv = run.interval("fid"), run.interval("is")
                w.writerow(
                    {
                        "experiment": exp,
                        "replicate": rep,
                        "draw": draw,
                        "checkpoint_step": s["checkpoint_step"],
                        "fid": f"{m['fid']:.6g}",
                        "fid_low": f"{fid_iv.low:.6g}" if fid_iv else "",
                        "fid_high": f"{fid_iv.high:.6g}" if fid_iv else "",
                        "is_mean": f"{m['is_mean']:.6g}",
                        "is_low": f"{is_iv.low:.6g}" if is_iv else "",
                        "is_high": f"{is_iv.high:.6g}" if is_iv else "",
                        "is_std": f"{m['is_std']:.6g}",
                        "kid_mean": f"{m['kid_mean']:.6g}",
                        "kid_subset_sd": f"{m['kid_std']:.6g}",
                        "precision": f"{m['precision']:.4f}",
                        "recall": f"{m['recall']:.4f}",
                        "fd_infinity": f"{m['fd_infinity']['value']:.6g}" if "fd_infinity" in m else "",
                        "fid_label": m["label"]["fid"],
                        "is_label": m["label"]["is"],
                        "extractor": m["extractor"]["extractor"],
                        "weights_sha256": m["extractor"]["weights_sha256"],
                        "n_generated": m["n_generated"],
                        "n_real": m["n_real"],
                        "sampler": s["sampler_label"],
                        "steps": s["steps"],
                        "guidance_scale": s["guidance_scale"],
                        "seed": s["seed"],
                        "code_version": s["code_version"],
                        "metrics_file": run.path,
                    }
                )
    return buf.getvalue()
