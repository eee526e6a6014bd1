"""The results layout: the one place that names every file the workflow writes.

The rules declare their outputs with these functions (passing wildcards such as ``"{study}"`` through as text) and
the stages and the report find files with them, so that a path is written once. Free of heavy imports (planning
imports it). ``root`` is the config's ``results_dir``.

    <root>/data/<dataset>.h5                                   the dataset (core.data layout)
    <root>/autoencoders/<ae>/vae.pt, train_log.csv             a KL autoencoder
    <root>/latents/<ae>.h5                                     its latent cache
    <root>/extractors/<dataset>-classifier.pt(.json)           the dataset classifier (feature extractor)
    <root>/refstats/<dataset>/<split>-<extractor>-n<N>.npz     reference statistics
    <root>/<study>/models/<model>/r<k>/ckpt/<step>.pt          replicate k of a model: its kept checkpoints,
                                   .../r<k>/train_log.csv      its training log (and val_log.csv),
                                   .../r<k>/state/             its live, resumable state (state/train_log.csv:
                                                               the rows so far, read by core.status)
                                   .../r<k>/tensorboard/       its TensorBoard events (config key tensorboard)
    <root>/<study>/samples/<experiment>/r<k>/<step>.h5          replicate k of an experiment's samples
    <root>/<study>/metrics/<experiment>/r<k>/<step>.json        their metrics
    <root>/<study>/metrics/<experiment>/r<k>/checkpoints.json   the checkpoints a curve sampled (early stopping)
    <root>/<study>/samples/<experiment>/r<k>/selected.h5        a fresh draw at the checkpoint its per-checkpoint
    <root>/<study>/metrics/<experiment>/r<k>/selected.json      metrics selected, and its metrics (core.selection)
    <root>/<study>/autoencoders/<ae>.json, .png                 the autoencoder's reconstruction quality
    <root>/<study>/report/                                      the report (REPORT_FILES)
    <root>/<study>/status.md                                    core.status's view of the study
    <root>/logs/<rule>/…, <root>/benchmarks/<rule>/…            per-job logs and Snakemake benchmarks
    <output>.cost.json, <model>/r<k>/train.cost.json          what a job cost (core.costs), beside its output
    <root>/standin/<dataset>/                                  a rehearsal's stand-in data tree (core.standin)
    <root>/forecast/forecast.md, forecast.csv                  what the study costs (core.forecast)

``<step>`` is ``step0004000`` or ``best`` (``step_tag``), ``r<k>`` the replicate (``replicate_tag``).
"""

from __future__ import annotations

REPORT_FILES = (
    "table.md",
    "table.csv",
    "fid_is.png",
    "loss.png",
    "grids.png",
    "trajectory.png",
    "curves.png",
    "sweeps.png",
)


def step_tag(step: int | str) -> str:
    """A checkpoint's file stem: ``step0004000``, or ``best``; text (a wildcard, a tag) passes through."""
    return step if isinstance(step, str) else f"step{step:07d}"


def step_of(tag: str) -> int | str:
    """The inverse of ``step_tag``: 4000 for ``step0004000``, ``"best"`` for ``best``."""
    return tag if tag == "best" else int(tag.removeprefix("step"))


def checkpoint_steps(train: dict) -> list[int]:
    """Steps at which a training run keeps checkpoints: every ``checkpoint_every`` and the last."""
    every, total = int(train["checkpoint_every"]), int(train["steps"])
    return sorted({*range(every, total + 1, every), total})


def replicate_tag(replicate: int | str) -> str:
    """``r0``, ``r1``, …; text (a wildcard) passes through."""
    return replicate if isinstance(replicate, str) else f"r{replicate}"


def dataset(root: str, name: str) -> str:
    return f"{root}/data/{name}.h5"


def autoencoder(root: str, name: str) -> str:
    return f"{root}/autoencoders/{name}/vae.pt"


def autoencoder_log(root: str, name: str) -> str:
    return f"{root}/autoencoders/{name}/train_log.csv"


def latents(root: str, name: str) -> str:
    """The latent cache of an autoencoder's dataset."""
    return f"{root}/latents/{name}.h5"


def classifier(root: str, dataset_name: str) -> str:
    return f"{root}/extractors/{dataset_name}-classifier.pt"


def reference(root: str, dataset_name: str, split: str, extractor: str, num: int | str) -> str:
    """Reference statistics of the first ``num`` images of a split (0: all) with an extractor (``extractor_tag``)."""
    return f"{root}/refstats/{dataset_name}/{split}-{extractor}-n{num}.npz"


def model_dir(root: str, study: str, model: str, replicate: int | str) -> str:
    return f"{root}/{study}/models/{model}/{replicate_tag(replicate)}"


def checkpoint_dir(root: str, study: str, model: str, replicate: int | str) -> str:
    return f"{model_dir(root, study, model, replicate)}/ckpt"


def checkpoint(root: str, study: str, model: str, replicate: int | str, step: int | str) -> str:
    return checkpoint_in(checkpoint_dir(root, study, model, replicate), step)


def checkpoint_in(ckpt_dir: str, step: int | str) -> str:
    """A checkpoint file inside a checkpoint folder (``checkpoint_dir``)."""
    return f"{ckpt_dir}/{step_tag(step)}.pt"


def train_log(root: str, study: str, model: str, replicate: int | str) -> str:
    return f"{model_dir(root, study, model, replicate)}/train_log.csv"


STATE = "state"
TENSORBOARD = "tensorboard"


def train_state_dir(root: str, study: str, model: str, replicate: int | str) -> str:
    """The live, resumable state of a training run (core.stages.train), with its log so far."""
    return f"{model_dir(root, study, model, replicate)}/{STATE}"


def tensorboard_dir(root: str, study: str, model: str, replicate: int | str) -> str:
    """TensorBoard events of a training run (core.tboard), when the config asks for them."""
    return f"{model_dir(root, study, model, replicate)}/{TENSORBOARD}"


def samples(root: str, study: str, experiment: str, replicate: int | str, step: int | str) -> str:
    return f"{root}/{study}/samples/{experiment}/{replicate_tag(replicate)}/{step_tag(step)}.h5"


def metrics(root: str, study: str, experiment: str, replicate: int | str, step: int | str) -> str:
    return f"{root}/{study}/metrics/{experiment}/{replicate_tag(replicate)}/{step_tag(step)}.json"


SELECTED = "selected"


def selected_samples(root: str, study: str, experiment: str, replicate: int | str) -> str:
    """The fresh draw at the checkpoint an experiment replicate's per-checkpoint metrics selected (core.selection)."""
    return samples(root, study, experiment, replicate, SELECTED)


def selected_metrics(root: str, study: str, experiment: str, replicate: int | str) -> str:
    """The fresh draw's metrics, with the selection it was made for (``selection``)."""
    return metrics(root, study, experiment, replicate, SELECTED)


def checkpoint_index(root: str, study: str, experiment: str, replicate: int | str) -> str:
    return f"{root}/{study}/metrics/{experiment}/{replicate_tag(replicate)}/checkpoints.json"


def autoencoder_report(root: str, study: str, name: str, ext: str) -> str:
    """``json`` (PSNR, rFD) or ``png`` (reconstruction grid) of an autoencoder evaluated on a study's data."""
    return f"{root}/{study}/autoencoders/{name}.{ext}"


def report_dir(root: str, study: str) -> str:
    return f"{root}/{study}/report"


def status_file(root: str, study: str) -> str:
    """``python -m core.status``'s view of the study (Markdown), beside its report folder."""
    return f"{root}/{study}/status.md"


def report_files(root: str, study: str) -> list[str]:
    return [f"{report_dir(root, study)}/{name}" for name in REPORT_FILES]


def compile_cache(root: str) -> str:
    """torch.compile's Inductor cache, kept across jobs and restarts."""
    return f"{root}/cache/inductor"


def log(root: str, rule: str, *parts: str) -> str:
    return f"{root}/logs/{rule}/{'/'.join(parts)}.log"


def benchmark(root: str, rule: str, *parts: str) -> str:
    return f"{root}/benchmarks/{rule}/{'/'.join(parts)}.tsv"


def cost(output: str) -> str:
    """What the job that wrote ``output`` cost (``core.costs``); a training run's is ``cost(<model>/r<k>/train)``."""
    return f"{output}.cost.json"


def train_cost(root: str, study: str, model: str, replicate: int | str) -> str:
    return cost(f"{model_dir(root, study, model, replicate)}/train")


def standin(root: str, dataset_name: str) -> str:
    return f"{root}/standin/{dataset_name}"


def forecast_dir(root: str) -> str:
    return f"{root}/forecast"
