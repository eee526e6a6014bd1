"""The resolved plan of every study: ``Plan(config)`` validates a config (``core.config``: the schema, its defaults),
expands sweeps, merges each study's ``defaults`` under its models and experiments, completes and cross-checks them,
and answers what the rules and stages need — the specs passed to ``python -m core.stages.<stage> --spec``, the
replicates, the checkpoints sampled, the extractor, what the data must hold. Every problem is a ``ConfigError``
naming the key to fix (``studies.demo-a.models.unet.train.lr``) before any job runs. Free of heavy imports
(planning imports it).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from core import claims as claim_specs
from core import paths, rehearsal, requirements, selection, tboard
from core.config import (
    EXPERIMENT_BOOKKEEPING,
    MODEL_BOOKKEEPING,
    ConfigError,
    check,
    complete_model,
    complete_sampler,
    deep_merge,
    defs_ref,
    fill,
    key_path,
    load_schema,
    merge_experiment,
)
from core.paths import checkpoint_steps
from core.sweeps import expand_sweeps


def _fill_top_level(config: dict[str, Any]) -> dict[str, Any]:
    """The config with its defaults filled, except inside a study's models, experiments and defaults (completed
    after the merge: a default filled before it would override the study's defaults) and per dataset source."""
    held = {
        s: {k: study[k] for k in ("models", "experiments", "defaults") if k in study}
        for s, study in config["studies"].items()
    }
    bare = {
        **config,
        "studies": {s: {k: v for k, v in st.items() if k not in held[s]} for s, st in config["studies"].items()},
    }
    bare["datasets"] = {}
    out = fill(bare, load_schema())
    for s, parts in held.items():
        out["studies"][s].update(copy.deepcopy(parts))
        out["studies"][s].setdefault("defaults", {})
    out["datasets"] = {
        name: fill(ds, defs_ref("dataset_shapes" if ds["source"] == "shapes" else "dataset_folder"))
        for name, ds in config["datasets"].items()
    }
    return out


class Plan:
    """A validated config, resolved: every study's models and experiments as complete specs."""

    def __init__(self, config: dict[str, Any]) -> None:
        check(config, load_schema(), [])
        self.raw_config = copy.deepcopy(dict(config))  # as given: what core.forecast prices a rehearsal's run at
        self.config = config
        filled = _fill_top_level(config)
        config.clear()
        config.update(filled)  # Snakemake's `config` object is shared: fill it in place
        self.root: str = config["results_dir"]
        self.models: dict[str, dict[str, dict[str, Any]]] = {}
        self.experiments: dict[str, dict[str, dict[str, Any]]] = {}
        for name in [*(config["studies_to_run"] or []), *config["default_studies"]["local"]]:
            self._known_study(name, "studies_to_run" if name in (config["studies_to_run"] or []) else "default_studies")
        for name in config["default_studies"]["cluster"]:
            self._known_study(name, "default_studies.cluster")
        self._check_datasets()
        if config["tensorboard"] and not tboard.available():
            raise ConfigError(
                f"config key tensorboard: TensorBoard curves need the tensorboard package: {tboard.INSTALL}"
            )
        if config["metrics"]["inception_weights"] and not Path(config["metrics"]["inception_weights"]).is_file():
            raise ConfigError(_missing_inception(config["metrics"]["inception_weights"]))
        if config["rehearse"]:  # a rehearsal runs one point of each sweep list (core.rehearsal)
            for study in config["studies"].values():
                rehearsal.cut_sweeps(study.get("sweeps") or {})
        for study in config["studies"]:
            self._resolve_study(study)
        self.claims = {
            study: claim_specs.resolve(config, study, self.experiments[study], self.models[study])
            for study in config["studies"]
        }
        self.standins: dict[str, dict[str, Any]] = {}
        if config["rehearse"]:
            self._rehearse()
        for name, ds in config["datasets"].items():
            if ds["source"] == "shapes":  # the built-in data's split sizes are known now: check them now
                from core import folders

                try:
                    folders.check_requirements(ds["splits"], requirements.of_dataset(self, name), name)
                except ValueError as err:
                    raise ConfigError(str(err)) from None

    # -- checks and resolution

    def _rehearse(self) -> None:
        """Overlay the rehearsal on the resolved plan (``core.rehearsal``): its own root, cut budgets, stand-in data
        for image-folder datasets, the stand-in Inception (``extractor_kind``)."""
        r = self.config["rehearsal"]
        if r["bootstrap"] == 1:
            raise ConfigError("config key rehearsal.bootstrap: one resample gives no interval; set 0 or at least 2")
        self.root = rehearsal.root(self.config["results_dir"])
        for name, ds in self.config["datasets"].items():
            if ds["source"] in rehearsal.FOLDER_SOURCES:
                self.standins[name] = rehearsal.standin_spec(ds["source"], r)
                ds["path"] = paths.standin(self.root, name)
        for study, s in self.config["studies"].items():
            s["title"] = f"{rehearsal.LABEL}: {s['title']}"
            ds, split = self.config["datasets"][s["dataset"]], s["evaluation"]["reference_split"]
            if ds["source"] == "shapes":
                available = int(ds["splits"].get(split, 0))
            else:
                available = rehearsal.standin_images(self.standins[s["dataset"]], split)
            rehearsal.cut_evaluation(s["evaluation"], r, available)
            selected = {e["model"] for e in self.experiments[study].values() if e["checkpoints"] == "all"}
            for model, spec in self.models[study].items():
                rehearsal.cut_model(spec, r, model in selected and "early_stopping" not in spec["train"])
            for spec in self.experiments[study].values():
                rehearsal.cut_experiment(spec, r)
        for ae in self.config["autoencoders"].values():
            rehearsal.cut_autoencoder(ae, r)

    @property
    def rehearse(self) -> bool:
        return bool(self.config["rehearse"])

    def standin(self, dataset: str) -> dict[str, Any] | None:
        """The stand-in tree a rehearsal writes for ``dataset`` (``core.standin``), or None (real data, shapes)."""
        return self.standins.get(dataset)

    def _known_study(self, name: str, key: str) -> None:
        if name not in self.config["studies"]:
            raise ConfigError(f"config key {key}: study '{name}' is not defined under 'studies'")

    def _check_datasets(self) -> None:
        for name, ae in self.config["autoencoders"].items():
            if ae["dataset"] not in self.config["datasets"]:
                raise ConfigError(f"config key autoencoders.{name}.dataset: dataset '{ae['dataset']}' is not defined")
            factor = 2 ** (len(ae["net"]["ch_mult"]) - 1)
            size = self.config["datasets"][ae["dataset"]]["image_size"]
            if size % factor:
                raise ConfigError(
                    f"config key autoencoders.{name}.net.ch_mult: downsampling factor {factor} does not divide the "
                    f"image size {size} of dataset '{ae['dataset']}'"
                )

    def _resolve_study(self, study: str) -> None:
        s = self.config["studies"][study]
        where = ["studies", study]
        if s["dataset"] not in self.config["datasets"]:
            raise ConfigError(
                f"config key {key_path([*where, 'dataset'])}: dataset '{s['dataset']}' is not defined under 'datasets'"
            )
        self.models[study] = {m: self._resolve_model(study, m) for m in s["models"]}
        expand_sweeps(self.config, study)
        self.experiments[study] = {e: self._resolve_experiment(study, e) for e in s["experiments"]}
        for i, c in enumerate(s["claims"]):
            for side in ("a", "b"):
                if c[side] not in s["experiments"]:
                    raise ConfigError(
                        f"config key {key_path([*where, 'claims', i, side])}: '{c[side]}' is not one of the study's "
                        "experiments"
                    )
        ev = s["evaluation"]
        for name, e in self.experiments[study].items():
            if int(e["num_samples"]) <= int(ev["precision_recall_k"]):
                raise ConfigError(
                    f"config key {key_path([*where, 'experiments', name, 'num_samples'])}: {e['num_samples']} images "
                    f"cannot give precision and recall with {key_path([*where, 'evaluation', 'precision_recall_k'])}"
                    f" = {ev['precision_recall_k']} neighbours: draw more, or lower it"
                )
        if ev["bootstrap"] == 1:
            raise ConfigError(
                f"config key {key_path([*where, 'evaluation', 'bootstrap'])}: one resample gives no interval; set 0 "
                "(no bootstrap) or at least 2"
            )
        if ev["reference_num"] and ev["kid_subset_size"] and ev["kid_subset_size"] > ev["reference_num"]:
            raise ConfigError(
                f"config key {key_path([*where, 'evaluation', 'kid_subset_size'])}: {ev['kid_subset_size']} exceeds "
                f"the {ev['reference_num']} reference images (evaluation.reference_num)"
            )

    def input_size(self, study: str, spec: dict[str, Any]) -> int:
        """The side of what a model sees: the dataset's images, or its autoencoder's latents."""
        size = self.config["datasets"][self.config["studies"][study]["dataset"]]["image_size"]
        if spec.get("space") == "latent" and spec.get("autoencoder") in self.config["autoencoders"]:
            size //= 2 ** (len(self.config["autoencoders"][spec["autoencoder"]]["net"]["ch_mult"]) - 1)
        return size

    def _resolve_model(self, study: str, model: str) -> dict[str, Any]:
        s = self.config["studies"][study]
        where = ["studies", study, "models", model]
        merged = deep_merge(s["defaults"].get("model", {}), s["models"][model])
        merged.setdefault("replicates", s["replicates"])
        self._check_space(study, model, fill(merged, defs_ref("model")))  # first: it decides the input size
        return complete_model(merged, self.input_size(study, merged), where)

    def _check_space(self, study: str, model: str, spec: dict[str, Any]) -> None:
        """A latent model names an autoencoder trained on the study's dataset; a pixel model names none."""
        where = ["studies", study, "models", model]
        name = spec.get("autoencoder")
        if spec["space"] == "pixel":
            if name is not None:
                raise ConfigError(
                    f"config key {key_path([*where, 'autoencoder'])}: only latent models (space: latent) use one"
                )
            return
        if name is None:
            raise ConfigError(f"config key {key_path([*where, 'autoencoder'])}: a latent model needs an autoencoder")
        if name not in self.config["autoencoders"]:
            raise ConfigError(
                f"config key {key_path([*where, 'autoencoder'])}: autoencoder '{name}' is not defined under "
                "'autoencoders'"
            )
        dataset = self.config["studies"][study]["dataset"]
        if self.config["autoencoders"][name]["dataset"] != dataset:
            raise ConfigError(
                f"config key autoencoders.{name}.dataset: '{self.config['autoencoders'][name]['dataset']}' differs "
                f"from the dataset '{dataset}' of study '{study}', whose model '{model}' uses it"
            )

    def _resolve_experiment(self, study: str, experiment: str) -> dict[str, Any]:
        s = self.config["studies"][study]
        where = ["studies", study, "experiments", experiment]
        merged = merge_experiment(s["defaults"].get("experiment", {}), s["experiments"][experiment])
        check(fill(merged, defs_ref("experiment")), defs_ref("experiment_complete"), where)
        if merged["model"] not in s["models"]:
            raise ConfigError(
                f"config key {key_path([*where, 'model'])}: model '{merged['model']}' is not defined under "
                f"{key_path(['studies', study, 'models'])}"
            )
        model = self.models[study][merged["model"]]
        if model["space"] == "latent" and merged["sampler"].get("clip_denoised", False):
            raise ConfigError(
                f"config key {key_path([*where, 'sampler', 'clip_denoised'])}: model '{merged['model']}' is a latent "
                "model; latents are not bounded by ±1 and clipping them truncates the distribution (the "
                "reference study's bug). Remove the key or set it to false"
            )
        spec = fill(merged, defs_ref("experiment"))
        spec["sampler"] = complete_sampler(spec["sampler"], [*where, "sampler"])
        if model["space"] == "latent":  # latents are never clipped to ±1
            spec["sampler"]["clip_denoised"] = False
        spec.setdefault("replicates", model["replicates"])
        if spec["replicates"] > model["replicates"]:
            raise ConfigError(
                f"config key {key_path([*where, 'replicates'])}: {spec['replicates']} sample sets, but model "
                f"'{spec['model']}' has {model['replicates']} trained copies "
                f"({key_path(['studies', study, 'models', spec['model'], 'replicates'])}); replicate k samples model "
                "copy k, so a row's replicates are independent models: raise the model's replicates or lower the "
                "experiment's"
            )
        early, which = "early_stopping" in model["train"], spec["checkpoints"]
        if early and which == "final":
            raise ConfigError(
                f"config key {key_path([*where, 'checkpoints'])}: model '{spec['model']}' stops early "
                "(train.early_stopping), so its last step is known only after training: sample its "
                "best-validation state with checkpoints: best (or every saved one with checkpoints: all)"
            )
        if which == "best" and not early:
            raise ConfigError(
                f"config key {key_path([*where, 'checkpoints'])}: 'best' needs train.early_stopping in model "
                f"'{spec['model']}'"
            )
        if spec["num_samples"] < s["evaluation"]["is_splits"]:
            raise ConfigError(
                f"config key {key_path([*where, 'num_samples'])}: {spec['num_samples']} samples cannot be split into "
                f"evaluation.is_splits = {s['evaluation']['is_splits']} parts of study '{study}'"
            )
        kid = s["evaluation"]["kid_subset_size"]
        if kid is not None and kid > spec["num_samples"]:
            raise ConfigError(
                f"config key {key_path([*where, 'num_samples'])}: {spec['num_samples']} samples are fewer than "
                f"evaluation.kid_subset_size = {kid} of study '{study}'"
            )
        if spec["sampler"]["steps"] > model["diffusion"]["timesteps"]:
            raise ConfigError(
                f"config key {key_path([*where, 'sampler', 'steps'])}: {spec['sampler']['steps']} steps exceed the "
                f"model's diffusion.timesteps = {model['diffusion']['timesteps']}"
            )
        if spec["guidance_scale"] != 1.0 and not model["net"]["class_conditional"]:
            raise ConfigError(
                f"config key {key_path([*where, 'guidance_scale'])}: guidance needs a class-conditional model, "
                f"but model '{spec['model']}' has net.class_conditional false"
            )
        return spec

    # -- what the rules and stages ask

    def studies(self) -> list[str]:
        return list(self.config["studies"])

    def default_studies(self, on_cluster: bool) -> list[str]:
        """The studies ``snakemake`` builds without a target (``studies_to_run``, else ``default_studies``)."""
        chosen = self.config["studies_to_run"]
        if chosen is not None:
            return list(chosen)
        # a rehearsal is of the full study, wherever its jobs run
        return list(self.config["default_studies"]["cluster" if on_cluster or self.rehearse else "local"])

    def study(self, study: str) -> dict[str, Any]:
        return self.config["studies"][study]

    def dataset_of(self, study: str) -> str:
        return self.config["studies"][study]["dataset"]

    def model(self, study: str, model: str) -> dict[str, Any]:
        """A model's complete spec, as written in the config (bookkeeping keys included)."""
        return self.models[study][model]

    def experiment(self, study: str, experiment: str) -> dict[str, Any]:
        return self.experiments[study][experiment]

    def model_replicates(self, study: str, model: str) -> list[int]:
        return list(range(self.models[study][model]["replicates"]))

    def experiment_replicates(self, study: str, experiment: str) -> list[int]:
        return list(range(self.experiments[study][experiment]["replicates"]))

    def model_replicate_of(self, study: str, experiment: str, replicate: int) -> int:
        """The model replicate that experiment replicate ``replicate`` samples: the same k (one-to-one; the plan refuses
        an experiment with more replicates than its model)."""
        if replicate not in self.experiment_replicates(study, experiment):
            raise ValueError(f"experiment '{experiment}' of study '{study}' has no replicate {replicate}")
        return replicate

    def train_spec(self, study: str, model: str, replicate: int) -> dict[str, Any]:
        """What ``core.stages.train`` gets: the model's spec with its replicate's seed (seed + replicate)."""
        spec = {k: v for k, v in copy.deepcopy(self.models[study][model]).items() if k not in MODEL_BOOKKEEPING}
        spec["train"]["seed"] += replicate
        return {"name": model, "study": study, "replicate": replicate, **spec}

    def train_resources(self, study: str, model: str) -> dict[str, int]:
        """GPUs per node and nodes of a model's training job (data-parallel when more than one GPU in all)."""
        return dict(self.models[study][model]["resources"])

    def sample_spec(self, study: str, experiment: str, replicate: int) -> dict[str, Any]:
        """What ``core.stages.sample`` gets: the experiment's sampling settings with its replicate's seed."""
        exp = self.experiments[study][experiment]
        spec = {k: v for k, v in copy.deepcopy(exp).items() if k not in EXPERIMENT_BOOKKEEPING}
        spec["seed"] += replicate
        return {
            "experiment": experiment,
            "study": study,
            "replicate": replicate,
            "model_replicate": self.model_replicate_of(study, experiment, replicate),
            **spec,
        }

    def selects_checkpoint(self, study: str, experiment: str) -> bool:
        """Whether a row picks one of several checkpoints (``checkpoints: all``, not a sweep point, more than one
        step or not known before training), and so is scored on a fresh draw at the pick (core.selection)."""
        exp = self.experiments[study][experiment]
        if exp["checkpoints"] != "all" or "sweep" in exp:
            return False
        return self.steps_known_after_training(study, experiment) or len(self.eval_steps(study, experiment)) > 1

    def selected_spec(self, study: str, experiment: str, replicate: int) -> dict[str, Any]:
        """The fresh draw's sample spec: the replicate's own, with the seed ``selection.fresh_seed`` derives from its
        selection draw's seed (kept as ``selection_seed``)."""
        spec = self.sample_spec(study, experiment, replicate)
        return {**spec, "seed": selection.fresh_seed(spec["seed"]), "selection_seed": spec["seed"]}

    def sample_gpus(self, study: str, experiment: str) -> int:
        return int(self.experiments[study][experiment]["gpus"])

    def eval_steps(self, study: str, experiment: str) -> list[int | str]:
        """The checkpoints an experiment samples: steps, or ``"best"`` (early stopping's best-validation state)."""
        exp = self.experiments[study][experiment]
        if exp["checkpoints"] == "best":
            return ["best"]
        steps = checkpoint_steps(self.models[study][exp["model"]]["train"])
        return list(steps) if exp["checkpoints"] == "all" else steps[-1:]

    def steps_known_after_training(self, study: str, experiment: str) -> bool:
        """Whether the experiment samples every checkpoint of an early-stopping model: which exist is known only
        once training has ended (the workflow re-plans then; ``eval_steps`` lists the steps it may save)."""
        exp = self.experiments[study][experiment]
        return exp["checkpoints"] == "all" and "early_stopping" in self.models[study][exp["model"]]["train"]

    def train_data(self, study: str, model: str) -> str:
        """What a model trains on: the study's dataset, or its autoencoder's latent cache for a latent model."""
        spec = self.models[study][model]
        if spec["space"] == "latent":
            return paths.latents(self.root, spec["autoencoder"])
        return paths.dataset(self.root, self.dataset_of(study))

    def study_autoencoders(self, study: str) -> list[str]:
        """The autoencoders the study's latent models use, in config order."""
        names = [m.get("autoencoder") for m in self.models[study].values()]
        return list(dict.fromkeys(n for n in names if n))

    def autoencoder_spec(self, name: str) -> dict[str, Any]:
        return {"name": name, **self.config["autoencoders"][name]}

    def dataset_spec(self, name: str) -> dict[str, Any]:
        return {"name": name, **self.config["datasets"][name]}

    def extractor_kind(self, study: str) -> str:
        """``inception`` or ``classifier``, resolving ``auto`` by whether Inception weights are configured."""
        kind = self.config["studies"][study]["evaluation"]["extractor"]
        if kind == "auto":
            kind = "inception" if self.config["metrics"]["inception_weights"] else "classifier"
        return "inception-standin" if kind == "inception" and self.rehearse else kind

    def extractor_tag(self, study: str) -> str:
        """The extractor as named in reference-statistics file names, e.g. ``inception-pytorch-fid``."""
        kind = self.extractor_kind(study)
        if kind == "inception":
            return f"inception-{self.config['metrics']['preprocessing']}"
        return kind

    def extractor_spec(self, study: str) -> dict[str, Any]:
        """What ``core.features.load_extractor`` needs for the study's extractor (Inception weights checked)."""
        if self.extractor_kind(study) == "inception":
            m = self.config["metrics"]
            if not m["inception_weights"]:
                raise ConfigError(
                    f"config key studies.{study}.evaluation.extractor: 'inception' needs metrics.inception_weights, "
                    "the path of pt_inception-2015-12-05-6726825d.pth: set it in your config file (metrics: "
                    "{inception_weights: /path/to/it}) or add --config metrics='{inception_weights: /path/to/it}' "
                    "after your target"
                )
            return {
                "kind": "inception",
                "weights": m["inception_weights"],
                "sha256": m["inception_sha256"],
                "preprocessing": m["preprocessing"],
            }
        if self.extractor_kind(study) == "inception-standin":
            return self.extractor_for_tag(self.dataset_of(study), "inception-standin")
        return {"kind": "classifier", "weights": paths.classifier(self.root, self.dataset_of(study))}

    def extractor_for_tag(self, dataset: str, tag: str) -> dict[str, Any]:
        """The extractor spec behind a reference-statistics file name (``classifier`` or ``inception-<mode>``)."""
        if tag == "classifier":
            return {"kind": "classifier", "weights": paths.classifier(self.root, dataset)}
        if tag == "inception-standin":  # random weights from a seed: no file (core.features)
            return {"kind": "inception-standin", "preprocessing": self.config["metrics"]["preprocessing"], "seed": 0}
        m = self.config["metrics"]
        return {
            "kind": "inception",
            "weights": m["inception_weights"],
            "sha256": m["inception_sha256"],
            "preprocessing": tag.removeprefix("inception-"),
        }

    def classifier_spec(self, dataset: str) -> dict[str, Any]:
        """The classifier of a dataset: that of the first study (in config order) evaluated on it."""
        study = next(s for s, st in self.config["studies"].items() if st["dataset"] == dataset)
        return dict(self.config["studies"][study]["evaluation"]["classifier"])

    def reference_file(self, study: str) -> str:
        ev = self.config["studies"][study]["evaluation"]
        return paths.reference(
            self.root, self.dataset_of(study), ev["reference_split"], self.extractor_tag(study), ev["reference_num"]
        )

    def autoencoder_eval_images(self, study: str) -> int:
        """The reference images an autoencoder's reconstructions are scored on (0: all); a rehearsal's
        ``num_samples`` at most."""
        n = int(self.config["studies"][study]["evaluation"]["reference_num"])
        return min(n, int(self.config["rehearsal"]["num_samples"])) if self.rehearse else n

    def evaluation_options(self, study: str) -> dict[str, Any]:
        ev = self.config["studies"][study]["evaluation"]
        keys = ("is_splits", "kid_subsets", "kid_subset_size", "bootstrap", "fd_infinity", "precision_recall_k")
        options = {**{k: ev[k] for k in keys}, "batch_size": self.config["metrics"]["batch_size"]}
        return {**options, "count_flops": True} if self.rehearse else options  # only a rehearsal counts (core.costs)

    def class_conditional_models(self, dataset: str) -> list[str]:
        """Config keys of the class-conditional models trained on ``dataset`` (they need ≥ 2 classes)."""
        return [
            f"studies.{study}.models.{m}.net.class_conditional"
            for study, s in self.config["studies"].items()
            if s["dataset"] == dataset
            for m, spec in self.models[study].items()
            if spec["net"]["class_conditional"]
        ]


def _missing_inception(weights: str) -> str:
    return (
        f"config key metrics.inception_weights: {weights} does not exist. Put the FID Inception weights "
        "pt_inception-2015-12-05-6726825d.pth there (SHA-256 6726825d…, 95,628,359 bytes; the file "
        "pytorch-fid and torch-fidelity download), or set the key to null to use the dataset classifier"
    )
