"""What differs between the two sides of a claim, and whether they can be compared at all (planning; no torch).

A claim compares experiment a with experiment b. Both are resolved specs (``core.plan``): the experiment's
sampling settings plus its model's. ``spec_differences`` lists every setting that differs, as dotted keys
(``model.net.base_channels``, ``guidance_scale``), leaving out what does not make a result (replicate counts,
resources, labels, display and bookkeeping keys). ``incomparable`` names the evaluation settings that must be
equal for a difference to mean anything: the generated-image count (the reference
set, the feature extractor and its preprocessing are the study's ``evaluation``, shared by all of its rows).
A claim's ``varies`` names the settings it is about; when others differ too it is confounded.
"""

from __future__ import annotations

from typing import Any

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
