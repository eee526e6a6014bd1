"""The full-study presets (full-a: ImageNet-100, full-b: SYSU-Shapes) plan the reference's job matrix: a dry run
over stand-in folder trees (empty files: planning lists folders only, it decodes nothing)."""

import re
import subprocess
import sys

import pytest
import yaml

from core.plan import Plan
from core.sweeps import sweep_experiments
from tests.conftest import ROOT

# every test here plans whole studies through Snakemake (a dry run: seconds each, about 50 s in all on 2 cores)
pytestmark = pytest.mark.e2e

BASE = yaml.safe_load((ROOT / "config.yaml").read_text())


def stand_in_data(tmp_path):
    """Folder trees in the two raw layouts, a placeholder for the Inception weights, and a config overlay."""
    for split in ("train", "validation"):
        for c in ("n01440764", "n01443537"):
            (tmp_path / "imagenet100" / split / c).mkdir(parents=True)
            (tmp_path / "imagenet100" / split / c / "x.JPEG").touch()
    for c in ("airplane", "car"):
        (tmp_path / "sysu" / c / "images").mkdir(parents=True)
        (tmp_path / "sysu" / c / "annotations").mkdir()
        (tmp_path / "sysu" / c / "images" / "x.jpg").touch()
    (tmp_path / "inception.pth").touch()
    overlay = {
        "results_dir": str(tmp_path / "results"),
        "studies_to_run": ["full-a", "full-b"],
        "datasets": {
            "imagenet100": {"path": str(tmp_path / "imagenet100")},
            "sysu-shapes": {"path": str(tmp_path / "sysu")},
        },
        "metrics": {"inception_weights": str(tmp_path / "inception.pth")},
    }
    (tmp_path / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    return tmp_path / "overlay.yaml"


def dry_run(*args):
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc, proc.stdout + proc.stderr


def job_counts(text):
    stats = text.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}


def test_full_study_plans_the_reference_matrix_with_sweeps(tmp_path):
    overlay = stand_in_data(tmp_path)
    proc, out = dry_run("--configfile", "config.yaml", str(overlay))
    assert proc.returncode == 0, out[-3000:]
    c = Plan(yaml.safe_load((ROOT / "config.yaml").read_text()))
    sweeps_a, sweeps_b = len(sweep_experiments(c, "full-a")), len(sweep_experiments(c, "full-b"))
    # A: 8 rows, each sampled at its best-validation checkpoint; sweeps: DDPM-CFG over 15 sampler settings and
    # 5 guidance scales, DiT-VAE-CFG-12 over 5 scales, every row over training.
    # B: 5 runs × 25 checkpoints (every 4k of 100k steps); 8 sweep points.
    assert (sweeps_a, sweeps_b) == (15 + 5 + 5 + 8, 8)
    # the eight curves over training (`<row>.ckpts`) sample the checkpoints an early-stopping model kept, known
    # once it has trained: each is one collect_checkpoints job now; its samples are planned after training
    curves = len(sweep_experiments(c, "full-a", "checkpoints"))
    assert curves == 8
    samples = 8 + sweeps_a - curves + 5 * 25 + sweeps_b
    assert job_counts(out) == {
        "make_dataset": 2,
        "reference_stats": 2,  # ImageNet-100 val and SYSU train statistics, each computed once
        "train": 8 + 5,
        "train_autoencoder": 1,
        "encode_latents": 1,
        "evaluate_autoencoder": 1,
        "sample": samples,
        "evaluate": samples,
        "collect_checkpoints": curves,
        "score_selected": 5,  # B's five rows pick one of 25 checkpoints each: scored on a fresh draw there
        "report": 2,
        "all": 1,
    }
    assert "/full-a/samples/DDIM/r0/best.h5" in out and "/full-b/samples/baseline/r0/step0100000.h5" in out
    assert "/full-a/samples/DDPM-CFG.nfe-dpmpp2m-20/r0/best.h5" in out


def test_full_study_without_its_data_names_folder_layout_and_key(tmp_path):
    overlay = stand_in_data(tmp_path)
    spec = yaml.safe_load(overlay.read_text())
    spec["datasets"]["sysu-shapes"]["path"] = str(tmp_path / "nowhere")
    overlay.write_text(yaml.safe_dump(spec))
    proc, out = dry_run("--configfile", "config.yaml", str(overlay))
    assert proc.returncode != 0
    assert f"{tmp_path / 'nowhere'} does not exist" in out and "datasets.sysu-shapes.path" in out
    assert "<category>/" in out and "images/*.jpg" in out
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("study", ["full-a", "full-b"])
def test_full_study_needs_inception_weights_when_targeted(tmp_path, study):
    overlay = stand_in_data(tmp_path)
    spec = yaml.safe_load(overlay.read_text())
    spec["metrics"]["inception_weights"] = None
    spec["studies_to_run"] = ["tiny"]
    overlay.write_text(yaml.safe_dump(spec))
    proc, out = dry_run(f"{tmp_path}/results/{study}/report/table.md", "--configfile", "config.yaml", str(overlay))
    assert proc.returncode != 0
    assert f"studies.{study}.evaluation.extractor: 'inception' needs metrics.inception_weights" in out


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--config", "metrics={inception_weights: INCEPTION}"],
        ["--config", "threads=2", "metrics={inception_weights: INCEPTION}"],
    ],
    ids=["configfile", "configfile and --config", "configfile and two --config values"],
)
def test_the_slurm_profile_plans_the_full_study_whatever_is_overridden(tmp_path, extra):
    """Without a target the slurm profile builds default_studies.cluster: the documented overrides (docs/full-study.md)
    — a paths file, the Inception weights on the command line — keep it (a --config used to replace the profile's
    study selection and quietly plan the CPU demo)."""
    overlay = stand_in_data(tmp_path)
    spec = yaml.safe_load(overlay.read_text())
    spec.pop("studies_to_run")
    if extra:
        spec.pop("metrics")
    overlay.write_text(yaml.safe_dump(spec))
    args = [a.replace("INCEPTION", str(tmp_path / "inception.pth")) for a in extra]
    proc, out = dry_run("--profile", "profiles/slurm", "--configfile", str(overlay), *args)
    assert proc.returncode == 0, out[-3000:]
    assert sum(job_counts(out).values()) == 368  # 363 + full-b's five fresh draws (score_selected)
    values = [a for a in args if a != "--config"]
    proc, out = dry_run(
        "--profile", "profiles/slurm", "--configfile", str(overlay), "--config", *values, "studies_to_run=[full-b]"
    )
    assert proc.returncode == 0, out[-3000:]
    assert job_counts(out)["train"] == 5  # an explicit selection wins


def test_a_local_run_builds_the_demo_by_default(tmp_path):
    proc, out = dry_run("--config", f"results_dir={tmp_path}/results")
    assert proc.returncode == 0, out[-3000:]
    assert f"{tmp_path}/results/demo-a/" in out and f"{tmp_path}/results/full-a/" not in out  # no full-study job


def test_replicates_fan_out_in_the_plan(tmp_path):
    """Replicates multiply exactly the jobs they should: a study's `replicates` applies to its models that do not
    set their own, and experiment replicate k samples model copy k (issue 23: one-to-one; an experiment with more
    replicates than its model is refused at planning, tests/test_config.py)."""
    results = f"results_dir={tmp_path}/results"
    proc, out = dry_run("--config", results)
    assert proc.returncode == 0, out[-3000:]
    before = job_counts(out)
    # the shipped demo: unet-cfg (4 rows), baseline and width-16 trained 3×; the other 8 models once
    assert before["train"] == 3 + 1 + 1 + 1 + 3 + 1 + 1 + 1 + 3
    assert before["sample"] == before["evaluate"] == 4 * 3 + 5 + (3 + 1 + 1 + 1 + 3) * 2  # Demo B: 2 checkpoints
    overlay = tmp_path / "more.yaml"
    overlay.write_text(yaml.safe_dump({"studies": {"demo-b": {"replicates": 2}}}))
    proc, out = dry_run("--configfile", str(overlay), "--config", results)
    assert proc.returncode == 0, out[-3000:]
    after = job_counts(out)
    assert after["train"] == before["train"] + 3  # low-lr, low-lr-flip, width-12: a second copy each
    assert after["sample"] == after["evaluate"] == before["sample"] + 3 * 2
    assert "demo-b/models/low-lr/r1" in out and "demo-b/samples/low-lr/r1/" in out
