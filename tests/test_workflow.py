"""End to end: the tiny preset through Snakemake, every stage real (data → train → sample → evaluate → report)."""

import copy
import csv
import json
import subprocess
import sys

import h5py
import pytest
import torch
import yaml

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e


def snakemake(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


# A results folder no shell should see unquoted: a space, a command substitution, a semicolon and a quote. Every
# path reaches every job's command quoted (or as an argument list: core.launch), so the run works and runs nothing.
HOSTILE = "re sults$(touch INJECTED);'q"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("wf") / HOSTILE
    target = f"{results}/tiny/report/table.md"
    snakemake(target, "--config", f"results_dir={results}")
    return results


def test_hostile_results_dir_reaches_no_shell(tiny_run):
    assert (tiny_run / "tiny" / "report" / "table.md").exists()
    assert not list(tiny_run.parent.rglob("INJECTED")) and not (ROOT / "INJECTED").exists()


def test_tiny_preset_produces_report_and_labelled_metrics(tiny_run):
    report = tiny_run / "tiny" / "report"
    table = (report / "table.md").read_text()
    assert "| DDPM-CFG |" in table and "| DDIM |" in table
    assert "FD_clf" in table and "not Inception FID" in table
    assert "Training precision: fp32 (every row; metrics in fp32)." in table
    for name in ("table.csv", "fid_is.png", "loss.png", "grids.png", "trajectory.png", "curves.png"):
        assert (report / name).stat().st_size > 0, name
    # DDPM-CFG is evaluated at every checkpoint (10 and 20) and scored on a fresh draw at the one each replicate
    # selects; DDIM at the last one only
    metrics_dir = tiny_run / "tiny" / "metrics" / "DDPM-CFG" / "r0"
    names = sorted(p.name for p in metrics_dir.iterdir() if not p.name.endswith(".cost.json"))
    assert names == ["selected.json", "step0000010.json", "step0000020.json"]
    # each evaluation wrote what it cost beside its metrics (core.costs)
    assert sorted(p.name for p in metrics_dir.glob("*.cost.json")) == [f"{n}.cost.json" for n in names]
    m = json.loads((tiny_run / "tiny" / "metrics" / "DDIM" / "r0" / "step0000020.json").read_text())
    assert m["extractor"]["extractor"] == "classifier" and len(m["extractor"]["weights_sha256"]) == 64
    assert m["n_generated"] == 32 and m["n_real"] == 64
    assert m["fid"] >= 0 and 1.0 <= m["is_mean"] <= 5.0
    assert m["training_precision"] == "fp32"  # the precision of the model's training, recorded with its metrics
    ckpt = torch.load(tiny_run / "tiny" / "models" / "unet-cfg" / "r0" / "ckpt" / "step0000020.pt", weights_only=False)
    assert ckpt["meta"]["precision"] == "fp32" and ckpt["meta"]["world_size"] == 1
    with h5py.File(tiny_run / "tiny" / "samples" / "DDPM-CFG" / "r0" / "step0000010.h5", "r") as f:
        assert f.attrs["complete"] and f.attrs["sampler"] == "ddpm" and f.attrs["guidance_scale"] == 2.0
        assert f.attrs["checkpoint_step"] == 10 and f["samples/images"].shape == (32, 8, 8, 3)
        assert list(f["samples/labels"][:6]) == [0, 1, 2, 3, 4, 0]
        assert f["trajectory/images"].shape[:2] == (2, 5)
    # the real images' statistics are computed once and reused by all evaluations and the autoencoder's
    assert len(list((tiny_run / "benchmarks" / "reference_stats").rglob("*.tsv"))) == 1
    kept = len(list((tiny_run / "tiny" / "models" / "unet-vae-cfg" / "r0" / "ckpt").glob("step*.pt")))
    # the rows' checkpoints (unet-cfg's rows and sweep points twice: its two replicates), the sweep points, and
    # DDIM-VAE-CFG over the steps its early-stopping model kept
    rows, sweeps = 2 * 2 + 2 + 1 + 1, 2 + 2 + 1
    assert len(list((tiny_run / "benchmarks" / "evaluate").rglob("*.tsv"))) == rows + sweeps + kept
    assert m["reference"]["path"].endswith("val-classifier-n0.npz")
    for rule in ("train", "sample", "evaluate", "report"):
        assert any((tiny_run / "benchmarks" / rule).rglob("*.tsv")), rule
        assert any((tiny_run / "logs" / rule).rglob("*.log")), rule


def test_latent_rows_train_on_one_cache_and_write_decoded_pixels(tiny_run):
    table = (tiny_run / "tiny" / "report" / "table.md").read_text()
    assert "| DDIM-VAE-CFG | yes (shapes-tiny-f2) | w=2 | UNet |" in table
    assert "| DiT-VAE-CFG | yes (shapes-tiny-f2) | w=2 | DiT depth 1 |" in table
    assert "## Autoencoders of the latent rows" in table and "rFD_clf@64" in table
    # one autoencoder and one latent cache serve both latent models
    assert len(list((tiny_run / "benchmarks" / "train_autoencoder").rglob("*.tsv"))) == 1
    assert len(list((tiny_run / "benchmarks" / "encode_latents").rglob("*.tsv"))) == 1
    with h5py.File(tiny_run / "latents" / "shapes-tiny-f2.h5", "r") as f:
        assert f["train/moments"].shape == (200, 6, 4, 4) and f["val/moments"].shape == (64, 6, 4, 4)
    for exp, tag in (("DDIM-VAE-CFG", "best"), ("DiT-VAE-CFG", "step0000020")):
        with h5py.File(tiny_run / "tiny" / "samples" / exp / "r0" / f"{tag}.h5", "r") as f:
            assert f["samples/images"].shape == (32, 8, 8, 3)  # decoded to pixels, not 4×4×3 latents
            prov = json.loads(f.attrs["provenance"])
            assert prov["space"] == "latent" and prov["spec"]["sampler"]["clip_denoised"] is False
    ae = json.loads((tiny_run / "tiny" / "autoencoders" / "shapes-tiny-f2.json").read_text())
    assert ae["latent_shape"] == [3, 4, 4] and ae["n_images"] == 64 and 0 < ae["psnr_db"] < 60
    assert (tiny_run / "tiny" / "autoencoders" / "shapes-tiny-f2.png").stat().st_size > 0


def test_early_stopping_model_is_sampled_at_its_best_validation_checkpoint(tiny_run):
    model = tiny_run / "tiny" / "models" / "unet-vae-cfg" / "r0"
    with open(model / "val_log.csv") as fh:
        rows = list(csv.DictReader(fh))
    best_step = min(rows, key=lambda r: float(r["val_loss"]))["step"]
    with h5py.File(tiny_run / "tiny" / "samples" / "DDIM-VAE-CFG" / "r0" / "best.h5", "r") as f:
        assert f.attrs["checkpoint_step"] == int(best_step)
    m = json.loads((tiny_run / "tiny" / "metrics" / "DDIM-VAE-CFG" / "r0" / "best.json").read_text())
    assert m["samples"]["checkpoint_step"] == int(best_step)


def test_sweep_points_are_sampled_and_reported(tiny_run):
    table = (tiny_run / "tiny" / "report" / "table.md").read_text()
    assert sorted(p.name for p in (tiny_run / "tiny" / "metrics").iterdir() if "." in p.name) == [
        "DDIM-VAE-CFG.ckpts",
        "DDIM-VAE-CFG.w1",
        "DDIM.nfe-ddim-5",
        "DDIM.nfe-dpmpp2m-5",
    ]
    with h5py.File(tiny_run / "tiny" / "samples" / "DDIM.nfe-dpmpp2m-5" / "r0" / "step0000020.h5", "r") as f:
        assert f.attrs["sampler"] == "dpmpp2m" and f.attrs["steps"] == 5 and f.attrs["guidance_scale"] == 1.0
    nfe = table.split("## Sweep: quality against sampler steps")[1].split("## ")[0]
    assert "| DDIM | DDIM-10 (η=0, leading) | leading | 10 |" in nfe
    assert "| DDIM.nfe-dpmpp2m-5 | DPM-Solver++(2M)-5 (trailing) | trailing | 5 |" in nfe
    guidance = table.split("## Sweep: guidance scale")[1].split("## ")[0]
    assert guidance.index("| DDIM-VAE-CFG.w1 | 1 |") < guidance.index("| DDIM-VAE-CFG | 2 |")
    assert "## Cost" in table and "| DDIM.nfe-ddim-5 |" in table.split("## Cost")[1]


def test_curve_over_training_samples_every_checkpoint_an_early_stopping_model_kept(tiny_run):
    kept = sorted(p.stem for p in (tiny_run / "tiny" / "models" / "unet-vae-cfg" / "r0" / "ckpt").glob("step*.pt"))
    assert kept  # the first checkpoint (step 10) is always kept
    metrics = tiny_run / "tiny" / "metrics" / "DDIM-VAE-CFG.ckpts" / "r0"
    assert sorted(p.stem for p in metrics.glob("step*.json") if not p.name.endswith(".cost.json")) == kept
    index = json.loads((metrics / "checkpoints.json").read_text())
    assert index["steps"] == [int(k.removeprefix("step")) for k in kept]
    table = (tiny_run / "tiny" / "report" / "table.md").read_text()
    section = table.split("## Quality over training: DDIM-VAE-CFG")[1].split("## ")[0]
    assert "DDIM-5 (η=0, leading)" in section
    assert [
        line.split(" | ")[0].strip("| ") for line in section.splitlines() if line.startswith("| ") and "---" not in line
    ][1:] == [str(int(k.removeprefix("step"))) for k in kept]


def test_html_report_is_self_contained_with_captions(tiny_run, tmp_path):
    html = tmp_path / "report.html"
    snakemake(f"{tiny_run}/tiny/report/table.md", "--report", str(html), "--config", f"results_dir={tiny_run}")
    text = html.read_text()
    assert len(text) > 100_000  # the figures are embedded, not linked
    for name in ("table.md", "table.csv", "fid_is.png", "grids.png", "sweeps.png"):
        assert name in text, name
    assert "FD against network" in text  # a caption (rules/captions/sweeps.rst)


def test_rerun_has_nothing_to_do(tiny_run):
    proc = snakemake("-n", f"{tiny_run}/tiny/report/table.md", "--config", f"results_dir={tiny_run}")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_bad_config_fails_before_any_job_and_names_the_key(tmp_path):
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["studies"]["tiny"]["defaults"]["model"]["train"]["learning_rate"] = 0.1
    config["results_dir"] = str(tmp_path / "results")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    proc = snakemake("--configfile", str(bad), "-n", check=False)
    assert proc.returncode != 0
    assert "studies.tiny.defaults.model.train" in proc.stdout + proc.stderr
    assert "learning_rate" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_target_at_a_step_without_checkpoint_is_refused_at_planning_time(tmp_path):
    results = tmp_path / "results"
    proc = snakemake(
        "-n", f"{results}/tiny/samples/DDIM/r0/step0000015.h5", "--config", f"results_dir={results}", check=False
    )
    assert proc.returncode != 0
    assert "saves checkpoints only at steps [10, 20]" in proc.stdout + proc.stderr
    assert not results.exists()


def test_envmodules_are_loaded_before_each_job(tmp_path):
    """`--sdm env-modules` runs `module load <config envmodules>` in each job's shell; a stand-in `module`
    command on PATH records what it was asked to load."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "module-calls.txt"
    (bin_dir / "module").write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
    (bin_dir / "module").chmod(0o755)
    results = tmp_path / "results"
    env = {**__import__("os").environ, "PATH": f"{bin_dir}:{__import__('os').environ['PATH']}"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--cores",
            "1",
            f"{results}/data/shapes-tiny.h5",
            "--sdm",
            "env-modules",
            "--config",
            f"results_dir={results}",
            "envmodules=[cuda/12.6,python/3.11]",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    calls = record.read_text()
    assert "purge" in calls and "load cuda/12.6 python/3.11" in calls
    assert (results / "data" / "shapes-tiny.h5").exists()


def _config_with_folder_dataset(tmp_path, source: str, path: str, **entry) -> tuple:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["results_dir"] = str(tmp_path / "results")
    config["datasets"]["raw"] = {"source": source, "path": path, "image_size": 8, "workers": 1, **entry}
    study = copy.deepcopy(config["studies"]["tiny"])
    study["dataset"] = "raw"
    study["models"] = {"unet-cfg": study["models"]["unet-cfg"]}
    study["experiments"] = {"DDIM": study["experiments"]["DDIM"]}
    study.pop("sweeps")
    study.pop("claims")
    config["studies"]["raw-study"] = study
    path_ = tmp_path / "config.yaml"
    path_.write_text(yaml.safe_dump(config))
    return path_, tmp_path / "results"


def test_missing_dataset_folder_is_reported_at_planning_time(tmp_path):
    missing = tmp_path / "imagenet100_128x128"
    config, results = _config_with_folder_dataset(tmp_path, "imagenet100", str(missing))
    proc = snakemake("--configfile", str(config), "-n", f"{results}/raw-study/report/table.md", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "datasets.raw.path" in out and str(missing) in out and "validation/<class>" in out
    assert not results.exists()
    # the demo does not need that dataset and still plans
    assert snakemake("--configfile", str(config), "-n", "--nolock").returncode == 0


def test_image_folder_dataset_is_ingested_by_the_workflow(tmp_path):
    from PIL import Image

    root = tmp_path / "raw"
    for c, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(20):
            Image.new("RGB", (12, 10), colour).save(root / f"class{c}" / f"{i:02d}.png")
    (root / "class0" / "notes.txt").write_text("not an image")
    # 30% of each class held out as val: 14 + 6 per class, enough for the study's batches and KID subsets
    config, results = _config_with_folder_dataset(tmp_path, "folder", str(root), val_fraction=0.3)
    snakemake(f"{results}/data/raw.h5", "--configfile", str(config))
    with h5py.File(results / "data" / "raw.h5", "r") as f:
        assert f["train/images"].shape == (42, 8, 8, 3) and f["val/images"].shape == (18, 8, 8, 3)
        assert list(f["train/labels"][:]) == [0] * 14 + [1] * 14 + [2] * 14
        assert tuple(f["train/images"][15, 3, 3]) == (0, 255, 0)
        assert f["train"].attrs["skipped_non_image"] == 1


def test_replicates_fan_out_and_carry_intervals_and_findings(tiny_run):
    """unet-cfg has two replicates: two trained copies (seeds 0 and 1), two sample sets per row of it, and its
    rows show the mean and t interval over both; the Findings table tests the preset's claims."""
    models = tiny_run / "tiny" / "models"
    assert sorted(p.name for p in (models / "unet-cfg").iterdir()) == ["r0", "r1"]
    assert sorted(p.name for p in (models / "dit-vae-cfg").iterdir()) == ["r0"]
    seeds = [
        json.loads(json.dumps(torch_meta(models / "unet-cfg" / r / "ckpt" / "step0000020.pt")))["spec"]["train"]["seed"]
        for r in ("r0", "r1")
    ]
    assert seeds == [0, 1]
    for r in ("r0", "r1"):
        with h5py.File(tiny_run / "tiny" / "samples" / "DDIM" / r / "step0000020.h5", "r") as f:
            assert f.attrs["replicate"] == int(r[1]) and f.attrs["model_replicate"] == int(r[1])
    table = (tiny_run / "tiny" / "report" / "table.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| DDIM |"))
    assert "| 2 |" in row
    findings = table.split("## Findings")[1]
    assert "paired t over 2 replicates" in findings and "bootstrap (centred) of the difference" in findings
    with open(tiny_run / "tiny" / "report" / "table.csv", newline="") as fh:
        ddim = [r for r in csv.DictReader(fh) if r["experiment"] == "DDIM"]
    assert sorted(r["replicate"] for r in ddim) == ["0", "1"]


def test_a_row_at_every_checkpoint_reports_a_fresh_draw_at_its_selected_one(tiny_run):
    """DDPM-CFG (every checkpoint, two replicates): each replicate's selected.json picked the lower per-checkpoint
    FD, drew anew there with seed + 2³¹, and the report's row and CSV carry the fresh draws' values."""
    metrics = tiny_run / "tiny" / "metrics" / "DDPM-CFG"
    fresh = {}
    for k in (0, 1):
        per_step = {s: json.loads((metrics / f"r{k}" / f"step{s:07d}.json").read_text())["fid"] for s in (10, 20)}
        m = json.loads((metrics / f"r{k}" / "selected.json").read_text())
        sel = m["selection"]
        assert sel["selected_step"] == min(per_step, key=lambda s: (per_step[s], s)) == m["samples"]["checkpoint_step"]
        assert (sel["selection_seed"], m["samples"]["seed"]) == (k, k + 2**31) and sel["fresh_fid"] == m["fid"]
        assert m["n_generated"] == 32 and m["samples"]["sampler"] == "ddpm" and m["samples"]["guidance_scale"] == 2.0
        fresh[k] = m
    with open(tiny_run / "tiny" / "report" / "table.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["experiment"] == "DDPM-CFG" and r["draw"] == "fresh (selected step)"]
    csv_fid = {int(r["replicate"]): float(r["fid"]) for r in rows}
    assert csv_fid == pytest.approx({k: m["fid"] for k, m in fresh.items()}, rel=1e-5)
    table = (tiny_run / "tiny" / "report" / "table.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| DDPM-CFG |"))
    mean = (fresh[0]["fid"] + fresh[1]["fid"]) / 2
    assert f"| {mean:.2f} [" in row and "selection draw's FD there (biased low)" in table
    assert (tiny_run / "benchmarks" / "score_selected" / "tiny" / "DDPM-CFG" / "r1.tsv").is_file()


def torch_meta(path):
    import torch

    return torch.load(path, weights_only=False)["meta"]
