"""The workflow's configuration: the schema (``config.schema.yaml``, the one source of defaults), validation that
names the key to fix, completion of entries with their defaults, and duplicate-key detection. ``core.plan.Plan``
builds on it.

Free of heavy imports (planning imports it; jsonschema is imported where a config is validated).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

from core.nets import zoo

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")
# Keys of a model or experiment that say how it runs or is shown, not what it is: left out of the stage's spec, so
# that changing them neither restarts training nor redraws samples.
MODEL_BOOKKEEPING = ("resources", "replicates", "label")
EXPERIMENT_BOOKKEEPING = ("gpus", "replicates", "published", "sweep")
# A claim's metric (`claims[].metric`) → the key of its value in a metrics file and in an experiment's `published`.
METRIC_VALUE_KEY = {"fid": "fid", "is": "is_mean"}


class ConfigError(ValueError):
    """A config problem, with the key path that needs fixing."""


# libyaml's parser where PyYAML has it (the same documents, ~10× faster: `python -m core.status` parses the
# schema and config.yaml on every call)
SAFE_LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def load_schema() -> dict[str, Any]:
    return yaml.load(SCHEMA_PATH.read_text(), Loader=SAFE_LOADER)


def name_rule() -> str:
    """The rule every path-forming name follows, in words and as the pattern."""
    d = load_schema()["$defs"]["name"]
    return f"{d['description'].strip()} (pattern {d['pattern']})"


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def merge_experiment(defaults: dict[str, Any], experiment: dict[str, Any]) -> dict[str, Any]:
    """An experiment over its study's ``defaults.experiment``; a sampler naming another algorithm than the
    defaults' replaces the defaults' sampler instead of merging with it (their options differ)."""
    merged = deep_merge(defaults, experiment)
    own, base = experiment.get("sampler", {}), defaults.get("sampler", {})
    if "name" in own and own["name"] != base.get("name", own["name"]):
        merged["sampler"] = copy.deepcopy(own)
    return merged


def key_path(path: Any) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _error_line(e: Any, where: list[str]) -> str:
    key = key_path([*where, *e.absolute_path])
    if "propertyNames" in e.schema_path:
        return f"config key {key}: the name {e.instance!r} is not allowed: {name_rule()}"
    if e.validator == "additionalProperties":
        return f"config key {key}: {e.message} (unknown or mistyped key)"
    return f"config key {key}: {e.message}"


def check(instance: Any, schema: dict[str, Any], where: list[str]) -> None:
    """Validate ``instance`` against ``schema`` (a schema or ``{"$ref": …}`` with the root's ``$defs``)."""
    import jsonschema  # here: the stages that only read a spec run where jsonschema is absent (a GPU node)

    validator = jsonschema.Draft202012Validator({**schema, "$defs": load_schema()["$defs"]})
    errors = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        # the most specific problem of each key first: anyOf/allOf wrappers repeat their inner errors
        lines = list(dict.fromkeys(_error_line(jsonschema.exceptions.best_match([e]), where) for e in errors))
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines[:10]))


def resolve_ref(schema: dict[str, Any]) -> dict[str, Any]:
    defs = load_schema()["$defs"]
    while "$ref" in schema:
        extra = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**defs[schema["$ref"].split("/")[-1]], **extra}  # a reference's own default wins
    return schema


def fill(instance: Any, schema: dict[str, Any]) -> Any:
    """``instance`` with the schema's ``default`` values inserted where keys are absent, recursively (following
    ``$ref``, ``additionalProperties`` and array ``items``; not into ``allOf``/``if`` branches: those are completed
    explicitly)."""
    schema = resolve_ref(schema)
    if isinstance(instance, list) and isinstance(schema.get("items"), dict):
        return [fill(item, schema["items"]) for item in instance]
    if not isinstance(instance, dict):
        return instance
    out = dict(instance)
    props = schema.get("properties", {})
    for name, sub in props.items():
        sub = resolve_ref(sub)
        if name not in out and "default" in sub:
            out[name] = copy.deepcopy(sub["default"])
        if name in out:
            out[name] = fill(out[name], sub)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for name in out:
            if name not in props:
                out[name] = fill(out[name], extra)
    return out


def defs_ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/$defs/{name}"}


def complete_model(spec: dict[str, Any], input_size: int, where: list[str] | None = None) -> dict[str, Any]:
    """A model entry (already merged with its study's defaults) completed from the schema: the model's defaults,
    its backbone's net defaults (``$defs/net_<backbone>``; a UNet's null channel_mult and attention resolutions by
    ``input_size``, the side of what the model sees), then checked, sizes included. ``where`` names it in errors.
    Tests and benchmarks complete their specs here too."""
    where = where or ["model"]
    spec = fill(spec, defs_ref("model"))
    net_schema = load_schema()["$defs"].get(f"net_{spec.get('backbone')}", {})
    spec["net"] = fill(spec.get("net", {}), net_schema)
    spec["resources"] = fill(spec.get("resources", {}), resolve_ref(defs_ref("model"))["properties"]["resources"])
    spec.setdefault("label", net_schema.get("title", spec.get("backbone")))
    check(spec, defs_ref("model_complete"), where)
    problems = zoo.PLAN_NET[spec["backbone"]](spec["net"], input_size)
    if problems:
        key, what = problems[0]
        raise ConfigError(
            f"config key {key_path([*where, 'net', key])}: {what} (input {input_size}×{input_size}; check the study's "
            "defaults.model.net too)"
        )
    d = spec["diffusion"]
    if d["schedule"] == "linear" and not d["beta_start"] < d["beta_end"]:
        raise ConfigError(
            f"config key {key_path([*where, 'diffusion', 'beta_end'])}: {d['beta_end']} must exceed beta_start "
            f"{d['beta_start']} (β grows along the linear schedule)"
        )
    if d["schedule"] == "sigmoid" and not d["start"] < d["end"]:
        raise ConfigError(f"config key {key_path([*where, 'diffusion', 'end'])}: must exceed diffusion.start")
    world = max(1, spec["resources"]["gpus"]) * spec["resources"]["nodes"]
    if spec["train"]["batch_size"] % world:
        raise ConfigError(
            f"config key {key_path([*where, 'train', 'batch_size'])}: {spec['train']['batch_size']} (the global "
            f"batch) is not divisible by the {world} data-parallel processes (resources.gpus × resources.nodes)"
        )
    return spec


def complete_sampler(sampler: dict[str, Any], where: list[str] | None = None) -> dict[str, Any]:
    """A sampler completed from ``$defs/sampler_<name>`` (its options' defaults); an option it does not use is an
    error naming the key."""
    where = where or ["sampler"]
    check(sampler, defs_ref("sampler"), where)
    if "name" not in sampler:
        raise ConfigError(f"config key {key_path(where)}: 'name' is required")
    schema = defs_ref(f"sampler_{sampler['name']}")
    check(sampler, schema, where)
    return fill(sampler, schema)


def precision_of(train: dict[str, Any]) -> str:
    """How a model's training step computed, in words for files and report footers: ``bf16 autocast + TF32``,
    ``bf16 autocast``, ``fp32 + TF32`` or ``fp32`` (TF32 acts on CUDA only; weights and metrics stay fp32)."""
    base = "bf16 autocast" if train.get("precision") == "bf16" else "fp32"
    return base + (" + TF32" if train.get("tf32") else "")


def sampler_spec(name: str, steps: int | None = None, **options: Any) -> dict[str, Any]:
    """A complete sampler spec: ``options`` (and ``steps``) over the sampler's defaults (tests, benchmarks)."""
    return complete_sampler({"name": name, **({"steps": steps} if steps is not None else {}), **options})


# ---- duplicate keys -------------------------------------------------------------------------------------------


class _StrictLoader(SAFE_LOADER):  # libyaml's parser where installed: the config is read at every planning
    """A YAML loader that refuses a mapping key given twice (YAML's last-one-wins would drop the first silently)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:  # before merge keys (<<) are expanded: overriding a merged key is allowed
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(
                f"{key_node.start_mark.name}, line {key_node.start_mark.line + 1}: the key {key!r} is given twice "
                f"in the same mapping (first on line {seen[key] + 1}); YAML would keep only the last one"
            )
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def check_duplicate_keys(files: list[str | Path]) -> None:
    """Raise ConfigError naming the file, line and key of the first key given twice in a mapping of any file."""
    for f in files:
        with open(f) as fh:
            yaml.load(fh, Loader=_StrictLoader)
