"""``python -m core.preflight``: the inputs a full run needs, checked, and the disk it will take — sized from the
real budgets, and the sizes checked against files the stages really write."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from core import preflight
from core.plan import Plan
from core.stages import train as train_stage
from tests.conftest import ROOT


@pytest.mark.slow
def test_the_full_study_without_its_inputs_names_each_with_its_config_key():
    out = subprocess.run([sys.executable, "-m", "core.preflight"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 1, out.stderr
    assert "# Pre-flight: full-a, full-b" in out.stdout
    for key in ("datasets.imagenet100.path", "datasets.sysu-shapes.path", "metrics.inception_weights"):
        assert "MISSING" in out.stdout and f"`{key}` |" in out.stdout
    plan = Plan(preflight.load_config([], []))
    for study in ("full-a", "full-b"):
        for model in plan.models[study]:
            assert f"| {study} model {model}:" in out.stdout


def test_parameter_counts_are_the_networks_own():
    plan = Plan(preflight.load_config([], []))
    assert preflight.parameters(plan, "full-a", "unet", 0) == 74_051_331  # the reference's "about 74M"
    assert preflight.parameters(plan, "full-a", "dit-12", 100) == 129_606_156
    from core.models import build_model

    spec = plan.model("demo-a", "unet-cfg")
    built = build_model(spec, plan.input_size("demo-a", spec), 3, 5)
    assert preflight.parameters(plan, "demo-a", "unet-cfg", 5) == sum(p.numel() for p in built.parameters())


def test_a_stand_in_data_tree_is_counted_and_a_wrong_weights_file_is_named(tmp_path):
    root = tmp_path / "in100"
    for split, n in (("train", 3), ("validation", 2)):
        for c in ("n01", "n02"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                (root / split / c / f"{i}.JPEG").write_bytes(b"x")
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"not the weights")
    cfg = preflight.load_config([], [f"datasets={{imagenet100: {{path: {root}}}}}", "studies_to_run=[full-a]"])
    cfg["metrics"] = {**cfg.get("metrics", {}), "inception_weights": str(weights)}
    plan = Plan(cfg)
    needs, counts = preflight.inputs(plan, ["full-a"])
    data = next(n for n in needs if n.key == "datasets.imagenet100.path")
    assert data.problem == "" and "2 classes" in data.what
    assert counts["imagenet100"].splits == {"train": 6, "val": 4} and counts["imagenet100"].classes == 2
    inception = next(n for n in needs if n.key == "metrics.inception_weights")
    assert "SHA-256 differs" in inception.problem
    rows, _ = preflight.disk(plan, ["full-a"], counts)
    dataset = next(r for r in rows if r.what.startswith("dataset imagenet100"))
    assert dataset.total == 10 * 128 * 128 * 3


def test_predicted_checkpoint_size_matches_a_checkpoint_the_stage_writes(tiny_spec, tiny_dataset, tmp_path):
    spec = {**tiny_spec, "net": {**tiny_spec["net"], "base_channels": 32, "norm_groups": 8}}
    spec["train"] = {**spec["train"], "steps": 4, "checkpoint_every": 4}
    train_stage.run(spec, str(tiny_dataset), str(tmp_path / "m"), "cpu")
    params = sum(
        v.numel() for v in torch.load(tmp_path / "m" / "ckpt" / "step0000004.pt", weights_only=False)["model"].values()
    )
    predicted = params * 4 * preflight.CKPT_COPIES
    actual = (tmp_path / "m" / "ckpt" / "step0000004.pt").stat().st_size
    assert predicted == pytest.approx(actual, rel=0.05), (predicted, actual)


def test_config_overrides_are_read_as_snakemake_reads_them(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("results_dir: /elsewhere\nthreads: 3\n")
    cfg = preflight.load_config([str(extra)], ["threads=5", "studies_to_run=[full-b]"])
    assert cfg["results_dir"] == "/elsewhere" and cfg["threads"] == 5 and cfg["studies_to_run"] == ["full-b"]
    assert "demo-a" in cfg["studies"]  # merged over config.yaml, not instead of it
    nested = preflight.load_config([], ["datasets={imagenet100: {path: /d/in100}}"])
    base = preflight.load_config([], [])["datasets"]
    assert nested["datasets"] == {**base, "imagenet100": {**base["imagenet100"], "path": "/d/in100"}}
    with pytest.raises(preflight.ConfigError, match="KEY=VALUE"):
        preflight.load_config([], ["threads"])
