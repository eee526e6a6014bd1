"""The workflow's configuration: schema validation, cross-checks, and the resolved specs each stage gets.

``validate(config)`` fills schema defaults and raises ``ConfigError`` naming the offending key (e.g.
``studies.demo-a.models.unet.train.lr``) before any job runs. ``model_spec``, ``experiment_spec`` and
friends return the deep-merged, self-contained JSON specs passed to ``python -m core.<stage> --spec``;
paths are built here too so that rules and tests agree on one layout.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")


class ConfigError(ValueError):
    """A config problem, with the key path that needs fixing."""


def load_schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _key(path: Any) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _check(instance: Any, schema: dict[str, Any], where: list[str]) -> None:
    import jsonschema  # here, so that the stages that only read a spec run where jsonschema is absent (a GPU node)

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for e in errors[:10]:
            key = _key([*where, *e.absolute_path])
            if e.validator == "additionalProperties":
                lines.append(f"config key {key}: {e.message} (unknown or mistyped key)")
            else:
                lines.append(f"config key {key}: {e.message}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))


def _fill_defaults(instance: Any, schema: dict[str, Any], root: dict[str, Any]) -> None:
    """Insert ``default`` values of the schema's properties (recursively, following $ref)."""
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].split("/")[-1]]
    if not isinstance(instance, dict):
        return
    for name, sub in schema.get("properties", {}).items():
        if "$ref" in sub:
            sub = root["$defs"][sub["$ref"].split("/")[-1]]
        if name not in instance and "default" in sub:
            instance[name] = copy.deepcopy(sub["default"])
        if name in instance:
            _fill_defaults(instance[name], sub, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for name, value in instance.items():
            if name not in schema.get("properties", {}):
                _fill_defaults(value, extra, root)


def validate(config: dict[str, Any]) -> dict[str, Any]:
    """Check the config against the schema and its cross-references; return it with defaults filled."""
    schema = load_schema()
    _check(config, schema, [])
    _fill_defaults(config, schema, schema)
    defs = {"$defs": schema["$defs"]}
    for name in config["default_studies"]:
        if name not in config["studies"]:
            raise ConfigError(f"config key default_studies: study '{name}' is not defined under 'studies'")
    for study_name, study in config["studies"].items():
        where = ["studies", study_name]
        expand_sweeps(config, study_name)
        if study["dataset"] not in config["datasets"]:
            raise ConfigError(
                f"config key {_key([*where, 'dataset'])}: dataset '{study['dataset']}' is not defined under 'datasets'"
            )
        for model_name in study["models"]:
            spec = _merged_model(config, study_name, model_name)
            _check(spec, {**defs, "$ref": "#/$defs/model_complete"}, [*where, "models", model_name])
            _check_net(study_name, model_name, spec)
            _check_space(config, study_name, model_name, spec)
        for exp_name in study["experiments"]:
            exp = _merged_experiment(config, study_name, exp_name)
            ewhere = [*where, "experiments", exp_name]
            _check(exp, {**defs, "$ref": "#/$defs/experiment_complete"}, ewhere)
            if exp["model"] not in study["models"]:
                raise ConfigError(
                    f"config key {_key([*ewhere, 'model'])}: model '{exp['model']}' is not defined under "
                    f"{_key([*where, 'models'])}"
                )
            model = model_spec(config, study_name, exp["model"])
            early, which = "early_stopping" in model["train"], exp.get("checkpoints", "final")
            if early and which == "final":
                raise ConfigError(
                    f"config key {_key([*ewhere, 'checkpoints'])}: model '{exp['model']}' stops early "
                    "(train.early_stopping), so its last step is known only after training: sample its "
                    "best-validation state with checkpoints: best (or every saved one with checkpoints: all)"
                )
            if which == "best" and not early:
                raise ConfigError(
                    f"config key {_key([*ewhere, 'checkpoints'])}: 'best' needs train.early_stopping in model "
                    f"'{exp['model']}'"
                )
            ev = study["evaluation"]
            # image-folder datasets have no counts before ingestion: core.stages.evaluate checks those at run time
            splits = config["datasets"][study["dataset"]].get("splits", {})
            n_real = ev["reference_num"] or splits.get(ev["reference_split"], exp["num_samples"])
            if exp["num_samples"] < ev["is_splits"] or ev["kid_subset_size"] > min(exp["num_samples"], n_real):
                raise ConfigError(
                    f"config key {_key([*ewhere, 'num_samples'])}: {exp['num_samples']} samples (and {n_real} real "
                    f"images) cannot support evaluation.is_splits = {ev['is_splits']} and "
                    f"evaluation.kid_subset_size = {ev['kid_subset_size']} of study '{study_name}'"
                )
            if exp["sampler"]["steps"] > model["diffusion"]["timesteps"]:
                raise ConfigError(
                    f"config key {_key([*ewhere, 'sampler', 'steps'])}: {exp['sampler']['steps']} steps exceed the "
                    f"model's diffusion.timesteps = {model['diffusion']['timesteps']}"
                )
            if model["space"] == "latent" and exp["sampler"].get("clip_denoised", False):
                raise ConfigError(
                    f"config key {_key([*ewhere, 'sampler', 'clip_denoised'])}: model '{exp['model']}' is a latent "
                    "model; latents are not bounded by ±1 and clipping them truncates the distribution (the "
                    "reference study's bug). Remove the key or set it to false"
                )
            if exp.get("guidance_scale", 1.0) != 1.0 and not model["net"].get("class_conditional", False):
                raise ConfigError(
                    f"config key {_key([*ewhere, 'guidance_scale'])}: guidance needs a class-conditional model, "
                    f"but model '{exp['model']}' has net.class_conditional false"
                )
    for name in config["default_studies"]:  # other studies are checked when a target needs their metrics
        check_inception(config, name)
    return config


def check_inception(config: dict[str, Any], study: str) -> None:
    """A study evaluated with Inception needs ``metrics.inception_weights`` to name an existing file."""
    if extractor_kind(config, study) != "inception":
        return
    weights = config["metrics"].get("inception_weights")
    if not weights:
        raise ConfigError(
            f"config key studies.{study}.evaluation.extractor: 'inception' needs metrics.inception_weights, the path "
            "of pt_inception-2015-12-05-6726825d.pth (e.g. --config metrics='{inception_weights: /path/to/it}')"
        )
    if not Path(weights).is_file():
        raise ConfigError(
            f"config key metrics.inception_weights: {weights} does not exist. Put the FID Inception weights "
            "pt_inception-2015-12-05-6726825d.pth there (SHA-256 6726825d…, 95,628,359 bytes; the file "
            "pytorch-fid and torch-fidelity download), or set the key to null to use the dataset classifier"
        )


def _sweep_sampler(base: dict[str, Any], name: str, steps: int) -> dict[str, Any]:
    """The base experiment's sampler with another algorithm or step count (its spacing kept)."""
    sampler = {k: v for k, v in base.items() if k in ("spacing", "clip_denoised")}
    sampler.update(name=name, steps=steps)
    if name == "ddim":
        sampler["eta"] = base.get("eta", 0.0) if base["name"] == "ddim" else 0.0
    if name == "ddpm" and base["name"] == "ddpm" and "variance" in base:
        sampler["variance"] = base["variance"]
    return sampler


def expand_sweeps(config: dict[str, Any], study: str) -> None:
    """Add the experiments of ``studies.<study>.sweeps`` to the study's experiments (idempotent).

    A point identical to its base experiment is not repeated: the base stands for it in the sweep. A base
    evaluated at every checkpoint is swept at its last one.
    """
    s = config["studies"][study]
    for kind, entries in s.get("sweeps", {}).items():
        for i, entry in enumerate(entries):
            base_name = entry["base"]
            if base_name not in s["experiments"] or "sweep" in s["experiments"][base_name]:
                raise ConfigError(
                    f"config key {_key(['studies', study, 'sweeps', kind, i, 'base'])}: '{base_name}' is not one of "
                    f"the study's experiments"
                )
            base = _merged_experiment(config, study, base_name)
            points: dict[str, dict[str, Any]] = {}
            if kind == "nfe":
                for sampler, steps_list in entry["samplers"].items():
                    for steps in steps_list:
                        points[f"{base_name}.nfe-{sampler}-{steps}"] = {
                            "sampler": _sweep_sampler(base["sampler"], sampler, steps)
                        }
            elif kind == "guidance":
                for w in entry["scales"]:
                    points[f"{base_name}.w{w:g}"] = {"guidance_scale": float(w)}
            else:
                change = {k: entry[k] for k in ("num_samples", "batch_size", "sampler") if k in entry}
                points[f"{base_name}.ckpts"] = {**change, "checkpoints": "all"}
            for name, change in points.items():
                point = {
                    **copy.deepcopy(s["experiments"][base_name]),
                    **change,
                    "sweep": {"kind": kind, "base": base_name},
                }
                point.pop("published", None)
                if kind != "checkpoints" and base.get("checkpoints") == "all":
                    point["checkpoints"] = "final"
                merged = deep_merge(s.get("defaults", {}).get("experiment", {}), point)
                if kind == "checkpoints" or _sampling_settings(merged) != _sampling_settings(base):
                    s["experiments"].setdefault(name, point)


def _sampling_settings(exp: dict[str, Any]) -> dict[str, Any]:
    """What makes an experiment's samples: all but its bookkeeping keys, with the default guidance."""
    out = {k: v for k, v in exp.items() if k not in ("sweep", "published", "checkpoints")}
    defaults = {"spacing": "leading", **({"eta": 0.0} if out["sampler"]["name"] == "ddim" else {})}
    if out["sampler"]["name"] == "ddpm":
        defaults["variance"] = "fixed_small"
    out["sampler"] = {**defaults, **out["sampler"]}  # core.sampling.SamplerSpec's defaults
    out.setdefault("guidance_scale", 1.0)
    out["guidance_scale"] = float(out["guidance_scale"])
    return out


def sweep_experiments(config: dict[str, Any], study: str, kind: str | None = None) -> list[str]:
    """The study's experiments made by a sweep (of ``kind``), in config order."""
    exps = config["studies"][study]["experiments"]
    return [e for e, x in exps.items() if "sweep" in x and (kind is None or x["sweep"]["kind"] == kind)]


UNET_NET_KEYS = {"base_channels", "channel_mult", "num_res_blocks", "attention_resolutions", "dropout", "norm_groups"}
DIT_NET_KEYS = {"config", "patch_size", "hidden_size", "depth", "mlp_ratio"}


def _check_net(study: str, model: str, spec: dict[str, Any]) -> None:
    """A net names only options of its backbone (UNet and DiT share num_heads and class_conditional)."""
    foreign = DIT_NET_KEYS if spec["backbone"] == "unet" else UNET_NET_KEYS
    wrong = sorted(foreign & set(spec["net"]))
    if wrong:
        other = "DiT" if spec["backbone"] == "unet" else "UNet"
        raise ConfigError(
            f"config key {_key(['studies', study, 'models', model, 'net', wrong[0]])}: {wrong} are {other} options, "
            f"but the model's backbone is {spec['backbone']} (check the study's defaults.model.net too)"
        )


def _check_space(config: dict[str, Any], study: str, model: str, spec: dict[str, Any]) -> None:
    """A latent model names an autoencoder trained on the study's dataset; a pixel model names none."""
    where = ["studies", study, "models", model]
    name = spec.get("autoencoder")
    if spec.get("space", "pixel") == "pixel":
        if name is not None:
            raise ConfigError(f"config key {_key([*where, 'autoencoder'])}: only latent models (space: latent) use one")
        return
    if name is None:
        raise ConfigError(f"config key {_key([*where, 'autoencoder'])}: a latent model needs an autoencoder")
    if name not in config.get("autoencoders", {}):
        raise ConfigError(
            f"config key {_key([*where, 'autoencoder'])}: autoencoder '{name}' is not defined under 'autoencoders'"
        )
    ae, dataset = config["autoencoders"][name], config["studies"][study]["dataset"]
    if ae["dataset"] != dataset:
        raise ConfigError(
            f"config key autoencoders.{name}.dataset: '{ae['dataset']}' differs from the dataset '{dataset}' of "
            f"study '{study}', whose model '{model}' uses it"
        )
    if ae["dataset"] not in config["datasets"]:
        raise ConfigError(f"config key autoencoders.{name}.dataset: dataset '{ae['dataset']}' is not defined")
    factor, size = 2 ** (len(ae["net"]["ch_mult"]) - 1), config["datasets"][ae["dataset"]]["image_size"]
    if size % factor:
        raise ConfigError(
            f"config key autoencoders.{name}.net.ch_mult: downsampling factor {factor} does not divide the "
            f"image size {size} of dataset '{ae['dataset']}'"
        )


def _merged_model(config: dict[str, Any], study: str, model: str) -> dict[str, Any]:
    s = config["studies"][study]
    return deep_merge(s.get("defaults", {}).get("model", {}), s["models"][model])


def model_spec(config: dict[str, Any], study: str, model: str) -> dict[str, Any]:
    """The training spec of a model (what ``core.stages.train`` needs), with its name and study."""
    spec = _merged_model(config, study, model)
    spec.setdefault("space", "pixel")
    spec.pop("resources", None)  # where it runs is not what it is: see train_resources
    return {"name": model, "study": study, **spec}


def train_resources(config: dict[str, Any], study: str, model: str) -> dict[str, int]:
    """GPUs per node and nodes of a model's training job (data-parallel when more than one GPU in all)."""
    res = _merged_model(config, study, model).get("resources", {})
    return {"gpus": int(res.get("gpus", 1)), "nodes": int(res.get("nodes", 1))}


def _merged_experiment(config: dict[str, Any], study: str, experiment: str) -> dict[str, Any]:
    s = config["studies"][study]
    return deep_merge(s.get("defaults", {}).get("experiment", {}), s["experiments"][experiment])


def experiment_spec(config: dict[str, Any], study: str, experiment: str) -> dict[str, Any]:
    """The sampling spec of an experiment (what ``core.stages.sample`` needs), with its name."""
    exp = _merged_experiment(config, study, experiment)
    exp.setdefault("guidance_scale", 1.0)
    exp.setdefault("checkpoints", "final")
    exp.pop("gpus", None)  # how many processes draw the samples does not change them: see sample_gpus
    if model_spec(config, study, exp["model"])["space"] == "latent":  # latents are never clipped to ±1
        exp["sampler"] = {**exp["sampler"], "clip_denoised": False}
    return {"experiment": experiment, "study": study, **exp}


def sample_gpus(config: dict[str, Any], study: str, experiment: str) -> int:
    return int(_merged_experiment(config, study, experiment).get("gpus", 1))


def checkpoint_steps(train: dict[str, Any]) -> list[int]:
    """Steps at which a run keeps checkpoints: every ``checkpoint_every`` and the last."""
    every, total = int(train["checkpoint_every"]), int(train["steps"])
    return sorted({*range(every, total + 1, every), total})


def steps_known_after_training(config: dict[str, Any], study: str, experiment: str) -> bool:
    """Whether the experiment samples every checkpoint of an early-stopping model: which exist is known only
    once training has ended (the workflow re-plans then; ``eval_steps`` lists the steps it may save)."""
    exp = experiment_spec(config, study, experiment)
    return exp["checkpoints"] == "all" and "early_stopping" in model_spec(config, study, exp["model"])["train"]


def eval_steps(config: dict[str, Any], study: str, experiment: str) -> list[int | str]:
    """The checkpoints an experiment samples: steps, or ``"best"`` (early stopping's best-validation state)."""
    exp = experiment_spec(config, study, experiment)
    if exp["checkpoints"] == "best":
        return ["best"]
    steps = checkpoint_steps(model_spec(config, study, exp["model"])["train"])
    return list(steps) if exp["checkpoints"] == "all" else steps[-1:]


def extractor_kind(config: dict[str, Any], study: str) -> str:
    """``inception`` or ``classifier``, resolving ``auto`` by whether Inception weights are configured."""
    kind = config["studies"][study]["evaluation"]["extractor"]
    if kind == "auto":
        return "inception" if config["metrics"].get("inception_weights") else "classifier"
    return kind


def extractor_tag(config: dict[str, Any], study: str) -> str:
    """The extractor as named in reference-statistics file names, e.g. ``inception-pytorch-fid``."""
    kind = extractor_kind(config, study)
    return f"inception-{config['metrics']['preprocessing']}" if kind == "inception" else "classifier"


def extractor_spec(config: dict[str, Any], study: str) -> dict[str, Any]:
    """What ``core.features.load_extractor`` needs for the study's extractor."""
    check_inception(config, study)
    if extractor_kind(config, study) == "inception":
        m = config["metrics"]
        return {
            "kind": "inception",
            "weights": m["inception_weights"],
            "sha256": m["inception_sha256"],
            "preprocessing": m["preprocessing"],
        }
    return {"kind": "classifier", "weights": classifier_path(config, config["studies"][study]["dataset"])}


def classifier_spec(config: dict[str, Any], study: str) -> dict[str, Any]:
    return dict(config["studies"][study].get("evaluation", {}).get("classifier", {}))


# ---- paths -------------------------------------------------------------------------------------------


def step_tag(step: int | str) -> str:
    """A checkpoint's file stem: ``step0004000``, or ``best``."""
    return step if isinstance(step, str) else f"step{step:07d}"


def dataset_path(config: dict[str, Any], dataset: str) -> str:
    return f"{config['results_dir']}/data/{dataset}.h5"


def classifier_path(config: dict[str, Any], dataset: str) -> str:
    return f"{config['results_dir']}/extractors/{dataset}-classifier.pt"


def reference_path(config: dict[str, Any], study: str) -> str:
    ev, dataset = config["studies"][study]["evaluation"], config["studies"][study]["dataset"]
    name = f"{ev['reference_split']}-{extractor_tag(config, study)}-n{ev['reference_num']}.npz"
    return f"{config['results_dir']}/refstats/{dataset}/{name}"


def model_dir(config: dict[str, Any], study: str, model: str) -> str:
    return f"{config['results_dir']}/{study}/models/{model}"


def sample_path(config: dict[str, Any], study: str, experiment: str, step: int | str) -> str:
    return f"{config['results_dir']}/{study}/samples/{experiment}/{step_tag(step)}.h5"


def metrics_path(config: dict[str, Any], study: str, experiment: str, step: int | str) -> str:
    return f"{config['results_dir']}/{study}/metrics/{experiment}/{step_tag(step)}.json"


def autoencoder_path(config: dict[str, Any], name: str) -> str:
    return f"{config['results_dir']}/autoencoders/{name}/vae.pt"


def latent_path(config: dict[str, Any], name: str) -> str:
    """The latent cache of an autoencoder's dataset."""
    return f"{config['results_dir']}/latents/{name}.h5"


def train_data_path(config: dict[str, Any], study: str, model: str) -> str:
    """What a model trains on: the study's dataset, or its latent cache for a latent model."""
    spec = model_spec(config, study, model)
    if spec["space"] == "latent":
        return latent_path(config, spec["autoencoder"])
    return dataset_path(config, config["studies"][study]["dataset"])


def study_autoencoders(config: dict[str, Any], study: str) -> list[str]:
    """The autoencoders the study's latent models use, in config order."""
    names = [model_spec(config, study, m).get("autoencoder") for m in config["studies"][study]["models"]]
    return list(dict.fromkeys(n for n in names if n))


def report_dir(config: dict[str, Any], study: str) -> str:
    return f"{config['results_dir']}/{study}/report"
