"""The rehearsal (config key ``rehearse: true``): every job of a study at its real shapes with its budgets cut.

One home: the rehearsal is not a copy of the presets but this overlay of them, applied by ``core.plan.Plan`` once
the real config has been validated and resolved (so a rehearsal checks the real config too). What it changes:

- the results go to ``<results_dir>/rehearsal`` (``ROOT``), apart from any real run's; every study's title starts
  with ``LABEL`` and its report carries a banner, so that its numbers cannot pass for a study's;
- image-folder datasets (``imagenet100``, ``sysu-shapes``, ``folder``) read a stand-in tree written by the
  ``standin_data`` job in the dataset's own layout, class count and file types (``core.standin``);
- Inception metrics use a random-weight stand-in Inception (``inception-standin``: the real architecture, 299²,
  2048 features; labelled FD_standin/IS_standin, never FID);
- budgets (``rehearsal`` keys): training steps, the images of a step and of a sampler batch, the sampler steps run
  of each batch's real schedule, samples, validation and reference images, bootstrap resamples, the images the
  latent cache encodes (the other rows repeat them), and each sweep list cut to its largest point. Each cut spec
  keeps its real values under ``rehearsal.real``; the stages write what each job costs (``core.costs``) and
  ``core.forecast --rehearsal`` prices the real budgets from those costs. Only a rehearsal's jobs count FLOPs
  (``core.costs``): the ``rehearsal`` entry of a model's, experiment's or autoencoder's spec and ``count_flops`` in
  a study's evaluation options (``Plan.evaluation_options``) say so;
- multi-GPU models train in one process (the per-process batch is cut anyway; the multi-GPU path is what
  ``.ci/slurm-gpu-e2e.sh`` exercises).

What keeps its real value: every network's architecture and input size (so parameter counts and shapes are the
real ones), the diffusion schedule, the sampler and its real step count (its schedule is built at the real count
and the first ``sampler_steps`` steps run), guidance, precision settings, the number of checkpoints kept is one.
Free of heavy imports (planning imports it).
"""

from __future__ import annotations

from typing import Any

LABEL = "REHEARSAL"
BANNER = (
    "**REHEARSAL — not a result.** Every job ran at its real shapes with cut budgets on stand-in data "
    "(core/standin.py) and a random-weight stand-in Inception: the numbers below mean nothing. What the real run "
    "will cost: ../../forecast/forecast.md (docs/full-study.md, Rehearsal)."
)
FOLDER_SOURCES = ("imagenet100", "sysu-shapes", "folder")


def root(results_dir: str) -> str:
    return f"{results_dir.rstrip('/')}/rehearsal"


def _cut(spec: dict[str, Any], key: str, value: Any, real: dict[str, Any]) -> None:
    """Set ``spec[a][b]…`` (``key`` dotted) to ``value``, keeping the real value in ``real[key]``."""
    *path, last = key.split(".")
    node = spec
    for k in path:
        node = node[k]
    if node.get(last) != value:
        real[key] = node.get(last)
        node[last] = value


def cut_model(spec: dict[str, Any], r: dict[str, Any], selected: bool = False) -> None:
    """A model spec with its training budget cut (in place); architecture, schedule and precision stay. A model
    whose checkpoints a row selects among (``selected``: ``checkpoints: all``) keeps two, so that the selection
    and its fresh draw (``score_selected``) run too."""
    real: dict[str, Any] = {}
    train = spec["train"]
    steps = max(int(r["train_steps"]), 2) if selected else int(r["train_steps"])
    _cut(spec, "train.steps", min(int(train["steps"]), steps), real)
    _cut(spec, "train.checkpoint_every", 1 if selected else int(spec["train"]["steps"]), real)
    _cut(spec, "train.log_every", 1, real)
    _cut(spec, "train.batch_size", min(int(train["batch_size"]), int(r["batch_size"])), real)
    if "early_stopping" in train:
        _cut(spec, "train.early_stopping.every", int(spec["train"]["steps"]), real)
        val = min(int(train["early_stopping"]["num_images"]), int(r["val_images"]))
        _cut(spec, "train.early_stopping.num_images", val, real)
    _cut(spec, "resources.gpus", min(1, int(spec["resources"]["gpus"])), real)
    _cut(spec, "resources.nodes", 1, real)
    spec["rehearsal"] = {"real": real}


def cut_experiment(spec: dict[str, Any], r: dict[str, Any]) -> None:
    """An experiment spec with its sampling budget cut (in place); the sampler keeps its real step count."""
    real: dict[str, Any] = {}
    _cut(spec, "num_samples", min(int(spec["num_samples"]), int(r["num_samples"])), real)
    _cut(spec, "batch_size", min(int(spec["batch_size"]), int(spec["num_samples"])), real)  # one batch
    _cut(spec, "gpus", 1, real)
    # the trajectory figure decodes its images at each recorded point: one image, two points
    _cut(spec, "trajectory_images", min(int(spec["trajectory_images"]), 1), real)
    _cut(spec, "trajectory_points", min(int(spec["trajectory_points"]), 2), real)
    steps = int(spec["sampler"]["steps"])
    spec["rehearsal"] = {"real": real, "sampler_steps": min(steps, int(r["sampler_steps"]))}
    spec.pop("published", None)  # the reference's numbers are not shown beside a rehearsal's


def cut_autoencoder(spec: dict[str, Any], r: dict[str, Any]) -> None:
    if spec.get("checkpoint"):
        return  # given weights: nothing is trained
    real: dict[str, Any] = {}
    _cut(spec, "train.steps", min(int(spec["train"]["steps"]), int(r["train_steps"])), real)
    _cut(spec, "train.batch_size", min(int(spec["train"]["batch_size"]), int(r["batch_size"])), real)
    _cut(spec, "scale_images", min(int(spec["scale_images"]), int(r["scale_images"])), real)
    spec["rehearsal"] = {"real": real}  # the real budgets (core.forecast reads them from the real plan)


def cut_sweeps(sweeps: dict[str, Any]) -> None:
    """Each sweep list cut to its largest point (in place): per sampler of an ``nfe`` sweep its most steps (the
    respacing at the real scale), per ``guidance`` sweep its largest scale. Every point has its base's shapes; the
    sweep's tables, figures and the forecast (which prices every real point) still run."""
    for entry in sweeps.get("nfe", []):
        entry["samplers"] = {name: [max(steps)] for name, steps in entry["samplers"].items()}
    for entry in sweeps.get("guidance", []):
        entry["scales"] = [max(entry["scales"])]


def cut_evaluation(ev: dict[str, Any], r: dict[str, Any], available: int | None) -> None:
    """A study's evaluation with the reference images (at most ``available``, the reference split's images when
    known), IS splits, KID subsets and bootstrap cut (in place)."""
    n = min(int(r["reference_images"]), available or int(r["reference_images"]))
    ev["reference_num"] = min(int(ev["reference_num"]) or n, n)
    ev["is_splits"] = min(int(ev["is_splits"]), 2)
    ev["kid_subsets"] = min(int(ev["kid_subsets"]), 10)
    ev["kid_subset_size"] = min(int(ev["kid_subset_size"] or r["num_samples"]), int(r["num_samples"]))
    ev["bootstrap"] = min(int(ev["bootstrap"]), int(r["bootstrap"]))
    ev["fd_infinity"] = False
    ev["precision_recall_k"] = min(int(ev["precision_recall_k"]), int(r["num_samples"]) - 1)


def standin_images(standin: dict[str, Any], split: str) -> int:
    """The images of ``split`` in a stand-in tree (``standin_spec``): 100 ImageNet classes, 5 SYSU categories."""
    spec = standin["spec"]
    if standin["layout"] == "imagenet100":
        return 100 * int(spec["train_per_class" if split == "train" else "val_per_class"])
    return 5 * int(spec["per_class"])  # all of it is `train` (val_fraction 0 as configured) or split from it


def standin_spec(source: str, r: dict[str, Any]) -> dict[str, Any]:
    """What ``core.standin.write_tree`` writes for a dataset of ``source``: its own layout, or for a generic
    ``folder`` dataset the ImageNet-100 tree (``train/`` and ``validation/`` of class folders is one of its forms)."""
    layout = "sysu-shapes" if source == "sysu-shapes" else "imagenet100"
    return {"layout": layout, "spec": {"seed": int(r["standin"]["seed"]), **r["standin"][layout]}}
