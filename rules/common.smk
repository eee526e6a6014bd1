"""Helpers shared by the rules: the validated plan (core.plan.Plan), the results layout (core.paths), and each
rule's inputs and parameters. Planning imports nothing heavy (no torch, numpy or h5py).
"""

import json
import os
from pathlib import Path

from core import folders, paths, requirements, tboard
from core.provenance import code_fingerprint
from core.config import ConfigError, check_duplicate_keys
from core.plan import Plan
from core.paths import checkpoint_steps

try:
    check_duplicate_keys(workflow.configfiles)
    PLAN = Plan(config)
except ConfigError as err:
    raise WorkflowError(str(err)) from None

R = PLAN.root
# TensorBoard on or off (config key tensorboard): told to the training jobs through their environment, not a
# parameter, so that switching it reruns nothing (core/tboard.py)
os.environ[tboard.ENV] = "1" if config["tensorboard"] else "0"
THREADS = config["threads"]
NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}"


wildcard_constraints:
    study=NAME,
    model=NAME,
    experiment=NAME,
    dataset=NAME,
    ae=NAME,
    replicate=r"r\d+",
    step=r"step\d{7}|best",


def code_param(stage):
    """With ``code_changes: rerun``, the hash of the code the stage runs (a parameter: changing that code reruns
    exactly the jobs that ran it, and what depends on them); with ``flag`` nothing (the report marks rows instead).
    """
    return (
        code_fingerprint(stage)["sha256"] if config["code_changes"] == "rerun" else ""
    )


def spec_json(obj):
    """Parameters as canonical JSON: key order never changes a job's parameters (so never reruns it)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def rep(wildcards):
    """The replicate index of a ``r<k>`` wildcard."""
    return int(wildcards.replicate.removeprefix("r"))


def on_cluster():
    """Whether jobs go to a cluster (the slurm profile) rather than run on this machine. In a dry run Snakemake
    executes with its dry-run executor, but it validated the run for the intended one, which for a cluster
    executor makes it use threads; that is what tells the two apart then."""
    plugin = workflow.executor_plugin
    if plugin is not None and not plugin.common_settings.dryrun_exec:
        return not plugin.common_settings.local_exec
    return bool(workflow.execution_settings.use_threads)


def default_target(wildcards):
    reports = [
        f for s in PLAN.default_studies(on_cluster()) for f in paths.report_files(R, s)
    ]
    forecast = [f"{paths.forecast_dir(R)}/forecast.md"] if PLAN.rehearse else []
    return reports + forecast


def dataset_source(wildcards):
    """No input files. For an image-folder dataset, check its folders now, at planning time, so that a missing or
    unreadable dataset, a class-conditional model on fewer than two classes, or a val split nobody provides is
    reported (folder, expected layout, config key) before any job is submitted."""
    spec = PLAN.dataset_spec(wildcards.dataset)
    key = f"datasets.{wildcards.dataset}"
    if spec["source"] == "shapes":
        return []
    if PLAN.standin(
        wildcards.dataset
    ):  # a rehearsal's stand-in tree: the standin_data job writes it
        return [paths.standin(R, wildcards.dataset)]
    try:
        summary = folders.source_summary(
            spec["source"], spec["path"], f"{key}.path", spec["on_error"]
        )
    except (OSError, ValueError) as err:
        raise WorkflowError(str(err)) from None
    conditional = PLAN.class_conditional_models(wildcards.dataset)
    if conditional and len(summary["classes"]) < 2:
        raise WorkflowError(
            f"config key {conditional[0]}: a class-conditional model needs at least 2 classes, but "
            f"{spec['path']} ({key}.path) has {len(summary['classes'])}: {summary['classes']}"
        )
    if not summary["has_val"] and spec["val_fraction"] == 0:
        needs_val = [
            r["key"]
            for r in requirements.of_dataset(PLAN, wildcards.dataset)
            if r["split"] == "val"
        ]
        if needs_val:
            raise WorkflowError(
                f"config key {needs_val[0]} needs a val split, but {spec['path']} ({key}.path) has none and "
                f"{key}.val_fraction is 0: set val_fraction (e.g. 0.1) to hold out part of each class"
            )
    return []


def dataset_fingerprint(wildcards):
    """Changes when image files are added, removed or renamed in an image-folder dataset (a parameter, so that
    Snakemake re-ingests it); constant for the built-in shapes."""
    spec = PLAN.dataset_spec(wildcards.dataset)
    if spec["source"] == "shapes":
        return ""
    if PLAN.standin(
        wildcards.dataset
    ):  # written by the workflow from this spec: the spec is its content
        return spec_json(PLAN.standin(wildcards.dataset))
    return folders.source_fingerprint(
        spec["source"], spec["path"], f"datasets.{wildcards.dataset}.path"
    )


def checkpoint_file(wildcards):
    """The checkpoint a sample file is drawn from; a step the model never saves is a planning-time error."""
    exp = PLAN.experiment(wildcards.study, wildcards.experiment)
    model = exp["model"]
    train = PLAN.model(wildcards.study, model)["train"]
    m_rep = PLAN.model_replicate_of(
        wildcards.study, wildcards.experiment, rep(wildcards)
    )
    if wildcards.step == "best":
        if "early_stopping" not in train:
            raise WorkflowError(
                f"{wildcards.study}/{wildcards.experiment}: model '{model}' has no train.early_stopping, so it "
                "has no best-validation checkpoint (best.pt)"
            )
    else:
        steps = checkpoint_steps(train)
        if paths.step_of(wildcards.step) not in steps:
            raise WorkflowError(
                f"{wildcards.study}/{wildcards.experiment}: model '{model}' saves checkpoints only at steps "
                f"{steps} (train.checkpoint_every and train.steps), not at {wildcards.step}"
            )
    return paths.checkpoint(R, wildcards.study, model, m_rep, wildcards.step)


def sample_inputs(wildcards):
    """The model replicate's checkpoint folder, and for a latent model the autoencoder that decodes its samples."""
    exp = PLAN.experiment(wildcards.study, wildcards.experiment)
    m_rep = PLAN.model_replicate_of(
        wildcards.study, wildcards.experiment, rep(wildcards)
    )
    inputs = {"ckpt": paths.checkpoint_dir(R, wildcards.study, exp["model"], m_rep)}
    spec = PLAN.model(wildcards.study, exp["model"])
    if spec["space"] == "latent":
        inputs["autoencoder"] = paths.autoencoder(R, spec["autoencoder"])
    return inputs


def experiment_steps(study, experiment, replicate):
    """The checkpoints an experiment replicate samples. For every checkpoint of an early-stopping model these are
    the ones it saved before stopping: asking for them waits for the (checkpoint) train rule, then lists them.
    """
    if not PLAN.steps_known_after_training(study, experiment):
        return PLAN.eval_steps(study, experiment)
    model = PLAN.experiment(study, experiment)["model"]
    m_rep = paths.replicate_tag(PLAN.model_replicate_of(study, experiment, replicate))
    ckpt = Path(
        checkpoints.train.get(study=study, model=model, replicate=m_rep).output.ckpt
    )
    return sorted(int(p.stem.removeprefix("step")) for p in ckpt.glob("step*.pt"))


def curve_files(wildcards, path):
    """``path`` (paths.metrics or paths.samples) of every checkpoint an experiment replicate samples (rule
    collect_checkpoints; named inputs, not unpack(), so that the dry run can format the rule's command before
    training has told which checkpoints exist)."""
    r = rep(wildcards)
    steps = experiment_steps(wildcards.study, wildcards.experiment, r)
    return [path(R, wildcards.study, wildcards.experiment, r, s) for s in steps]


def static_experiments(study):
    return [
        e
        for e in PLAN.experiments[study]
        if not PLAN.steps_known_after_training(study, e)
    ]


def study_files(study, path):
    """``path`` (paths.metrics or paths.samples) of every file known at planning time (the rest: indexes)."""
    return [
        path(R, study, e, r, s)
        for e in static_experiments(study)
        for r in PLAN.experiment_replicates(study, e)
        for s in PLAN.eval_steps(study, e)
    ]


def study_checkpoint_indexes(study):
    """One index per experiment replicate whose checkpoints are known only after training."""
    return [
        paths.checkpoint_index(R, study, e, r)
        for e in PLAN.experiments[study]
        if PLAN.steps_known_after_training(study, e)
        for r in PLAN.experiment_replicates(study, e)
    ]


def selected_gpus(wildcards):
    """A fresh draw samples and scores on one process: one GPU where the experiment samples on GPUs."""
    return min(1, PLAN.sample_gpus(wildcards.study, wildcards.experiment))


def study_selected(study, path):
    """``path`` (paths.selected_metrics or paths.selected_samples) of every experiment replicate scored on a fresh
    draw at its selected checkpoint (core.selection)."""
    return [
        path(R, study, e, r)
        for e in PLAN.experiments[study]
        if PLAN.selects_checkpoint(study, e)
        for r in PLAN.experiment_replicates(study, e)
    ]


def study_train_logs(study):
    return [
        paths.train_log(R, study, m, r)
        for m in PLAN.models[study]
        for r in PLAN.model_replicates(study, m)
    ]


def study_autoencoder_reports(study):
    return [
        paths.autoencoder_report(R, study, ae, ext)
        for ae in PLAN.study_autoencoders(study)
        for ext in ("json", "png")
    ]


def report_study(study):
    """What the report stage needs of a study: its settings, models and experiments (in config order)."""
    s = PLAN.study(study)
    return {
        "name": study,
        "title": s["title"] or study,
        "layout": s["layout"],
        "published_protocol": s["published_protocol"],
        "claims": PLAN.claims[study],
        "models": PLAN.models[study],
        "experiments": PLAN.experiments[study],
        "experiment_order": list(PLAN.experiments[study]),
        "rehearsal": PLAN.rehearse,
    }
