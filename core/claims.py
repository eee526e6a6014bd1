"""What differs between the two sides of a claim, and whether they can be compared at all (planning; no torch).

A claim compares experiment a with experiment b. Both are resolved specs (``core.plan``): the experiment's
sampling settings plus its model's. ``spec_differences`` lists every setting that differs, as dotted keys
(``model.net.base_channels``, ``guidance_scale``), leaving out what does not make a result (replicate counts,
resources, labels, display and bookkeeping keys). ``incomparable`` names the evaluation settings that must be
equal for a difference to mean anything: the generated-image count (the reference
set, the feature extractor and its preprocessing are the study's ``evaluation``, shared by all of its rows).
A claim's ``varies`` names the settings it is about; when others differ too it is confounded. ``resolve`` is
what ``core.plan.Plan`` calls: every claim of a study checked, described, and its ``reference`` resolved.
"""

from __future__ import annotations

import copy
from typing import Any

from core.config import METRIC_VALUE_KEY, ConfigError, key_path

#: keys that do not make a result: how often, where and how it is run and shown
IGNORED = {
    "replicates",
    "gpus",
    "published",
    "sweep",
    "trajectory_images",
    "trajectory_points",
    "batch_size",
    "model.replicates",
    "model.resources",
    "model.label",
    "model.train.log_every",
}
#: evaluation settings both sides of a claim must share
MUST_MATCH = ("num_samples",)


def _flatten(d: Any, prefix: str, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if key not in IGNORED:
                _flatten(v, key, out)
    else:
        out[prefix] = d
    return out


def resolved(experiment: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    """An experiment's resolved spec and its model's (under ``model.``), flattened to dotted keys."""
    own = {k: v for k, v in experiment.items() if k != "model"}  # the model's name: its settings stand for it
    return _flatten(own, "", {}) | _flatten({"model": model}, "", {})


def spec_differences(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, a's value, b's value) for every flattened key whose values differ (a missing key reads as None)."""
    return [(k, a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]


def incomparable(differences: list[tuple[str, Any, Any]]) -> list[tuple[str, Any, Any]]:
    """The differences in ``MUST_MATCH`` settings: these make a comparison meaningless."""
    return [d for d in differences if d[0] in MUST_MATCH]


def outside(differences: list[tuple[str, Any, Any]], varies: list[str]) -> list[tuple[str, Any, Any]]:
    """The differences not covered by ``varies`` (a key covers itself and the keys below it)."""
    return [d for d in differences if not any(d[0] == v or d[0].startswith(v + ".") for v in varies)]


def _show(v: Any) -> str:
    return {True: "yes", False: "no", None: "–"}.get(v, str(v)) if isinstance(v, bool) or v is None else str(v)


def describe(differences: list[tuple[str, Any, Any]]) -> list[str]:
    """``model.net.base_channels 8→12``-style text for each difference, from b's value to a's (b is the side the
    claim starts from: the baseline, the unguided row)."""
    return [f"{k} {_show(vb)}→{_show(va)}" for k, va, vb in differences]


def resolve(
    config: dict[str, Any], study: str, experiments: dict[str, Any], models: dict[str, Any]
) -> list[dict[str, Any]]:
    """The study's claims, each checked for comparable sides (``compare_sides``) and its ``reference`` (the same claim
    in another study) resolved to that claim's rows, expectation, margin and published numbers, which the report's
    Findings show beside the claim's verdict. ``experiments`` and ``models`` are the study's resolved specs."""
    s = config["studies"][study]
    claims = copy.deepcopy(s["claims"])
    for i, c in enumerate(claims):
        compare_sides(study, i, c, experiments, models)
        c["correction"] = s["correction"]
        if "reference" not in c:
            continue
        key = key_path(["studies", study, "claims", i, "reference"])
        ref_study, text = c["reference"]["study"], c["reference"]["claim"]
        if ref_study not in config["studies"]:
            raise ConfigError(f"config key {key}.study: study '{ref_study}' is not defined under 'studies'")
        other = config["studies"][ref_study]
        found = [r for r in other["claims"] if r["claim"] == text]
        if not found:
            known = "; ".join(f"'{r['claim']}'" for r in other["claims"]) or "none"
            raise ConfigError(
                f"config key {key}.claim: study '{ref_study}' has no claim '{text}' (its claims: {known})"
            )
        ref = found[0]
        if ref["metric"] != c["metric"]:
            raise ConfigError(
                f"config key {key}: the claim is on {c['metric']}, the referenced claim on {ref['metric']}"
            )
        value_key = METRIC_VALUE_KEY[ref["metric"]]
        published = {}
        for side in ("a", "b"):
            pub = other["experiments"][ref[side]].get("published") or {}
            if value_key not in pub:
                raise ConfigError(
                    f"config key {key}: experiment '{ref[side]}' of study '{ref_study}' has no published "
                    f"{value_key} (studies.{ref_study}.experiments.{ref[side]}.published.{value_key})"
                )
            published[side] = pub[value_key]
        c["reference"] = {
            "study": ref_study,
            "claim": text,
            **{k: ref[k] for k in ("a", "b", "expect", "margin") if k in ref},
            "published": published,
        }
    return claims


def compare_sides(study: str, i: int, c: dict[str, Any], experiments: dict[str, Any], models: dict[str, Any]) -> None:
    """Claim ``i`` of ``study``: its two sides share their evaluation settings (``MUST_MATCH``), else a ``ConfigError``
    names both rows and the field; ``c`` gets ``differs`` (what differs, b→a) and ``confounded`` (more differs
    than the settings its ``varies`` names)."""
    side = {x: resolved(experiments[c[x]], models[experiments[c[x]]["model"]]) for x in ("a", "b")}
    diffs = spec_differences(side["a"], side["b"])
    for key, va, vb in incomparable(diffs):
        where = key_path(["studies", study, "experiments"])
        raise ConfigError(
            f"config key {key_path(['studies', study, 'claims', i])}: its rows differ in {key} "
            f"({where}.{c['a']}.{key} = {va}, {where}.{c['b']}.{key} = {vb}); a claim compares rows evaluated "
            f"alike: give both the same {key}"
        )
    c["differs"] = describe(diffs)
    c["confounded"] = describe(outside(diffs, c["varies"])) if "varies" in c else []
