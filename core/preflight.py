"""Pre-flight: what a run of the selected studies needs before it is submitted, on one screen.

    python -m core.preflight                                   # the cluster studies (default_studies.cluster)
    python -m core.preflight --configfile my-paths.yaml --config 'studies_to_run=[full-b]'

1. **Inputs a user provides**: each dataset folder (its layout checked as ingestion will, and its images counted),
   the Inception weights (path and SHA-256) when a study evaluates with Inception, and an autoencoder's
   ``checkpoint`` when one is imported. Each is ``ok`` or says what to fix, naming the config key.
2. **Disk** at the real budgets, per kind of artefact and in total: the ingested datasets (uint8, uncompressed),
   the latent caches (float32 posterior moments), each model replicate's checkpoints (weights, EMA and the two
   AdamW moments, fp32: one file per kept step, whose published ``ckpt/`` name is a hard link, plus the live
   ``latest.pt``), and
   the sample files of every experiment, replicate and checkpoint it samples (for early-stopping models that
   sample ``all``, every checkpoint they may keep: an upper bound). Parameter counts come from building each
   network on PyTorch's meta device (no memory, no compute).

Read only; plans as Snakemake does (``config.yaml``, then each ``--configfile`` merged over it, then ``--config``).
Exit status 1 when an input is missing or wrong, so that a submission script can stop on it.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import folders, status
from core.config import ConfigError, check_duplicate_keys
from core.paths import checkpoint_steps
from core.plan import Plan
from core.provenance import file_sha256

ROOT = Path(__file__).resolve().parent.parent
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
CKPT_COPIES = 4  # weights, EMA weights and AdamW's two moments, each fp32


def load_config(configfiles: list[str], overrides: list[str], base: str | Path = ROOT) -> dict:
    """The config as Snakemake builds it (``core.status.load_config``: ``config.yaml`` in ``base``, each of
    ``configfiles`` merged over it, then the ``KEY=VALUE`` entries of ``overrides``), duplicate keys refused."""
    check_duplicate_keys([Path(base) / "config.yaml", *map(Path, configfiles)])
    return status.load_config(Path(base), configfiles, overrides)


def selected_studies(plan: Plan, config: dict[str, Any], cluster: bool = True) -> list[str]:
    """``studies_to_run`` when set, else the cluster (or local) default studies: what ``snakemake`` would build."""
    chosen = config.get("studies_to_run") or plan.default_studies(cluster)
    unknown = [s for s in chosen if s not in plan.studies()]
    if unknown:
        raise ConfigError(f"config key studies_to_run: unknown studies {unknown}; known: {plan.studies()}")
    return list(chosen)


@dataclass
class Need:
    """One input a user provides: what, where, ``ok`` or the problem, and the config key that sets it."""

    what: str
    path: str
    problem: str  # "" when ok
    key: str


def count_images(folder: Path) -> int:
    """Image files directly in ``folder`` (by suffix; as ingestion lists them)."""
    try:
        with os.scandir(folder) as it:
            return sum(1 for e in it if Path(e.name).suffix.lower() in IMAGE_SUFFIXES and e.is_file())
    except OSError:
        return 0


@dataclass
class DataSize:
    """A dataset's images per split and classes; ``None`` where its folder is missing or mis-laid."""

    splits: dict[str, int] | None
    classes: int | None


def dataset_images(plan: Plan, name: str) -> tuple[DataSize, Need | None]:
    """Images per split and classes of a dataset and, for folder datasets, the input check."""
    spec = plan.dataset_spec(name)
    if spec["source"] == "shapes":  # built in: the counts are the config's
        from core.shapes import CLASS_NAMES

        return DataSize({k: int(v) for k, v in spec["splits"].items()}, len(CLASS_NAMES)), None
    key = f"datasets.{name}.path"
    path = str(spec["path"])
    try:
        src = folders.resolve(spec["source"], path, key)
    except (OSError, ValueError) as err:
        return DataSize(None, None), Need(
            f"dataset {name} ({spec['source']} layout)", path, str(err).splitlines()[0], key
        )
    counts = {split: sum(count_images(d) for d in dirs.values()) for split, dirs in src.class_dirs.items()}
    if not src.has_val and spec.get("val_fraction"):
        val = round(counts["train"] * float(spec["val_fraction"]))
        counts = {"train": counts["train"] - val, "val": val}
    problem = "" if counts.get("train") else "no image files found in its class folders"
    need = Need(f"dataset {name} ({len(src.class_names)} classes)", path, problem, key)
    return DataSize(counts, len(src.class_names)), need


def weights_need(what: str, path: str | None, want: str | None, key: str) -> Need:
    if not path:
        return Need(what, "(not set)", f"set {key} to the file's path", key)
    if not os.path.isfile(path):
        return Need(what, path, "no such file", key)
    if want and file_sha256(path) != want:
        return Need(what, path, f"SHA-256 differs from {want[:12]}… (a different file)", key)
    return Need(what, path, "", key)


def inputs(plan: Plan, studies: list[str]) -> tuple[list[Need], dict[str, DataSize]]:
    """The inputs the studies need, checked, and each dataset's image counts."""
    needs: list[Need] = []
    counts: dict[str, DataSize] = {}
    datasets = list(dict.fromkeys(plan.dataset_of(s) for s in studies))
    autoencoders = list(dict.fromkeys(a for s in studies for a in plan.study_autoencoders(s)))
    datasets += [plan.autoencoder_spec(a)["dataset"] for a in autoencoders if plan.autoencoder_spec(a)["dataset"]]
    for name in dict.fromkeys(datasets):
        counts[name], need = dataset_images(plan, name)
        if need:
            needs.append(need)
    if any(plan.extractor_kind(s) == "inception" for s in studies):
        m = plan.config["metrics"]
        needs.append(
            weights_need(
                "Inception weights (FID/IS)", m["inception_weights"], m["inception_sha256"], "metrics.inception_weights"
            )
        )
    for name in autoencoders:
        ae = plan.autoencoder_spec(name)
        if ae.get("checkpoint"):
            key = f"autoencoders.{name}.checkpoint"
            needs.append(
                weights_need(f"autoencoder {name} weights", ae["checkpoint"], ae.get("checkpoint_sha256"), key)
            )
    return needs, counts


def parameters(plan: Plan, study: str, model: str, classes: int) -> int:
    """The model's parameter count, built on the meta device (no memory, no compute)."""
    import torch

    from core.models import build_model

    spec = plan.model(study, model)
    size = plan.input_size(study, spec)
    latent = spec["space"] == "latent"
    channels = int(plan.autoencoder_spec(spec["autoencoder"])["net"]["z_channels"]) if latent else 3
    with torch.device("meta"):
        net = build_model(spec, size, channels, classes if spec["net"].get("class_conditional") else 0)
    return sum(p.numel() for p in net.parameters())


def autoencoder_parameters(plan: Plan, name: str) -> int:
    import torch

    from core.models import build_autoencoder

    ae = plan.autoencoder_spec(name)
    size = int(plan.config["datasets"][ae["dataset"]]["image_size"])
    with torch.device("meta"):
        net = build_autoencoder(ae["net"], size)
    return sum(p.numel() for p in net.parameters())


@dataclass
class DiskRow:
    what: str
    files: int
    bytes_each: int

    @property
    def total(self) -> int:
        return self.files * self.bytes_each


def disk(plan: Plan, studies: list[str], counts: dict[str, DataSize]) -> tuple[list[DiskRow], list[str]]:
    """Disk per kind of artefact at the real budgets, and notes on what could not be sized."""
    rows: list[DiskRow] = []
    notes: list[str] = []
    for name, data_size in counts.items():
        split_counts = data_size.splits
        size = int(plan.config["datasets"][name]["image_size"])
        if split_counts is None:
            notes.append(f"dataset {name}: not sized (its folder is missing or mis-laid; see Inputs)")
            continue
        rows.append(
            DiskRow(
                f"dataset {name} ({sum(split_counts.values()):,} images at {size}²)",
                1,
                sum(split_counts.values()) * size * size * 3,
            )
        )
    for name in dict.fromkeys(a for s in studies for a in plan.study_autoencoders(s)):
        ae = plan.autoencoder_spec(name)
        images = counts[ae["dataset"]].splits
        factor = 2 ** (len(ae["net"]["ch_mult"]) - 1)
        side, z = int(plan.config["datasets"][ae["dataset"]]["image_size"]) // factor, int(ae["net"]["z_channels"])
        rows.append(DiskRow(f"autoencoder {name} (vae.pt)", 1, autoencoder_parameters(plan, name) * 4))
        if images is None:
            notes.append(f"latent cache of {name}: not sized (dataset {ae['dataset']} missing)")
        else:
            rows.append(
                DiskRow(
                    f"latent cache of {name} ({side}×{side}×{z}, mean and log-variance)",
                    1,
                    sum(images.values()) * 2 * z * side * side * 4,
                )
            )
    for study in studies:
        for model in plan.models[study]:
            spec = plan.model(study, model)
            kept = len(checkpoint_steps(spec["train"])) + (1 if "early_stopping" in spec["train"] else 0)
            # one file per kept step (and best): ckpt/ holds second names of state/'s (core.provenance.share),
            # plus state/latest.pt while a run is between kept steps (an upper bound)
            files = kept + 1
            classes = counts[plan.dataset_of(study)].classes
            if classes is None and spec["net"].get("class_conditional"):
                classes = 100
                notes.append(f"{study} model {model}: sized for 100 classes (its dataset folder is missing)")
            each = parameters(plan, study, model, classes or 0) * 4 * CKPT_COPIES
            reps = len(plan.model_replicates(study, model))
            rows.append(DiskRow(f"{study} model {model}: {reps} × {files} checkpoints", reps * files, each))
        for exp in plan.experiments[study]:
            e = plan.experiment(study, exp)
            size = int(plan.config["datasets"][plan.dataset_of(study)]["image_size"])
            files = len(plan.experiment_replicates(study, exp)) * len(plan.eval_steps(study, exp))
            rows.append(DiskRow(f"{study} samples {exp}", files, int(e["num_samples"]) * size * size * 3))
    return rows, notes


def gib(n: int) -> str:
    """Bytes in binary units: GiB from 1 GiB up, else MiB (KiB below 1 MiB)."""
    if n >= 2**30:
        return f"{n / 2**30:,.1f} GiB"
    return f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n / 2**10:,.1f} KiB"


def render(studies: list[str], needs: list[Need], rows: list[DiskRow], notes: list[str], free: int) -> str:
    lines = [f"# Pre-flight: {', '.join(studies)}", "", "## Inputs you provide", ""]
    lines += ["| input | path | status | config key |", "|---|---|---|---|"]
    for n in needs:
        lines.append(f"| {n.what} | `{n.path}` | {'ok' if not n.problem else 'MISSING: ' + n.problem} | `{n.key}` |")
    if not needs:
        lines.append("| (none: built-in data, no weights needed) | | | |")
    total = sum(r.total for r in rows)
    samples = sum(r.total for r in rows if " samples " in r.what)
    lines += ["", f"## Disk at the real budgets: {gib(total)} (results_dir has {gib(free)} free)", ""]
    lines += ["| artefact | files | each | total |", "|---|---|---|---|"]
    groups: dict[str, list[DiskRow]] = {}
    for r in rows:
        groups.setdefault(r.what.split(" samples ")[0] + " samples" if " samples " in r.what else r.what, []).append(r)
    for label, group in groups.items():
        files = sum(r.files for r in group)
        each = group[0].bytes_each if len(group) == 1 else 0
        lines.append(
            f"| {label} | {files:,} | {gib(each) if each else 'varies'} | {gib(sum(r.total for r in group))} |"
        )
    lines += [
        "",
        f"Sample files: {gib(samples)} of it. Not counted: logs, metrics JSON, reference statistics, "
        "reports (megabytes).",
    ]
    if total > free:
        lines.append(f"**Not enough space**: {gib(total)} needed, {gib(free)} free where results_dir is.")
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configfile", action="append", default=[], help="merged over config.yaml, as for snakemake")
    p.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE", help="as for snakemake")
    p.add_argument("--local", action="store_true", help="the local default studies instead of the cluster ones")
    args = p.parse_args(argv)
    try:
        config = load_config(args.configfile, args.config)
        plan = Plan(config)
        studies = selected_studies(plan, plan.config, cluster=not args.local)
    except ConfigError as err:
        print(f"pre-flight: {err}", file=sys.stderr)
        return 2
    needs, counts = inputs(plan, studies)
    rows, notes = disk(plan, studies, counts)
    root = Path(plan.root)
    probe = next((q for q in [root, *root.parents] if q.exists()), Path("."))
    usage = os.statvfs(probe)
    print(render(studies, needs, rows, notes, usage.f_bavail * usage.f_frsize), end="")
    return 1 if any(n.problem for n in needs) else 0


if __name__ == "__main__":
    sys.exit(main())
