"""Helpers shared by the rules: config validation, the experiment matrix, paths and stage parameters.

Everything computed here comes from core.config, the one place that knows the config's meaning and the
results layout, so that rules, stages and tests agree.
"""

import json
from pathlib import Path

from core import config as cfg
from core.distributed import launcher

try:
    cfg.validate(config)
except cfg.ConfigError as err:
    raise WorkflowError(str(err)) from None

R = config["results_dir"]
THREADS = config["threads"]


wildcard_constraints:
    study=r"[A-Za-z0-9_.-]+",
    model=r"[A-Za-z0-9_.-]+",
    experiment=r"[A-Za-z0-9_.+-]+",
    dataset=r"[A-Za-z0-9_.-]+",
    step=r"step\d{7}|best",


def as_json(obj):
    """Parameters as JSON; key order is kept (the report lists experiments in config order)."""
    return json.dumps(obj)


def study_models(study):
    return list(config["studies"][study]["models"])


def study_experiments(study):
    return list(config["studies"][study]["experiments"])


def experiment_model(study, experiment):
    return cfg.experiment_spec(config, study, experiment)["model"]


def checkpoint_dir(wildcards):
    """The checkpoint directory a sample file needs; a step the model never saves is a planning-time error."""
    model = experiment_model(wildcards.study, wildcards.experiment)
    train = cfg.model_spec(config, wildcards.study, model)["train"]
    steps = cfg.checkpoint_steps(train)
    if wildcards.step == "best":
        if "early_stopping" not in train:
            raise WorkflowError(
                f"{wildcards.study}/{wildcards.experiment}: model '{model}' has no train.early_stopping, so it "
                "has no best-validation checkpoint (best.pt)"
            )
    elif int(wildcards.step.removeprefix("step")) not in steps:
        raise WorkflowError(
            f"{wildcards.study}/{wildcards.experiment}: model '{model}' saves checkpoints only at steps {steps} "
            f"(train.checkpoint_every and train.steps), not at {wildcards.step}"
        )
    return f"{cfg.model_dir(config, wildcards.study, model)}/ckpt"


def dataset_source(wildcards):
    """No input files; for an image-folder dataset, check its folder layout now, at planning time, so that a
    missing dataset is reported (folder, expected layout, config key) before any job is submitted.
    """
    spec = config["datasets"][wildcards.dataset]
    if spec["source"] != "shapes":
        from core import ingest

        try:
            ingest.check_source(
                spec["source"], spec["path"], f"datasets.{wildcards.dataset}.path"
            )
        except (OSError, ValueError) as err:
            raise WorkflowError(str(err)) from None
    return []


def sample_inputs(wildcards):
    """The checkpoint directory, and for a latent model the autoencoder that decodes its samples."""
    inputs = {"ckpt": checkpoint_dir(wildcards)}
    model = experiment_model(wildcards.study, wildcards.experiment)
    spec = cfg.model_spec(config, wildcards.study, model)
    if spec["space"] == "latent":
        inputs["autoencoder"] = cfg.autoencoder_path(config, spec["autoencoder"])
    return inputs


def study_autoencoder_reports(study):
    base = f"{R}/{study}/autoencoders"
    return [
        f"{base}/{ae}.{ext}"
        for ae in cfg.study_autoencoders(config, study)
        for ext in ("json", "png")
    ]


def experiment_steps(study, experiment):
    """The checkpoints an experiment samples. For every checkpoint of an early-stopping model these are the ones
    it saved before stopping: asking for them waits for the (checkpoint) train rule, then lists its ckpt folder.
    """
    if not cfg.steps_known_after_training(config, study, experiment):
        return cfg.eval_steps(config, study, experiment)
    model = experiment_model(study, experiment)
    ckpt = Path(checkpoints.train.get(study=study, model=model).output.ckpt)
    return sorted(int(p.stem.removeprefix("step")) for p in ckpt.glob("step*.pt"))


def curve_files(wildcards, path):
    """``path`` (cfg.metrics_path or cfg.sample_path) of every checkpoint an experiment samples (rule
    collect_checkpoints; named inputs, not unpack(), so that the dry run can format the rule's command before
    training has told which checkpoints exist)."""
    steps = experiment_steps(wildcards.study, wildcards.experiment)
    return [path(config, wildcards.study, wildcards.experiment, s) for s in steps]


def static_experiments(study):
    return [
        e
        for e in study_experiments(study)
        if not cfg.steps_known_after_training(config, study, e)
    ]


def study_metrics(study):
    """Metrics files known at planning time (the others: study_checkpoint_indexes)."""
    return [
        cfg.metrics_path(config, study, e, s)
        for e in static_experiments(study)
        for s in cfg.eval_steps(config, study, e)
    ]


def study_samples(study):
    return [
        cfg.sample_path(config, study, e, s)
        for e in static_experiments(study)
        for s in cfg.eval_steps(config, study, e)
    ]


def study_checkpoint_indexes(study):
    """One index per experiment whose checkpoints are known only after training (rule collect_checkpoints)."""
    return [
        f"{R}/{study}/metrics/{e}/checkpoints.json"
        for e in study_experiments(study)
        if cfg.steps_known_after_training(config, study, e)
    ]


def study_train_logs(study):
    return [
        f"{cfg.model_dir(config, study, m)}/train_log.csv" for m in study_models(study)
    ]


def report_files(study):
    d = cfg.report_dir(config, study)
    return [
        f"{d}/{name}"
        for name in (
            "table.md",
            "table.csv",
            "fid_is.png",
            "loss.png",
            "grids.png",
            "trajectory.png",
            "curves.png",
            "sweeps.png",
        )
    ]


def extractor_spec(study):
    return cfg.extractor_spec(config, study)


def extractor_for_tag(dataset, tag):
    """The extractor spec behind a reference-statistics file name (``classifier`` or ``inception-<mode>``)."""
    if tag == "classifier":
        return {"kind": "classifier", "weights": cfg.classifier_path(config, dataset)}
    m = config["metrics"]
    return {
        "kind": "inception",
        "weights": m["inception_weights"],
        "sha256": m["inception_sha256"],
        "preprocessing": tag.removeprefix("inception-"),
    }


def evaluation_options(study):
    ev = config["studies"][study]["evaluation"]
    opts = {k: ev[k] for k in ("is_splits", "kid_subsets", "kid_subset_size")}
    return {**opts, "batch_size": config["metrics"]["batch_size"]}
