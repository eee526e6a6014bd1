"""The jobs of a plan as the rules make them: rule, wildcards (in the rule's order), outputs, inputs and log, each
path from ``core.paths`` exactly as the rules write it (so it also names Snakemake's records of the job).

``core.status`` reads the state of each from disk. The list mirrors rules/*.smk: a rule added there is added here
(tests/test_status.py checks the list against Snakemake's own dry run of the tiny preset). Free of heavy imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import paths
from core.plan import Plan


@dataclass
class Job:
    """One job: ``wildcards`` in the order of the rule's output pattern (the SLURM plugin's comment uses it)."""

    rule: str
    wildcards: dict[str, str]
    outputs: list[str]
    log: str
    inputs: list[str] = field(default_factory=list)
    study: str = ""
    info: dict[str, Any] = field(default_factory=dict)  # what the state readers need (train: total steps)

    @property
    def label(self) -> str:
        return "/".join(self.wildcards.values())

    @property
    def slurm_comment(self) -> str:
        """The ``--comment`` snakemake-executor-plugin-slurm gives the job's sbatch (utils.get_job_wildcards)."""
        if not self.wildcards:
            return f"rule_{self.rule}"
        return f"rule_{self.rule}_wildcards_{'_'.join(self.wildcards.values()).replace('/', '_')}"

    @property
    def slurm_log_dir(self) -> str:
        """The plugin's per-job log folder under its ``--slurm-logdir`` (``<jobid>.log`` inside)."""
        return f"rule_{self.rule}/{'_'.join(self.wildcards.values()).replace('/', '_')}"


def _shared_jobs(plan: Plan, study: str) -> list[Job]:
    """The jobs a study needs that other studies may share: data, extractor, reference, autoencoders."""
    R, ds = plan.root, plan.dataset_of(study)
    out = [Job("make_dataset", {"dataset": ds}, [paths.dataset(R, ds)], paths.log(R, "make_dataset", ds))]
    weights = plan.extractor_spec(study)["weights"] if plan.extractor_kind(study) == "classifier" else None
    if weights is not None:
        out.append(
            Job(
                "train_classifier",
                {"dataset": ds},
                [weights, weights + ".json"],
                paths.log(R, "train_classifier", ds),
                [paths.dataset(R, ds)],
            )
        )
    ev = plan.study(study)["evaluation"]
    split, tag, num = ev["reference_split"], plan.extractor_tag(study), str(ev["reference_num"])
    ref = plan.reference_file(study)
    extractor_weights = plan.extractor_for_tag(ds, tag)["weights"]
    out.append(
        Job(
            "reference_stats",
            {"dataset": ds, "split": split, "extractor": tag, "num": num},
            [ref],
            paths.log(R, "reference_stats", ds, f"{split}-{tag}-n{num}"),
            [paths.dataset(R, ds), extractor_weights],
        )
    )
    for ae in plan.study_autoencoders(study):
        ae_data = paths.dataset(R, plan.autoencoder_spec(ae)["dataset"])
        vae = paths.autoencoder(R, ae)
        out.append(
            Job(
                "train_autoencoder",
                {"ae": ae},
                [vae, paths.autoencoder_log(R, ae)],
                paths.log(R, "train_autoencoder", ae),
                [ae_data],
            )
        )
        out.append(
            Job(
                "encode_latents", {"ae": ae}, [paths.latents(R, ae)], paths.log(R, "encode_latents", ae), [ae_data, vae]
            )
        )
    return out


def _model_steps(root: Path, plan: Plan, study: str, experiment: str, replicate: int) -> list[int | str]:
    """The checkpoints an experiment replicate samples: for an early-stopping model's every checkpoint, those it
    kept once trained (its ckpt folder; none before: as in Snakemake's plan, they are known after training)."""
    if not plan.steps_known_after_training(study, experiment):
        return plan.eval_steps(study, experiment)
    model = plan.experiment(study, experiment)["model"]
    ckpt = root / paths.checkpoint_dir(plan.root, study, model, plan.model_replicate_of(study, experiment, replicate))
    return sorted(int(p.stem.removeprefix("step")) for p in ckpt.glob("step*.pt")) if ckpt.is_dir() else []


def _score_selected(plan: Plan, study: str, e: str, r: int, steps: list, ev_inputs: list[str]) -> Job:
    """The fresh draw at the checkpoint an experiment replicate's per-checkpoint metrics select (core.selection)."""
    R, tag = plan.root, paths.replicate_tag(r)
    ckpt = paths.checkpoint_dir(R, study, plan.experiment(study, e)["model"], plan.model_replicate_of(study, e, r))
    return Job(
        "score_selected",
        {"study": study, "experiment": e, "replicate": tag},
        [paths.selected_samples(R, study, e, r), paths.selected_metrics(R, study, e, r)],
        paths.log(R, "score_selected", study, e, tag),
        [*(paths.metrics(R, study, e, r, s) for s in steps), ckpt, *ev_inputs],
        info={"experiment": e},
    )


def study_jobs(plan: Plan, study: str, root: Path = Path(".")) -> list[Job]:
    """Every job of a study, in the order they run; ``root`` is the working directory the paths are relative to."""
    R = plan.root
    jobs = _shared_jobs(plan, study)
    ev_inputs = [plan.reference_file(study), plan.extractor_spec(study)["weights"]]
    ds_file = paths.dataset(R, plan.dataset_of(study))
    for ae in plan.study_autoencoders(study):
        outs = [paths.autoencoder_report(R, study, ae, ext) for ext in ("json", "png")]
        vae = paths.autoencoder(R, ae)
        log = paths.log(R, "evaluate_autoencoder", study, ae)
        jobs.append(Job("evaluate_autoencoder", {"study": study, "ae": ae}, outs, log, [vae, ds_file, *ev_inputs]))
    for m in plan.models[study]:
        train = plan.model(study, m)["train"]
        for r in plan.model_replicates(study, m):
            tag = paths.replicate_tag(r)
            jobs.append(
                Job(
                    "train",
                    {"study": study, "model": m, "replicate": tag},
                    [paths.checkpoint_dir(R, study, m, r), paths.train_log(R, study, m, r)],
                    paths.log(R, "train", study, m, tag),
                    [plan.train_data(study, m)],
                    info={
                        "total": int(train["steps"]),
                        "early_stopping": "early_stopping" in train,
                        "state_dir": paths.train_state_dir(R, study, m, r),
                    },
                )
            )
    for e in plan.experiments[study]:
        model = plan.experiment(study, e)["model"]
        for r in plan.experiment_replicates(study, e):
            tag, m_rep = paths.replicate_tag(r), plan.model_replicate_of(study, e, r)
            steps = _model_steps(root, plan, study, e, r)
            for s in steps:
                w = {"study": study, "experiment": e, "replicate": tag, "step": paths.step_tag(s)}
                sample = paths.samples(R, study, e, r, s)
                parts = (study, e, tag, paths.step_tag(s))
                jobs.append(
                    Job(
                        "sample",
                        w,
                        [sample],
                        paths.log(R, "sample", *parts),
                        [paths.checkpoint(R, study, model, m_rep, s)],
                        info={"experiment": e},
                    )
                )
                jobs.append(
                    Job(
                        "evaluate",
                        dict(w),
                        [paths.metrics(R, study, e, r, s)],
                        paths.log(R, "evaluate", *parts),
                        [sample, *ev_inputs],
                        info={"experiment": e, "step": s},
                    )
                )
            if plan.selects_checkpoint(study, e):
                jobs.append(_score_selected(plan, study, e, r, steps, ev_inputs))
            if plan.steps_known_after_training(study, e):
                jobs.append(
                    Job(
                        "collect_checkpoints",
                        {"study": study, "experiment": e, "replicate": tag},
                        [paths.checkpoint_index(R, study, e, r)],
                        paths.log(R, "collect_checkpoints", study, e, tag),
                        [
                            p
                            for s in steps
                            for p in (paths.metrics(R, study, e, r, s), paths.samples(R, study, e, r, s))
                        ],
                    )
                )
    everything = [
        o for j in jobs if j.rule not in ("make_dataset", "train_classifier", "reference_stats") for o in j.outputs
    ]
    jobs.append(
        Job("report", {"study": study}, paths.report_files(R, study), paths.log(R, "report", study), everything)
    )
    for j in jobs:
        j.study = study
    return jobs
