"""Sweeps (``studies.<study>.sweeps``): each point becomes an experiment of its own, named by ``sweep_name``, made
from its base row with one setting changed — the sampler and its steps (``nfe``), the guidance scale
(``guidance``), or every checkpoint (``checkpoints``). ``core.plan.Plan`` expands them before resolving the study's
experiments. Free of heavy imports (planning imports it)."""

from __future__ import annotations

import copy
import re
from typing import Any

from core.config import (
    EXPERIMENT_BOOKKEEPING,
    ConfigError,
    defs_ref,
    fill,
    key_path,
    load_schema,
    merge_experiment,
    name_rule,
)


def _sweep_sampler(base: dict[str, Any], name: str, steps: int) -> dict[str, Any]:
    """A sweep point's sampler: DDPM and DDIM keep the base row's spacing (and its η or variance when the base is
    the same sampler); DPM-Solver++(2M) takes its own defaults (trailing spacing)."""
    sampler: dict[str, Any] = {"name": name, "steps": steps}
    if "clip_denoised" in base:
        sampler["clip_denoised"] = base["clip_denoised"]
    if name in ("ddpm", "ddim") and "spacing" in base:
        sampler["spacing"] = base["spacing"]
    if name == base.get("name"):
        sampler.update({k: v for k, v in base.items() if k in ("eta", "variance")})
    return sampler


def sweep_name(kind: str, base: str, **point: Any) -> str:
    """``<base>.nfe-<sampler>-<steps>``, ``<base>.w<scale>`` or ``<base>.ckpts``."""
    if kind == "nfe":
        return f"{base}.nfe-{point['sampler']}-{point['steps']}"
    if kind == "guidance":
        return f"{base}.w{point['scale']:g}"
    return f"{base}.ckpts"


def expand_sweeps(config: dict[str, Any], study: str) -> None:
    """Add the experiments of ``studies.<study>.sweeps`` to the study's experiments (idempotent).

    A point whose sampling settings equal its base experiment's is not repeated: the base stands for it in the
    sweep. A base evaluated at every checkpoint is swept at its last one.
    """
    s = config["studies"][study]
    pattern = re.compile(load_schema()["$defs"]["name"]["pattern"])
    for kind, entries in s["sweeps"].items():
        for i, entry in enumerate(entries):
            where = key_path(["studies", study, "sweeps", kind, i, "base"])
            base_name = entry["base"]
            if base_name not in s["experiments"] or "sweep" in s["experiments"][base_name]:
                raise ConfigError(f"config key {where}: '{base_name}' is not one of the study's experiments")
            base = merge_experiment(s["defaults"].get("experiment", {}), s["experiments"][base_name])
            base_sampler = base.get("sampler", {"name": "ddim"})
            points: dict[str, dict[str, Any]] = {}
            if kind == "nfe":
                for sampler, steps_list in entry["samplers"].items():
                    for steps in steps_list:
                        name = sweep_name(kind, base_name, sampler=sampler, steps=steps)
                        points[name] = {"sampler": _sweep_sampler(base_sampler, sampler, steps)}
            elif kind == "guidance":
                for w in entry["scales"]:
                    points[sweep_name(kind, base_name, scale=w)] = {"guidance_scale": float(w)}
            else:
                change = {k: entry[k] for k in ("num_samples", "batch_size", "sampler") if k in entry}
                points[sweep_name(kind, base_name)] = {**change, "checkpoints": "all"}
            for name, change in points.items():
                if not pattern.match(name):
                    raise ConfigError(
                        f"config key {where}: the sweep point name '{name}' is not allowed: {name_rule()}"
                    )
                point = {
                    **copy.deepcopy(s["experiments"][base_name]),
                    **change,
                    "sweep": {"kind": kind, "base": base_name},
                }
                point.pop("published", None)
                if kind != "checkpoints" and base.get("checkpoints") == "all":
                    point["checkpoints"] = "final"
                merged = merge_experiment(s["defaults"].get("experiment", {}), point)
                if kind == "checkpoints" or _sampling_settings(merged) != _sampling_settings(base):
                    s["experiments"].setdefault(name, point)


def _sampling_settings(exp: dict[str, Any]) -> dict[str, Any]:
    """What makes an experiment's samples, completed with the defaults: all but its bookkeeping keys."""
    out = fill(
        {k: v for k, v in exp.items() if k not in (*EXPERIMENT_BOOKKEEPING, "checkpoints")}, defs_ref("experiment")
    )
    out["sampler"] = fill(out["sampler"], defs_ref(f"sampler_{out['sampler']['name']}"))  # as complete_sampler
    out["guidance_scale"] = float(out["guidance_scale"])
    return out


def sweep_experiments(plan: Any, study: str, kind: str | None = None) -> list[str]:
    """The experiments of ``study`` made by a sweep (of ``kind``), in config order; ``plan`` is a ``core.plan.Plan``
    (untyped here: it imports this module)."""
    exps = plan.config["studies"][study]["experiments"]
    return [e for e, x in exps.items() if "sweep" in x and (kind is None or x["sweep"]["kind"] == kind)]
