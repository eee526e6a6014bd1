"""Stage: a study's report — table (Markdown and CSV) and figures — from its metrics, samples and logs.

    python -m core.stages.report --study '<JSON>' --metrics m1.json … --samples s1.h5 … --train-logs l1.csv … \
        --out-dir results/demo-a/report

One row per experiment. An experiment evaluated at several checkpoints reports the checkpoint with the
best (lowest) Fréchet distance and the IS *of that same checkpoint*; all checkpoints are in the CSV and in
``curves.png``. Column headers carry the metric labels from the metrics files (extractor, N), and a footer
says how every number was made.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from core.provenance import atomic_path, code_version, read_json, write_text


def save_figure(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def image_grid(images: np.ndarray, cols: int) -> np.ndarray:
    n, h, w, c = images.shape
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + 1) + 1, cols * (w + 1) + 1, c), 255, dtype=np.uint8)
    for i, im in enumerate(images):
        r, k = divmod(i, cols)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + k * (w + 1) : 1 + k * (w + 1) + w] = im
    return grid


def collect(metric_files: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Metrics per experiment, sorted by checkpoint step."""
    per_exp: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in metric_files:
        m = read_json(path)
        m["_path"] = path
        per_exp[m["samples"]["experiment"]].append(m)
    for runs in per_exp.values():
        runs.sort(key=lambda m: m["samples"]["checkpoint_step"])
    return per_exp


def pick(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The checkpoint with the lowest Fréchet distance (its IS is reported with it)."""
    return min(runs, key=lambda m: m["fid"])


def fmt_lr(x: float) -> str:
    return f"{x:.0e}".replace("e-0", "e-")


def sampler_label(s: dict[str, Any]) -> str:
    label = ("DPM-Solver++(2M)" if s["name"] == "dpmpp2m" else s["name"].upper()) + f"-{s['steps']}"
    return label + (f" (η={s.get('eta', 0.0):g})" if s["name"] == "ddim" else "")


def build_rows(study: dict[str, Any], per_exp: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for name, exp in study["experiments"].items():
        if name not in per_exp or "sweep" in exp:
            continue
        runs = per_exp[name]
        best = pick(runs)
        model = study["models"][exp["model"]]
        rows.append(
            {
                "name": name,
                "vae": f"yes ({model['autoencoder']})" if model.get("space") == "latent" else "no",
                "cfg": f"w={exp['guidance_scale']:g}" if model["net"].get("class_conditional") else "no",
                "backbone": model.get("label", model["backbone"].upper() if model["backbone"] == "dit" else "UNet"),
                "sampler": sampler_label(exp["sampler"]),
                "model": exp["model"],
                "published": exp.get("published"),
                "width": model["net"].get("base_channels", model["net"].get("hidden_size", "")),
                "lr": model["train"]["lr"],
                "hflip": "yes" if model["train"].get("hflip") else "no",
                "step": best["samples"]["checkpoint_step"],
                "tag": Path(best["_path"]).stem,
                "last_step": runs[-1]["samples"]["checkpoint_step"],
                "fid": best["fid"],
                "fid_last": runs[-1]["fid"],
                "is_mean": best["is_mean"],
                "is_std": best["is_std"],
                "kid_mean": best["kid_mean"],
                "precision": best["precision"],
                "recall": best["recall"],
                "n_checkpoints": len(runs),
                "fid_label": best["label"]["fid"],
                "is_label": best["label"]["is"],
            }
        )
    return rows


def published_cells(p: dict[str, Any] | None, with_step: bool = False) -> str:
    if not p:
        return " – | – |"
    fid = f"{p['fid']:.2f}" + (f" ({p['step']})" if with_step and "step" in p else "")
    is_ = f"{p['is_mean']:.2f}" + (f" ± {p['is_std']:.2f}" if "is_std" in p else "")
    note = f" ({p['note']})" if p.get("note") else ""
    return f" {fid} | {is_}{note} |"


def provenance_note(m: dict[str, Any]) -> str:
    """How the metric numbers were made, from one metrics file (extractor, weights, preprocessing, N)."""
    ex = m["extractor"]
    splits = m["label"]["is"].split("(")[-1].rstrip(")")
    counts = f"{m['n_generated']} generated images against {m['n_real']} real `{m['reference']['split']}` images"
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


def autoencoder_table(files: list[str]) -> str:
    """The autoencoders behind the latent rows: size, latents, scale factor and reconstruction quality."""
    if not files:
        return ""
    out = io.StringIO()
    entries = [json.loads(Path(f).read_text()) for f in files]
    fd_h = entries[0]["label"]["fid"]
    out.write("\n## Autoencoders of the latent rows\n\n")
    out.write(f"| autoencoder | source | parameters | f | latent | scale factor | PSNR (dB) ↑ | {fd_h} ↓ |\n")
    out.write("|---|---|---|---|---|---|---|---|\n")
    for e, f in zip(entries, files, strict=True):
        latent = "×".join(map(str, e["latent_shape"]))
        out.write(
            f"| [{e['name']}](../autoencoders/{Path(f).with_suffix('.png').name}) | {e['source']} | "
            f"{e['num_parameters'] / 1e6:.2f}M | "
            f"{e['downsampling_factor']} | {latent} | {e['scale_factor']:.4f} | {e['psnr_db']:.2f} | {e['fid']:.2f} |\n"
        )
    out.write(
        f"\nReconstructions of the first {entries[0]['n_images']} `{entries[0]['split']}` images (decoder of the "
        "posterior mean, rounded to uint8) against the same images' reference statistics; PSNR over uint8 pixels, "
        "mean over images. The scale factor is 1/std of posterior samples of training images.\n"
    )
    return out.getvalue()


def markdown_table(study: dict[str, Any], rows: list[dict[str, Any]], per_exp: dict[str, list[dict]]) -> str:
    any_m = next(iter(per_exp.values()))[0]
    fid_h, is_h = f"{any_m['label']['fid']} ↓", f"{any_m['label']['is']} ↑"
    out = io.StringIO()
    out.write(f"# {study['title']}\n\n")
    pub = any(r["published"] for r in rows)
    if study["layout"] == "ablation":
        head = f"| run | width | LR | h-flip | sampler | best {fid_h} (step) | {is_h} at that step | last {fid_h} |"
        head += " published best FID (step) | published IS at that step |" if pub else ""
        out.write(head + "\n|" + "---|" * (10 if pub else 8) + "\n")
        for r in rows:
            out.write(
                f"| {r['name']} | {r['width']} | {fmt_lr(r['lr'])} | {r['hflip']} | {r['sampler']} | "
                f"{r['fid']:.2f} ({r['step']}) | {r['is_mean']:.2f} ± {r['is_std']:.2f} | {r['fid_last']:.2f} |"
                + (published_cells(r["published"], with_step=True) if pub else "")
                + "\n"
            )
    else:
        head = f"| name | VAE | CFG | backbone | sampler | step | {fid_h} | {is_h} |"
        head += " published FID | published IS |" if pub else ""
        out.write(head + "\n|" + "---|" * (10 if pub else 8) + "\n")
        for r in rows:
            out.write(
                f"| {r['name']} | {r['vae']} | {r['cfg']} | {r['backbone']} | {r['sampler']} | {r['step']} | "
                f"{r['fid']:.2f} | {r['is_mean']:.2f} ± {r['is_std']:.2f} |"
                + (published_cells(r["published"]) if pub else "")
                + "\n"
            )
    out.write("\n" + provenance_note(any_m))
    if pub:
        out.write(
            "Published: the reference study's numbers for the same row (Inception FID/IS as the reference computed "
            "them). " + study.get("published_protocol", "") + " "
        )
    out.write(
        "Samples from the EMA weights; rows with several checkpoints report the best-FD checkpoint and the IS of "
        f"that same checkpoint. Report code version `{code_version()}`.\n"
    )
    return out.getvalue()


def network_evaluations(exp: dict[str, Any]) -> int:
    """Denoiser evaluations per image: one per step, two with classifier-free guidance (w ≠ 1)."""
    return int(exp["sampler"]["steps"]) * (2 if exp.get("guidance_scale", 1.0) != 1.0 else 1)


def sweep_series(study: dict[str, Any], per_exp: dict[str, list[dict]], kind: str) -> dict[str, list[str]]:
    """Per swept base experiment, the experiments of its ``kind`` sweep (the base included) that have metrics."""
    series: dict[str, list[str]] = defaultdict(list)
    for name, exp in study["experiments"].items():
        if exp.get("sweep", {}).get("kind") == kind:
            base = exp["sweep"]["base"]
            if not series[base] and base in per_exp:
                series[base].append(base)
            if name in per_exp:
                series[base].append(name)
    return dict(series)


def sweep_tables(study: dict[str, Any], per_exp: dict[str, list[dict]]) -> str:
    out = io.StringIO()
    exps = study["experiments"]
    for base, names in sweep_series(study, per_exp, "nfe").items():
        b = exps[base]
        out.write(
            f"\n## Sweep: quality against sampler steps ({base}: model {b['model']}, w={b['guidance_scale']:g})\n\n"
        )
        m0 = per_exp[base][-1]
        out.write(
            "| experiment | sampler | network evaluations per image | "
            f"{m0['label']['fid']} ↓ | {m0['label']['is']} ↑ |\n"
        )
        out.write("|---|---|---|---|---|\n")
        for n in sorted(names, key=lambda n: (exps[n]["sampler"]["name"], exps[n]["sampler"]["steps"])):
            m = per_exp[n][-1]
            out.write(
                f"| {n} | {sampler_label(exps[n]['sampler'])} | {network_evaluations(exps[n])} | {m['fid']:.2f} | "
                f"{m['is_mean']:.2f} ± {m['is_std']:.2f} |\n"
            )
    for base, names in sweep_series(study, per_exp, "guidance").items():
        b = exps[base]
        out.write(f"\n## Sweep: guidance scale ({base}: model {b['model']}, {sampler_label(b['sampler'])})\n\n")
        m0 = per_exp[base][-1]
        out.write(
            f"| experiment | guidance scale w | {m0['label']['fid']} ↓ | {m0['label']['is']} ↑ |\n|---|---|---|---|\n"
        )
        for n in sorted(names, key=lambda n: exps[n]["guidance_scale"]):
            m = per_exp[n][-1]
            out.write(
                f"| {n} | {exps[n]['guidance_scale']:g} | {m['fid']:.2f} | {m['is_mean']:.2f} ± {m['is_std']:.2f} |\n"
            )
    if out.getvalue():
        out.write("\nSweep points are sampled from the same checkpoint as their base row (its last evaluated one).\n")
    for name, exp in exps.items():
        if exp.get("sweep", {}).get("kind") != "checkpoints" or name not in per_exp:
            continue
        runs, base = per_exp[name], exp["sweep"]["base"]
        out.write(
            f"\n## Quality over training: {base} (model {exp['model']}, {sampler_label(exp['sampler'])}, "
            f"{runs[0]['n_generated']} images, every kept checkpoint)\n\n"
        )
        out.write(f"| step | {runs[0]['label']['fid']} ↓ | {runs[0]['label']['is']} ↑ |\n|---|---|---|\n")
        for m in runs:
            out.write(
                f"| {m['samples']['checkpoint_step']} | {m['fid']:.2f} | {m['is_mean']:.2f} ± {m['is_std']:.2f} |\n"
            )
    return out.getvalue()


def plot_sweeps(path: Path, study: dict[str, Any], per_exp: dict[str, list[dict]]) -> None:
    """Left: Fréchet distance against network evaluations per sampler; right: FD against IS across w."""
    sns.set_theme(style="whitegrid")
    exps = study["experiments"]
    nfe, guidance = sweep_series(study, per_exp, "nfe"), sweep_series(study, per_exp, "guidance")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.3))
    any_m = next(iter(per_exp.values()))[0]
    for base, names in nfe.items():
        by_sampler: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for n in names:
            by_sampler[exps[n]["sampler"]["name"]].append((network_evaluations(exps[n]), per_exp[n][-1]["fid"]))
        for sampler, pts in sorted(by_sampler.items()):
            x, y = zip(*sorted(pts), strict=True)
            label = {"ddpm": "DDPM", "ddim": "DDIM", "dpmpp2m": "DPM-Solver++(2M)"}[sampler]
            a1.plot(x, y, marker="o", label=f"{base}: {label}")
    a1.set_xscale("log")
    a1.set(xlabel="network evaluations per image", ylabel=any_m["label"]["fid"], title="Quality against sampler steps")
    for base, names in guidance.items():
        pts = sorted((exps[n]["guidance_scale"], per_exp[n][-1]["fid"], per_exp[n][-1]["is_mean"]) for n in names)
        a2.plot([p[1] for p in pts], [p[2] for p in pts], marker="o", label=base)
        for w, fd, is_ in pts:
            a2.annotate(f"w={w:g}", (fd, is_), textcoords="offset points", xytext=(4, 4), fontsize=8)
    a2.set(xlabel=f"{any_m['label']['fid']} (lower is better)", ylabel=f"{any_m['label']['is']} (higher is better)")
    a2.set_title("Guidance scale: Fréchet distance against IS")
    for ax, has in ((a1, nfe), (a2, guidance)):
        if has:
            ax.legend(fontsize=8)
        else:
            ax.text(
                0.5,
                0.5,
                "no sweep configured\n(studies.<study>.sweeps)",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
    save_figure(fig, path)


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
    waits = [r.get("input_wait_s") for r in rows]
    waited = sum(float(w) for w in waits) if all(waits) else math.nan  # logs before 2026-12 lack the column
    return {
        "steps": int(rows[-1]["step"]),
        "images_per_s": float(np.median([float(r["images_per_s"]) for r in rows])),
        "peak_mem_mb": max(float(r["peak_mem_mb"]) for r in rows),
        "device_hours": elapsed * gpus / 3600,
        "input_wait": waited / elapsed if elapsed > 0 else math.nan,
    }


def cost_table(study: dict[str, Any], per_exp: dict[str, list[dict]], train_logs: list[str], samples: list[str]) -> str:
    """Per experiment: its model's training throughput, peak GPU memory and GPU-hours, and its sampling GPU-hours."""
    logs = {Path(p).parent.name: p for p in train_logs}
    resources = study.get("resources", {})
    out = io.StringIO()
    out.write("\n## Cost\n\n")
    out.write(
        "| experiment | model | training steps | training images/s (median) | peak GPU memory | training device-hours "
        "| waiting for input | sampling device-hours (all its checkpoints) |\n|---|---|---|---|---|---|---|---|\n"
    )
    costs: dict[str, dict[str, Any]] = {}  # a model shared by several rows: its log read once
    for name, exp in study["experiments"].items():
        model = exp["model"]
        if name not in per_exp or model not in logs:
            continue
        if model not in costs:
            costs[model] = training_cost(logs[model], int(resources.get(model, {}).get("gpus", 1)) or 1)
        c = costs[model]
        seconds = 0.0
        for f in (s for s in samples if f"/{name}/" in s):
            with h5py.File(f, "r") as h:
                seconds += float(h.attrs.get("sampling_device_seconds", 0.0))
        mem = f"{c['peak_mem_mb'] / 1024:.1f} GiB" if c["peak_mem_mb"] > 0 else "– (CPU run)"
        wait = "–" if math.isnan(c["input_wait"]) else f"{100 * c['input_wait']:.1f}%"
        out.write(
            f"| {name} | {exp['model']} | {c['steps']} | {c['images_per_s']:.1f} | {mem} | {c['device_hours']:.3f} | "
            f"{wait} | {seconds / 3600:.4f} |\n"
        )
    out.write(
        "\nFrom the training logs (`train_log.csv`: images/s per logging window, peak `torch.cuda` memory) and the "
        "sample files (`sampling_device_seconds`). Device-hours = wall time × GPUs (× 1 process on a CPU run). Waiting "
        "for input: the share of training time the device spent waiting for its next batch (`input_wait_s`: GPU idle "
        "time from CUDA events on a GPU; the time to get the batch on a CPU run). A "
        "model shared by several rows is trained once and its cost is listed on each.\n"
    )
    return out.getvalue()


def write_csv(path: Path, per_exp: dict[str, list[dict[str, Any]]]) -> None:
    fields = [
        "experiment",
        "checkpoint_step",
        "fid",
        "is_mean",
        "is_std",
        "kid_mean",
        "kid_std",
        "precision",
        "recall",
        "fid_label",
        "is_label",
        "extractor",
        "weights_sha256",
        "n_generated",
        "n_real",
        "sampler",
        "steps",
        "eta",
        "guidance_scale",
        "seed",
        "code_version",
        "metrics_file",
    ]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fields)
    w.writeheader()
    for exp, runs in per_exp.items():
        for m in runs:
            s = m["samples"]
            w.writerow(
                {
                    "experiment": exp,
                    "checkpoint_step": s["checkpoint_step"],
                    "fid": f"{m['fid']:.6g}",
                    "is_mean": f"{m['is_mean']:.6g}",
                    "is_std": f"{m['is_std']:.6g}",
                    "kid_mean": f"{m['kid_mean']:.6g}",
                    "kid_std": f"{m['kid_std']:.6g}",
                    "precision": f"{m['precision']:.4f}",
                    "recall": f"{m['recall']:.4f}",
                    "fid_label": m["label"]["fid"],
                    "is_label": m["label"]["is"],
                    "extractor": m["extractor"]["extractor"],
                    "weights_sha256": m["extractor"]["weights_sha256"],
                    "n_generated": m["n_generated"],
                    "n_real": m["n_real"],
                    "sampler": s["sampler"],
                    "steps": s["steps"],
                    "eta": s["eta"],
                    "guidance_scale": s["guidance_scale"],
                    "seed": s["seed"],
                    "code_version": s["code_version"],
                    "metrics_file": m["_path"],
                }
            )
    write_text(path, buf.getvalue())


def plot_fid_is(path: Path, rows: list[dict[str, Any]]) -> None:
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(6, 4.5))
    xs, ys = [r["fid"] for r in rows], [r["is_mean"] for r in rows]
    sns.scatterplot(x=xs, y=ys, hue=[r["name"] for r in rows], s=80, ax=ax, legend=False)
    ax.errorbar(xs, ys, yerr=[r["is_std"] for r in rows], fmt="none", ecolor="grey", alpha=0.6)
    for r in rows:
        ax.annotate(r["name"], (r["fid"], r["is_mean"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel(f"{rows[0]['fid_label']} (lower is better)")
    ax.set_ylabel(f"{rows[0]['is_label']} (higher is better)")
    ax.set_title("Fréchet distance vs Inception-style score")
    save_figure(fig, path)


def plot_losses(path: Path, train_logs: list[str]) -> None:
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for log in train_logs:
        with open(log, newline="") as fh:
            data = [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(fh)]
        if not data:
            continue
        steps, loss = np.array(data).T
        k = max(1, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        line = ax.plot(steps[k - 1 :], smooth, label=Path(log).parent.name)[0]
        val_log = Path(log).with_name("val_log.csv")  # early-stopping runs: the validation ε-loss, dashed
        if val_log.exists():
            with open(val_log, newline="") as fh:
                val = [(int(r["step"]), float(r["val_loss"])) for r in csv.DictReader(fh)]
            if val:
                ax.plot(
                    *np.array(val).T, ls="--", marker=".", color=line.get_color(), label=f"{line.get_label()} (val)"
                )
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("ε-MSE (training: moving average; dashed: fixed validation batch)")
    ax.set_title("Training loss")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def _sample_file(samples: list[str], experiment: str, tag: str) -> str:
    """The sample file of an experiment's checkpoint ``tag`` (``step0001300`` or ``best``)."""
    suffix = f"/{experiment}/{tag}.h5"
    return next(s for s in samples if s.endswith(suffix))


def plot_grids(path: Path, rows: list[dict[str, Any]], samples: list[str], n: int = 36) -> None:
    cols = min(3, len(rows))
    nrow = math.ceil(len(rows) / cols)
    fig, axes = plt.subplots(nrow, cols, figsize=(3.6 * cols, 3.9 * nrow), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, r in zip(axes.flat, rows, strict=False):
        with h5py.File(_sample_file(samples, r["name"], r["tag"]), "r") as f:
            images = f["samples/images"][:n]
        ax.imshow(image_grid(images, int(math.sqrt(n))), interpolation="nearest")
        ax.set_title(f"{r['name']}\n{r['sampler']}, step {r['step']}", fontsize=9)
    save_figure(fig, path)


def plot_trajectories(path: Path, rows: list[dict[str, Any]], samples: list[str]) -> None:
    strips, labels, ts = [], [], None
    for r in rows:
        with h5py.File(_sample_file(samples, r["name"], r["tag"]), "r") as f:
            if "trajectory" not in f:
                continue
            traj, ts = f["trajectory/images"][:], f["trajectory/timesteps"][:]
        strips.append(image_grid(traj[0], traj.shape[1]))
        labels.append(r["name"])
    fig, axes = plt.subplots(
        max(1, len(strips)),
        1,
        figsize=(1.3 * (len(ts) if ts is not None else 4), 1.5 * max(1, len(strips))),
        squeeze=False,
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, strip, label in zip(axes.flat, strips, labels, strict=False):
        ax.imshow(strip, interpolation="nearest")
        ax.set_title(label, fontsize=8, loc="left")
    if ts is not None:
        fig.suptitle("Denoising trajectory: x_t at t = " + ", ".join("x̂₀" if t < 0 else str(t) for t in ts), fontsize=9)
    save_figure(fig, path)


def plot_curves(path: Path, per_exp: dict[str, list[dict[str, Any]]]) -> None:
    sns.set_theme(style="whitegrid")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for exp, runs in per_exp.items():
        steps = [m["samples"]["checkpoint_step"] for m in runs]
        a1.plot(steps, [m["fid"] for m in runs], marker="o", label=exp)
        a2.errorbar(
            steps,
            [m["is_mean"] for m in runs],
            yerr=[m["is_std"] for m in runs],
            marker="o",
            label=exp,
            capsize=2,
        )
    any_m = next(iter(per_exp.values()))[0]
    a1.set(xlabel="training step", ylabel=any_m["label"]["fid"], title="Fréchet distance over checkpoints")
    a2.set(xlabel="training step", ylabel=any_m["label"]["is"], title="Inception-style score over checkpoints")
    a1.legend(fontsize=8)
    save_figure(fig, path)


def run(
    study: dict[str, Any],
    metrics: list[str],
    samples: list[str],
    train_logs: list[str],
    out_dir: str,
    autoencoders: list[str] | None = None,
) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    per_exp = collect(metrics)
    if not per_exp:
        raise ValueError("no metrics files given: nothing to report")
    rows = build_rows(study, per_exp)
    write_text(
        out / "table.md",
        markdown_table(study, rows, per_exp)
        + sweep_tables(study, per_exp)
        + cost_table(study, per_exp, train_logs, samples)
        + autoencoder_table(autoencoders or []),
    )
    write_csv(out / "table.csv", per_exp)
    plot_sweeps(out / "sweeps.png", study, per_exp)
    plot_fid_is(out / "fid_is.png", rows)
    plot_losses(out / "loss.png", train_logs)
    plot_grids(out / "grids.png", rows, samples)
    plot_trajectories(out / "trajectory.png", rows, samples)
    over_training = {
        e: runs
        for e, runs in per_exp.items()
        if study["experiments"][e].get("sweep", {}).get("kind", "checkpoints") == "checkpoints"
    }
    plot_curves(out / "curves.png", over_training)
    print((out / "table.md").read_text(), flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", required=True, help="study description as JSON (title, layout, models, experiments)")
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument("--samples", nargs="+", required=True)
    p.add_argument("--train-logs", nargs="+", required=True)
    p.add_argument("--autoencoders", nargs="*", default=[], help="evaluate_autoencoder JSON files")
    p.add_argument(
        "--indexes",
        nargs="*",
        default=[],
        help="core.stages.collect_checkpoints indexes of further metrics and samples",
    )
    p.add_argument("--out-dir", required=True)
    args = p.parse_args(argv)
    metrics, samples = list(args.metrics), list(args.samples)
    for index in args.indexes:
        entry = read_json(index)
        metrics += entry["metrics"]
        samples += entry["samples"]
    run(json.loads(args.study), metrics, samples, args.train_logs, args.out_dir, args.autoencoders)


if __name__ == "__main__":
    main()
