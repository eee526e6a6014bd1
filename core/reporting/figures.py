"""The report's figures: FD against IS, training losses, sample grids, denoising trajectories, quality over
training and the sweeps — every metric drawn with its 95% interval."""

from __future__ import annotations

import csv
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from core import data
from core.provenance import atomic_path
from core.reporting.results import Row
from core.reporting.tables import network_evaluations, sweep_series

# A label stamped across every figure (a rehearsal's: core.rehearsal), so that no figure of it passes for a result.
STAMP = {"text": ""}


def save_figure(fig: plt.Figure, path: Path) -> None:
    if STAMP["text"]:
        fig.text(0.5, 0.5, STAMP["text"], fontsize=28, color="red", alpha=0.35, ha="center", va="center", rotation=20)
        fig.text(0.01, 0.99, STAMP["text"], fontsize=10, color="red", ha="left", va="top")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def image_grid(images: np.ndarray, cols: int) -> np.ndarray:
    """Images (N, H, W, C) tiled ``cols`` wide with 1-pixel white borders; grey images become RGB."""
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    n, h, w, c = images.shape
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + 1) + 1, cols * (w + 1) + 1, c), 255, dtype=np.uint8)
    for i, im in enumerate(images):
        r, k = divmod(i, cols)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + k * (w + 1) : 1 + k * (w + 1) + w] = im
    return grid


def _errors(row: Row, metric: str, step: int | None = None) -> tuple[float, tuple[float, float]]:
    """The row's value and its (lower, upper) error-bar lengths (0 without an interval)."""
    iv = row.interval(metric, step)
    if iv is None:
        return row.estimate(metric, step), (0.0, 0.0)
    return iv.estimate, (iv.estimate - iv.low, iv.high - iv.estimate)


def plot_fid_is(path: Path, names: list[str], rows: dict[str, Row]) -> None:
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    palette = sns.color_palette(n_colors=max(1, len(names)))
    for name, color in zip(names, palette, strict=False):
        (x, xerr), (y, yerr) = _errors(rows[name], "fid"), _errors(rows[name], "is")
        ax.errorbar([x], [y], xerr=[[xerr[0]], [xerr[1]]], yerr=[[yerr[0]], [yerr[1]]], fmt="o", color=color, capsize=3)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    first = rows[names[0]].first.m if names else {"label": {"fid": "FD", "is": "IS"}}
    ax.set_xlabel(f"{first['label']['fid']} (lower is better)")
    ax.set_ylabel(f"{first['label']['is']} (higher is better)")
    ax.set_title("Fréchet distance against Inception-style score (95% intervals)")
    save_figure(fig, path)


def plot_losses(path: Path, train_logs: list[str]) -> None:
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors: dict[str, Any] = {}
    for log in sorted(train_logs):
        with open(log, newline="") as fh:
            points = [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(fh)]
        if not points:
            continue
        model, replicate = Path(log).parent.parent.name, Path(log).parent.name
        steps, loss = np.array(points).T
        k = max(1, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        first = model not in colors
        line = ax.plot(
            steps[k - 1 :], smooth, color=colors.get(model), lw=1.2 if first else 0.6, label=model if first else None
        )[0]
        colors.setdefault(model, line.get_color())
        val_log = Path(log).with_name("val_log.csv")  # early-stopping runs: the validation ε-loss, dashed
        if val_log.exists() and replicate == "r0":
            with open(val_log, newline="") as fh:
                val = [(int(r["step"]), float(r["val_loss"])) for r in csv.DictReader(fh)]
            if val:
                ax.plot(*np.array(val).T, ls="--", marker=".", color=colors[model], label=f"{model} (val)")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("ε-MSE (training: moving average; dashed: fixed validation batch)")
    ax.set_title("Training loss (thin lines: further replicates)")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def sample_file(samples: list[str], experiment: str, replicate: int, tag: str) -> str:
    """The sample file of an experiment replicate's checkpoint ``tag`` (``step0001300`` or ``best``)."""
    suffix = f"/samples/{experiment}/r{replicate}/{tag}.h5"
    return next(s for s in samples if s.endswith(suffix))


def plot_grids(path: Path, names: list[str], rows: dict[str, Row], samples: list[str], n: int = 36) -> None:
    """The first ``n`` samples of each row (replicate 0 at the reported step)."""
    cols = max(1, min(3, len(names)))
    nrow = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(nrow, cols, figsize=(3.6 * cols, 3.9 * nrow), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, name in zip(axes.flat, names, strict=False):
        run = rows[name].first
        with h5py.File(sample_file(samples, name, run.replicate, run.tag), "r") as f:
            images = f["samples/images"][:n]
        ax.imshow(image_grid(images, int(math.sqrt(n))), interpolation="nearest")
        ax.set_title(f"{name}\n{run.m['samples']['sampler_label']}, step {run.step}", fontsize=9)
    save_figure(fig, path)


def plot_trajectories(path: Path, names: list[str], rows: dict[str, Row], samples: list[str]) -> None:
    strips, labels, ts = [], [], None
    for name in names:
        run = rows[name].first
        with h5py.File(sample_file(samples, name, run.replicate, run.tag), "r") as f:
            if "trajectory" not in f:
                continue
            traj, ts = f["trajectory/images"][:], f["trajectory/timesteps"][:]
        strips.append(image_grid(traj[0], traj.shape[1]))
        labels.append(name)
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


def plot_curves(path: Path, rows: dict[str, Row]) -> None:
    """FD and IS over training checkpoints: the mean over replicates with its 95% interval as a band."""
    sns.set_theme(style="whitegrid")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for name, row in rows.items():
        steps = row.steps()
        for ax, metric in ((a1, "fid"), (a2, "is")):
            ivs = [row.interval(metric, s) for s in steps]
            mean = [row.estimate(metric, s) for s in steps]
            line = ax.plot(steps, mean, marker="o", label=name)[0]
            if all(iv is not None for iv in ivs):
                ax.fill_between(
                    steps, [iv.low for iv in ivs], [iv.high for iv in ivs], color=line.get_color(), alpha=0.2
                )
    if rows:
        m = next(iter(rows.values())).first.m
        a1.set(xlabel="training step", ylabel=m["label"]["fid"], title="Fréchet distance over checkpoints (95% band)")
        a2.set(xlabel="training step", ylabel=m["label"]["is"], title="Inception-style score over checkpoints")
        a1.legend(fontsize=8)
    save_figure(fig, path)


def plot_sweeps(path: Path, study: dict[str, Any], rows: dict[str, Row]) -> None:
    """Left: Fréchet distance against network evaluations per sampler; right: FD against IS across w."""
    sns.set_theme(style="whitegrid")
    exps = study["experiments"]
    nfe, guidance = sweep_series(study, rows, "nfe"), sweep_series(study, rows, "guidance")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.3))
    for base, names in nfe.items():
        by_sampler: dict[str, list[tuple[int, float, tuple[float, float]]]] = defaultdict(list)
        for n in names:
            r = rows[n]
            value, err = _errors(r, "fid", r.last_step())
            title = re.match(r"(.+)-\d+ \(", r.first.m["samples"]["sampler_label"])[1]  # e.g. DPM-Solver++(2M)
            by_sampler[title].append((network_evaluations(exps[n]), value, err))
        for title, pts in sorted(by_sampler.items()):
            pts.sort()
            a1.errorbar(
                [p[0] for p in pts],
                [p[1] for p in pts],
                yerr=np.array([p[2] for p in pts]).T,
                marker="o",
                capsize=2,
                label=f"{base}: {title}",
            )
    a1.set_xscale("log")
    a1.set(xlabel="network evaluations per image", ylabel="Fréchet distance", title="Quality against sampler steps")
    for base, names in guidance.items():
        pts = []
        for n in names:
            r = rows[n]
            (x, xerr), (y, yerr) = _errors(r, "fid", r.last_step()), _errors(r, "is", r.last_step())
            pts.append((exps[n]["guidance_scale"], x, y, xerr, yerr))
        pts.sort()
        a2.errorbar(
            [p[1] for p in pts],
            [p[2] for p in pts],
            xerr=np.array([p[3] for p in pts]).T,
            yerr=np.array([p[4] for p in pts]).T,
            marker="o",
            capsize=2,
            label=base,
        )
        for w, x, y, _, _ in pts:
            a2.annotate(f"w={w:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    a2.set(xlabel="Fréchet distance (lower is better)", ylabel="Inception-style score (higher is better)")
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


def verify_shown(samples: list[str], files: list[str]) -> None:
    """Recompute the checksums of the sample files whose images a figure shows."""
    for f in files:
        with data.open_images(f, "samples") as h:
            data.verify(h, f)
