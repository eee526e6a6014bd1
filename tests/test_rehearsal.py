"""The rehearsal (config key ``rehearse``, core/rehearsal.py): the full presets at their real shapes with cut budgets,
results apart and labelled, stand-in data and Inception; and its run (slow) against the real presets."""

from __future__ import annotations

import copy
import csv
import glob
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core import costs, forecast, paths, preflight, rehearsal
from core.config import ConfigError, load_schema
from core.plan import Plan
from tests.conftest import ROOT

REHEARSAL = {
    k: v["default"] for k, v in load_schema()["properties"]["rehearsal"]["properties"].items() if "default" in v
}


@pytest.fixture(scope="module")
def plans() -> tuple[Plan, Plan]:
    config = preflight.load_config([], [])
    return Plan(copy.deepcopy(config)), Plan({**copy.deepcopy(config), "rehearse": True})


def test_a_rehearsal_keeps_every_shape_and_cuts_every_budget(plans):
    real, rh = plans
    cut = rh.config["rehearsal"]
    assert rh.root == f"{real.root}/rehearsal"
    assert rh.default_studies(on_cluster=False) == real.default_studies(on_cluster=True) == ["full-a", "full-b"]
    for study in ("full-a", "full-b"):
        assert rh.study(study)["title"].startswith(rehearsal.LABEL)
        assert rh.extractor_kind(study) == "inception-standin" and rh.extractor_tag(study) == "inception-standin"
        for model, spec in real.models[study].items():
            r = rh.model(study, model)
            # what decides a network's shape and numerics stays
            for key in ("net", "backbone", "space", "autoencoder", "diffusion"):
                assert r.get(key) == spec.get(key), (study, model, key)
            assert rh.input_size(study, r) == real.input_size(study, spec)
            assert r["train"]["precision"] == spec["train"]["precision"]
            # budgets are cut, and the real ones are recorded
            if study == "full-b":  # its rows select among checkpoints: two of them, so that the selection runs
                assert r["train"]["steps"] == 2 and r["train"]["checkpoint_every"] == 1
            else:
                assert r["train"]["steps"] == cut["train_steps"] == r["train"]["checkpoint_every"]
            assert r["train"]["batch_size"] == min(spec["train"]["batch_size"], cut["batch_size"])
            assert r["rehearsal"]["real"]["train.steps"] == spec["train"]["steps"]
            assert r["rehearsal"]["real"]["train.batch_size"] == spec["train"]["batch_size"]
            assert r["resources"]["gpus"] == 1 and r["resources"]["nodes"] == 1
            if spec["resources"]["gpus"] > 1:
                assert r["rehearsal"]["real"]["resources.gpus"] == spec["resources"]["gpus"]
        # every row, and each sweep list at its largest point (nfe: the most steps per sampler; guidance: the
        # largest scale); nothing the real study does not have
        assert set(rh.experiments[study]) <= set(real.experiments[study])
        assert {e for e in real.experiments[study] if "sweep" not in real.experiment(study, e)} <= set(
            rh.experiments[study]
        )
        assert (
            "DDPM-CFG.nfe-ddpm-500" in rh.experiments["full-a"]
            and "DDPM-CFG.nfe-ddpm-10" not in rh.experiments["full-a"]
        )
        for exp, e in rh.experiments[study].items():
            spec = real.experiment(study, exp)
            assert e["sampler"] == spec["sampler"] and e["guidance_scale"] == spec["guidance_scale"]
            assert e["rehearsal"]["sampler_steps"] == min(spec["sampler"]["steps"], cut["sampler_steps"])
            assert e["num_samples"] == min(spec["num_samples"], cut["num_samples"])
            assert e["rehearsal"]["real"]["num_samples"] == spec["num_samples"]
            assert rh.eval_steps(study, exp) in (["best"], [cut["train_steps"]], [1, 2], [2])
    assert all(
        rh.selects_checkpoint("full-b", e)
        for e in rh.experiments["full-b"]
        if "sweep" not in rh.experiment("full-b", e)
    )
    for name in ("imagenet100", "sysu-shapes"):
        assert rh.dataset_spec(name)["path"] == f"{rh.root}/standin/{name}"
        assert rh.standin(name)["layout"] == name
        assert real.standin(name) is None
    assert rh.config["datasets"]["imagenet100"]["image_size"] == 128
    assert rh.config["datasets"]["sysu-shapes"]["image_size"] == 64


def test_the_real_plan_is_untouched_by_the_switch(plans):
    real, _ = plans
    assert real.root == "results" and not real.rehearse
    assert real.model("full-a", "unet")["train"]["steps"] == 791800
    assert "rehearsal" not in real.model("full-a", "unet")
    assert real.extractor_kind("full-a") == "inception"


def test_only_a_rehearsal_counts_flops(plans):
    """What switches the FLOP count on (core.costs) is in a rehearsal's specs and options alone: a real plan's
    evaluation options and autoencoder specs are as before (so the switch cannot make real jobs rerun)."""
    real, rh = plans
    keys = {"is_splits", "kid_subsets", "kid_subset_size", "bootstrap", "fd_infinity", "precision_recall_k"}
    for study in ("full-a", "full-b"):
        assert set(real.evaluation_options(study)) == keys | {"batch_size"}
        assert rh.evaluation_options(study)["count_flops"] is True
        for exp in rh.experiments[study]:
            assert rh.selected_spec(study, exp, 0)["rehearsal"] and "rehearsal" not in real.selected_spec(study, exp, 0)
    for name in real.config["autoencoders"]:
        assert "rehearsal" not in real.autoencoder_spec(name) and "rehearsal" in rh.autoencoder_spec(name)


@pytest.fixture(scope="module")
def rehearsed(tmp_path_factory) -> tuple[Plan, Path]:
    """The README's rehearsal command, into a folder of its own (the whole full study: ~15 min on 2 cores)."""
    results = tmp_path_factory.mktemp("rh") / "results"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--profile",
            "profiles/local",
            "--cores",
            "2",
            "--resources",
            "mem_mb=20000",
            "--config",
            "rehearse=True",
            f"results_dir={results}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3000,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    config = preflight.load_config([], [f"results_dir={results}"])
    return Plan(config), results / "rehearsal"


@pytest.mark.slow
def test_every_rehearsal_job_ran_at_the_real_shapes(rehearsed):
    """Each model's parameter count (the real preset's, counted on the meta device), image size and batch size,
    each experiment's sampler and image size, and the evaluation's extractor, from the jobs' own cost records."""
    real, root = rehearsed
    rh = Plan({**preflight.load_config([], [f"results_dir={root.parent}"]), "rehearse": True})
    counts = {"full-a": 100, "full-b": 0}  # ImageNet-100's classes; Study B is unconditional
    for study in ("full-a", "full-b"):
        for model in real.models[study]:
            spec = real.model(study, model)
            rec = costs.read(paths.train_cost(str(root), study, model, 0))
            params = forecast.train_costs(real, study, model, counts[study])[3]
            size = real.input_size(study, spec)
            channels = 3  # RGB pixels, or the f4 autoencoder's 3 latent channels
            assert rec["parameters"] == params, (study, model)
            assert rec["input_shape"] == [channels, size, size], (study, model)
            real_batch = rec["rehearsal"]["real"].get("train.batch_size", rec["batch_size"])
            assert real_batch == spec["train"]["batch_size"], (study, model)
            step = rec["sections"]["step"]
            assert step["flops_per_image_unit"] > 0 and step["seconds_per_image_unit"] > 0
        for exp in rh.experiments[study]:  # every row, curve and the sweep points a rehearsal runs
            e = real.experiment(study, exp)
            files = glob.glob(paths.cost(paths.samples(str(root), study, exp, "r0", "*")))
            assert files, (study, exp)
            rec = costs.read(files[0])
            assert rec["sampler_steps"] == e["sampler"]["steps"], (study, exp)
            assert rec["sampler_steps_run"] == min(e["sampler"]["steps"], REHEARSAL["sampler_steps"])
            model = real.model(study, e["model"])
            size = real.input_size(study, model)
            assert rec["input_shape"][1:] == [size, size]
            assert rec["rehearsal"]["real"].get("batch_size", rec["batch_size"]) == e["batch_size"]
            files = glob.glob(paths.cost(paths.metrics(str(root), study, exp, "r0", "*")))
            ev = costs.read(files[0])
            assert (
                ev["extractor"]["extractor"] == "inception-v3-random-standin" and ev["extractor"]["feature_dim"] == 2048
            )


@pytest.mark.slow
def test_the_rehearsal_is_labelled_and_forecast(rehearsed):
    _, root = rehearsed
    for study in ("full-a", "full-b"):
        md = (root / study / "report" / "table.md").read_text()
        assert md.startswith(f"# {rehearsal.LABEL}: ") and rehearsal.BANNER in md
        assert "FD_standin@" in md and "FID@" not in md  # the stand-in's numbers are never labelled FID
        # the precision the models ran in (on a CPU: fp32), not the configured bf16
        ran = "bf16 autocast + TF32" if torch.cuda.is_available() else "fp32 (a rehearsal on a CPU; configured: bf16"
        assert f"Training precision: {ran}" in md
        with open(root / study / "report" / "table.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert rows and all(r["run"].startswith(rehearsal.LABEL) for r in rows)
    text = (root / "forecast" / "forecast.md").read_text()
    assert text.startswith("# Forecast: full-a, full-b (from the rehearsal")
    assert "## Measured by the rehearsal" in text and "not rehearsed" not in text
    with open(root / "forecast" / "forecast.csv", newline="") as fh:
        jobs = list(csv.DictReader(fh))
    assert {j["rule"] for j in jobs} >= {"train", "sample", "evaluate", "reference_stats", "train_autoencoder"}
    assert all(j["measured_device"] for j in jobs)
    assert not (root.parent / "full-a").exists()  # nothing outside the rehearsal's folder


def test_one_bootstrap_resample_is_refused_when_planned():
    """Found by the rehearsal: a single resample failed every evaluate job after sampling (an interval needs two)."""
    config = preflight.load_config([], [])
    config["studies"]["demo-b"]["evaluation"]["bootstrap"] = 1
    with pytest.raises(ConfigError, match=r"studies\.demo-b\.evaluation\.bootstrap: one resample"):
        Plan(config)
    with pytest.raises(ConfigError, match=r"rehearsal\.bootstrap: one resample"):
        Plan({**preflight.load_config([], []), "rehearse": True, "rehearsal": {"bootstrap": 1}})


def test_a_training_job_writes_what_it_cost(tiny_spec, tiny_dataset, tmp_path):
    """Every training run (a rehearsal's or a real one) writes train.cost.json: its network's parameters and input
    shape, the measured seconds per image, its peak memory; a rehearsal's (its spec has a ``rehearsal`` entry) also
    the FLOPs of one training image (the meta-device count at its batch) and the activations one image adds."""
    from core.diffusion import GaussianDiffusion
    from core.models import build_model
    from core.stages import train as train_stage

    train_stage.run(tiny_spec, str(tiny_dataset), str(tmp_path / "real"), "cpu")
    real = costs.read(paths.cost(str(tmp_path / "real" / "train")))
    assert real["flops_counted"] is False and real["sections"]["step"]["seconds_per_image_unit"] > 0
    assert real["sections"]["step"]["flops_per_image_unit"] is None
    assert real["sections"]["step"]["activation_bytes_per_image"] is None

    train_stage.run({**tiny_spec, "rehearsal": {"real": {}}}, str(tiny_dataset), str(tmp_path / "run"), "cpu")
    rec = costs.read(paths.cost(str(tmp_path / "run" / "train")))
    assert rec["flops_counted"] is True
    model = build_model(tiny_spec, 8, 3, 5)
    assert rec["parameters"] == sum(p.numel() for p in model.parameters())
    assert rec["input_shape"] == [3, 8, 8] and rec["batch_size"] == tiny_spec["train"]["batch_size"]
    batch = tiny_spec["train"]["batch_size"]
    diffusion = GaussianDiffusion.from_spec(tiny_spec["diffusion"])
    fwd, bwd, _ = costs.meta_counts(
        lambda: build_model(tiny_spec, 8, 3, 5), costs.epsilon_loss(diffusion, batch, 3, 8, 5)
    )
    step = rec["sections"]["step"]
    assert step["flops_per_image_unit"] == pytest.approx((fwd + bwd) / batch)
    assert step["units_timed"] == tiny_spec["train"]["steps"] and step["seconds_per_image_unit"] > 0
    assert 0 < step["activation_bytes_per_image"] < 4 * sum(p.numel() for p in model.parameters()) * batch
    assert rec["peak_rss_bytes"] > 0 and rec["cuda_peak_bytes"] is None and rec["device"] == "cpu"


def test_too_few_images_for_precision_and_recall_are_refused_when_planned(plans):
    """Precision/recall need more generated images than their k neighbours: said at planning, naming both keys, not
    by an evaluate job after sampling; a rehearsal's 2 images use k = 1 (and record it)."""
    config = preflight.load_config([], [])
    config["studies"]["demo-b"]["defaults"]["experiment"]["num_samples"] = 3
    config["studies"]["demo-b"]["defaults"]["experiment"]["batch_size"] = 3
    config["studies"]["demo-b"]["evaluation"]["kid_subset_size"] = 3
    config["studies"]["demo-b"]["evaluation"]["is_splits"] = 3
    with pytest.raises(
        ConfigError, match=r"studies\.demo-b\.experiments\.baseline\.num_samples: 3 images .*precision_recall_k = 3"
    ):
        Plan(config)
    _, rh = plans
    assert rh.evaluation_options("full-a")["precision_recall_k"] == REHEARSAL["num_samples"] - 1 == 1
