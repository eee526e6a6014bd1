"""The report: the best checkpoint's IS (not another's), intervals over replicates and from the bootstrap, claims with
verdicts, sweeps, published numbers and cost; it refuses sample files that changed after evaluation and marks rows
made by other code."""

import csv
import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.stats
import yaml

from core import data, stats
from core.plan import Plan
from core.provenance import code_fingerprint
from core.stages import report
from tests.conftest import ROOT

MODEL = {
    "backbone": "unet",
    "space": "pixel",
    "label": "UNet",
    "net": {"base_channels": 8, "class_conditional": False},
    "train": {"lr": 1e-4, "hflip": True},
    "resources": {"gpus": 1, "nodes": 1},
}
SAMPLER = {"name": "ddim", "steps": 25, "eta": 0.0, "spacing": "leading", "clip_denoised": True}


def study(experiments: dict, layout: str = "matrix", claims: list | None = None, models: dict | None = None) -> dict:
    return {
        "name": "s",
        "title": "Test study",
        "layout": layout,
        "published_protocol": "Protocol note.",
        "claims": claims or [],
        "models": models or {"m": MODEL},
        "experiments": experiments,
        "experiment_order": list(experiments),
    }


def exp(sampler: dict = SAMPLER, w: float = 1.0, **kw) -> dict:
    return {"model": "m", "sampler": sampler, "guidance_scale": w, **kw}


def fake_run(tmp_path, step, fid, is_mean, experiment="run", replicate=0, tag=None, spread=1.0, code=None, label=None):
    """A sealed sample file and its metrics file, as core.stages.sample and core.stages.evaluate write them."""
    tag = tag or f"step{step:07d}"
    samples = tmp_path / "samples" / experiment / f"r{replicate}" / f"{tag}.h5"
    samples.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(samples, "w") as f:
        data.write_root_attrs(f, "samples", 4, ["a"], {})
        images, _ = data.create_split(f, "samples", 4, 4)
        images[:] = np.full((4, 4, 4, 3), (step + replicate) % 255, dtype=np.uint8)
        g = f.create_group("trajectory")
        g.create_dataset("images", data=np.zeros((1, 3, 4, 4, 3), dtype=np.uint8))
        g.create_dataset("timesteps", data=np.array([10, 5, -1]))
        f.attrs["sampling_device_seconds"] = 36.0
        data.seal(f)
        checksums = {k: str(f[k].attrs["sha256"]) for k in ("samples/images", "samples/labels")}
    rng = np.random.default_rng(step + 1000 * replicate)
    fid_boot, is_boot = fid + spread * rng.normal(size=50), is_mean + 0.1 * spread * rng.normal(size=50)
    m = {
        "fid": fid,
        "is_mean": is_mean,
        "is_std": 0.1,
        "kid_mean": 0.0,
        "kid_std": 0.0,
        "precision": 0.5,
        "recall": 0.5,
        "label": {"fid": "FD_clf@4", "is": "IS_clf (2 splits)", "kid": "KID"},
        "extractor": {"extractor": "classifier", "weights_sha256": "ab" * 32, "preprocessing": "native"},
        "n_generated": 4,
        "n_real": 8,
        "reference": {"split": "train"},
        "samples": {
            "path": str(samples),
            "checksums": checksums,
            "experiment": experiment,
            "replicate": replicate,
            "checkpoint_step": step,
            "sampler": "ddim",
            "sampler_label": label or "DDIM-25 (η=0, leading)",
            "steps": 25,
            "guidance_scale": 1.0,
            "seed": replicate,
            "code_version": "test",
        },
        "bootstrap": {
            "resamples": 50,
            "fid": fid_boot.tolist(),
            "is_mean": is_boot.tolist(),
            "fid_interval": stats.bootstrap_interval(fid, fid_boot).as_dict(),
            "is_interval": stats.bootstrap_interval(is_mean, is_boot).as_dict(),
        },
        "provenance": {"code": code or code_fingerprint("evaluate")},
        "sample_provenance": {},
    }
    metrics = tmp_path / "metrics" / experiment / f"r{replicate}" / f"{tag}.json"
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text(json.dumps(m))
    return str(metrics), str(samples)


def train_log(tmp_path, model="m", replicate=0, text=None) -> str:
    log = tmp_path / "models" / model / f"r{replicate}" / "train_log.csv"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(
        text
        or "step,loss,lr,grad_norm,images_per_s,elapsed_s,peak_mem_mb,input_wait_s\n"
        + "".join(f"{i},{1 / i},1,1,100,{i},0,0.01\n" for i in range(1, 30))
    )
    return str(log)


def run_report(tmp_path, s, runs, logs=None) -> str:
    report.run(s, [m for m, _ in runs], [x for _, x in runs], logs or [train_log(tmp_path)], str(tmp_path / "out"))
    return (tmp_path / "out" / "table.md").read_text()


def test_best_checkpoint_row_uses_is_of_the_same_checkpoint(tmp_path):
    # FD is best at step 200; IS is best at step 300: the row must show step 200's IS, not 9.0
    runs = [fake_run(tmp_path, 100, 50.0, 2.0), fake_run(tmp_path, 200, 10.0, 3.0), fake_run(tmp_path, 300, 20.0, 9.0)]
    table = run_report(tmp_path, study({"run": exp()}, layout="ablation"), runs)
    row = next(line for line in table.splitlines() if line.startswith("| run | 8 |"))
    assert "(200)" in row and "| 3.00 [" in row and "9.00" not in row and "| 20.00 |" in row
    m = json.loads((tmp_path / "metrics" / "run" / "r0" / "step0000200.json").read_text())
    iv = m["bootstrap"]["fid_interval"]
    assert f"10.00 [{iv['low']:.2f}, {iv['high']:.2f}] (200)" in row  # the single run's bootstrap interval
    assert "not Inception FID/IS" in table and "bootstrap interval over its generated images (50" in table
    with open(tmp_path / "out" / "table.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["checkpoint_step"]) for r in rows] == [100, 200, 300]
    assert float(rows[1]["fid_low"]) == pytest.approx(iv["low"], rel=1e-5)
    for name in ("fid_is.png", "loss.png", "grids.png", "trajectory.png", "curves.png", "sweeps.png"):
        assert (tmp_path / "out" / name).read_bytes()[:4] == b"\x89PNG"


def test_replicates_give_a_t_interval_and_the_reported_step_is_the_best_mean(tmp_path):
    fids = {0: [30.0, 12.0], 1: [28.0, 14.0], 2: [31.0, 13.0]}  # step 100 and 200 of three replicates
    runs = [fake_run(tmp_path, 100 * (k + 1), f, 2.0, replicate=r) for r, fs in fids.items() for k, f in enumerate(fs)]
    table = run_report(tmp_path, study({"run": exp()}, layout="ablation"), runs)
    vals = np.array([12.0, 14.0, 13.0])
    half = scipy.stats.t.ppf(0.975, 2) * vals.std(ddof=1) / math.sqrt(3)
    row = next(line for line in table.splitlines() if line.startswith("| run | 8 |"))
    assert f"{vals.mean():.2f} [{vals.mean() - half:.2f}, {vals.mean() + half:.2f}] (200)" in row
    assert "| 3 |" in row and "Student t interval" in table


def test_claims_get_verdicts_paired_over_replicates_and_the_published_direction(tmp_path):
    runs = []
    for r in range(3):  # guidance helps (consistently), the latent row is level with the pixel row
        runs.append(fake_run(tmp_path, 10, 20.0 + r, 2.0, experiment="plain", replicate=r))
        runs.append(fake_run(tmp_path, 10, 15.0 + r + 0.1 * r * r, 2.5, experiment="guided", replicate=r))
        runs.append(fake_run(tmp_path, 10, 20.0 + r + (-1) ** r, 2.0, experiment="latent", replicate=r))
    pub = {"plain": {"fid": 150.0}, "guided": {"fid": 94.2}}
    exps = {n: exp(w=3.0 if n == "guided" else 1.0, published=pub.get(n)) for n in ("plain", "guided", "latent")}
    exps = {n: {k: v for k, v in e.items() if v is not None} for n, e in exps.items()}
    claims = [
        {"claim": "guidance helps", "a": "guided", "b": "plain", "metric": "fid", "expect": "less"},
        {"claim": "guidance hurts", "a": "guided", "b": "plain", "metric": "fid", "expect": "greater"},
        {"claim": "pixel beats latent", "a": "plain", "b": "latent", "metric": "fid", "expect": "less"},
        {"claim": "pixel ≈ latent", "a": "plain", "b": "latent", "metric": "fid", "expect": "equal", "margin": 10.0},
    ]
    model = {**MODEL, "net": {"base_channels": 8, "class_conditional": True}}
    table = run_report(tmp_path, study(exps, claims=claims, models={"m": model}), runs)
    findings = table.split("## Findings")[1].split("\n## ")[0]
    lines = {line.split(" | ")[0].strip("| "): line for line in findings.splitlines() if line.startswith("| ")}
    assert "**holds**" in lines["guidance helps"] and "paired t over 3 replicates" in lines["guidance helps"]
    assert "**reversed**" in lines["guidance hurts"]
    assert "**not resolved**" in lines["pixel beats latent"]
    assert "**holds**" in lines["pixel ≈ latent"] and "(90%)" in lines["pixel ≈ latent"]  # TOST: the 90% interval
    diffs = [15.0 + r + 0.1 * r * r - (20.0 + r) for r in range(3)]
    iv = stats.t_interval(diffs)
    assert f"{iv.estimate:+.2f} [{iv.low:+.2f}, {iv.high:+.2f}] (95%)" in lines["guidance helps"]
    # raw and Holm-adjusted p-values: the paired t test's, then Holm over the four claims
    p = scipy.stats.ttest_1samp(diffs, 0.0).pvalue
    assert p < 0.001 and "| < 0.001 |" in lines["guidance helps"]
    assert "| p (holm) |" in findings and "Holm's step-down correction" in findings
    p_latent = scipy.stats.ttest_1samp([-((-1) ** r) for r in range(3)], 0.0).pvalue  # plain − latent per replicate
    assert f"| {p_latent:.3f} | {p_latent:.3f} | **not resolved** |" in lines["pixel beats latent"]  # largest: ×1
    # the reference's published numbers: Δ and the noise floor scaled from our replicates' relative seed sd
    values = {
        "plain": [20.0 + r for r in range(3)],
        "guided": [15.0 + r + 0.1 * r * r for r in range(3)],
        "latent": [20.0 + r + (-1) ** r for r in range(3)],
    }
    rel = np.median([np.std(v, ddof=1) / np.mean(v) for v in values.values()])
    floor = 1.959964 * math.sqrt(2) * rel * (94.2 + 150.0) / 2
    assert f"holds (94.2 vs 150: Δ -55.80, noise floor {floor:.2f})" in lines["guidance helps"]
    assert "reversed (94.2 vs 150" in lines["guidance hurts"] and lines["pixel beats latent"].endswith("| – |")


def test_a_claim_naming_the_full_studys_claim_shows_that_claims_published_direction(tmp_path):
    claims = Plan(yaml.safe_load((ROOT / "config.yaml").read_text())).claims["demo-a"]  # as the rules pass them
    guided = next(c for c in claims if (c["a"], c["b"]) == ("DDPM-CFG", "DDPM"))
    equal = next(c for c in claims if c["expect"] == "equal")  # DDIM-25 ≈ DDPM-50 within 2; full-a's within 10
    runs = [
        fake_run(tmp_path, 10, fd + 0.1 * r * r, 2.0, e, replicate=r, spread=0.5)
        for e, fd in (("DDPM-CFG", 10.0), ("DDPM", 20.0), ("DDIM", 25.0))
        for r in range(3)
    ]
    table = run_report(tmp_path, study({e: exp() for e in ("DDPM-CFG", "DDPM", "DDIM")}, claims=[guided, equal]), runs)
    lines = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    vals = [[fd + 0.1 * r * r for r in range(3)] for fd in (10.0, 20.0, 25.0)]
    rel = np.median([np.std(v, ddof=1) / np.mean(v) for v in vals])
    floor = 1.959964 * math.sqrt(2) * rel * (94.2 + 150.0) / 2
    assert lines[guided["claim"]].endswith(
        f"| **holds** | guidance_scale 0.0→3.0 | holds (full-a: DDPM-CFG vs DDPM, 94.2 vs 150: Δ -55.80, noise floor "
        f"{floor:.2f}) |"
    )
    # the demo's own margin (2) decides the demo's verdict, the full study's (10) the reference's direction: its
    # |Δ| 2.1 is within 10 by more than the floor
    floor = 1.959964 * math.sqrt(2) * rel * (152.1 + 150.0) / 2
    assert "| **reversed** |" in lines[equal["claim"]]
    assert lines[equal["claim"]].endswith(
        f"holds (full-a: DDIM vs DDPM, 152.1 vs 150: Δ +2.10, \\|Δ\\| < 10, noise floor {floor:.2f}) |"
    )


def test_a_claim_lists_what_differs_and_is_marked_confounded(tmp_path):
    claims = Plan(yaml.safe_load((ROOT / "config.yaml").read_text())).claims["demo-b"]
    width = next(c for c in claims if (c["a"], c["b"]) == ("width-12", "baseline"))
    flips = next(c for c in claims if (c["a"], c["b"]) == ("low-lr-flip", "low-lr"))
    assert width["confounded"] == ["model.train.hflip no→yes"] and not flips["confounded"]
    names = ("width-12", "baseline", "low-lr-flip", "low-lr")
    runs = [fake_run(tmp_path, 10, 10.0 + e, 2.0, n) for e, n in enumerate(names)]
    table = run_report(tmp_path, study({n: exp() for n in names}, claims=[width, flips]), runs)
    lines = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert "| **confounded**: model.net.base_channels 8→12; model.train.hflip no→yes |" in lines[width["claim"]]
    assert "| model.train.hflip no→yes |" in lines[flips["claim"]]


def test_a_single_run_against_replicates_borrows_their_seed_spread(tmp_path):
    runs = [fake_run(tmp_path, 10, 10.0, 2.0, "a", spread=0.5)]
    runs += [fake_run(tmp_path, 10, fd, 2.0, "b", replicate=r, spread=0.5) for r, fd in enumerate((12.0, 16.0, 20.0))]
    claims = [{"claim": "a beats b", "a": "a", "b": "b", "metric": "fid", "expect": "less"}]
    table = run_report(tmp_path, study({"a": exp(), "b": exp()}, claims=claims), runs)
    line = next(x for x in table.splitlines() if x.startswith("| a beats b |"))
    # Δ̂ = 10 − 16 = −6, se = 4·√(4/3), t_{0.975,2}; replicate 0 alone (10 vs 12, the bootstrap of the sampling noise
    # of one trained network each) would have called it
    half = scipy.stats.t.ppf(0.975, 2) * 4 * math.sqrt(4 / 3)
    assert f"-6.00 [{-6 - half:+.2f}, {-6 + half:+.2f}] (95%)" in line
    assert "seed sd 4 of b borrowed (df 2)" in line and "**not resolved**" in line


def test_two_single_runs_use_the_bootstrap_of_the_difference_and_are_tentative(tmp_path):
    runs = [fake_run(tmp_path, 10, 10.0, 2.0, "a", spread=0.5), fake_run(tmp_path, 10, 20.0, 2.0, "b", spread=0.5)]
    claims = [{"claim": "a beats b", "a": "a", "b": "b", "metric": "fid", "expect": "less"}]
    table = run_report(tmp_path, study({"a": exp(), "b": exp()}, claims=claims), runs)
    line = next(x for x in table.splitlines() if x.startswith("| a beats b |"))
    assert "bootstrap (centred) of the difference, one run each, 50 resamples" in line
    # one training run on each side: sampling noise only, so never a bold verdict
    assert "| holds, tentative (one training run each) |" in line and "**holds**" not in line
    # the footers quote the measured coverage of the single-run intervals they use
    assert "The difference of two single runs covers the seed-averaged difference 69–84% of the time" in table
    assert "covers the seed-averaged FD 76–87% of the time at nominal 95%" in table


def test_no_coverage_warning_where_no_single_run_interval_is_used(tmp_path):
    runs = [fake_run(tmp_path, 10, 10.0 + r, 2.0, x, replicate=r) for x in ("a", "b") for r in range(2)]
    claims = [{"claim": "a beats b", "a": "a", "b": "b", "metric": "fid", "expect": "less"}]
    table = run_report(tmp_path, study({"a": exp(), "b": exp()}, claims=claims), runs)
    assert "paired t over 2 replicates" in table
    assert "69–84%" not in table and "76–87%" not in table and "95% bootstrap interval" not in table


def test_sweeps_published_numbers_and_cost(tmp_path):
    pub = {"fid": 150.0, "is_mean": 4.45, "is_std": 0.1}
    exps = {
        "A": exp(w=2.0, published=pub),
        "A.nfe-ddim-10": exp({**SAMPLER, "steps": 10}, 2.0, sweep={"kind": "nfe", "base": "A"}),
        "A.nfe-dpmpp2m-10": exp(
            {"name": "dpmpp2m", "steps": 10, "spacing": "trailing"}, 2.0, sweep={"kind": "nfe", "base": "A"}
        ),
        "A.w1": exp(w=1.0, sweep={"kind": "guidance", "base": "A"}),
        "A.w4": exp(w=4.0, sweep={"kind": "guidance", "base": "A"}),
    }
    model = {**MODEL, "net": {"base_channels": 8, "class_conditional": True}, "resources": {"gpus": 2, "nodes": 1}}
    fids = {"A": 10.0, "A.nfe-ddim-10": 14.0, "A.nfe-dpmpp2m-10": 11.0, "A.w1": 20.0, "A.w4": 12.0}
    labels = {"A.nfe-ddim-10": "DDIM-10 (η=0, leading)", "A.nfe-dpmpp2m-10": "DPM-Solver++(2M)-10 (trailing)"}
    runs = [fake_run(tmp_path, 4, fid, 3.0, experiment=e, label=labels.get(e)) for e, fid in fids.items()]
    # a resumed run: elapsed restarts at 0 after step 2; 20 s + 15 s = 35 s on 2 GPUs, 3.5 s of it waiting for input
    log = train_log(
        tmp_path,
        text="step,loss,lr,grad_norm,images_per_s,elapsed_s,peak_mem_mb,input_wait_s\n"
        "1,1,1,1,100,10,2048,1\n2,1,1,1,300,20,2048,2\n3,1,1,1,200,5,4096,0.25\n4,1,1,1,250,15,1024,0.25\n",
    )
    table = run_report(tmp_path, study(exps, models={"m": model}), runs, [log])
    main = table.split("## Sweep")[0]
    assert "| A.w4 |" not in main and "| A.nfe-ddim-10 |" not in main  # sweep points stay out of the main table
    row = next(line for line in main.splitlines() if line.startswith("| A |"))
    assert row.endswith("| 150.00 | 4.45 ± 0.10 |") and "| w=2 |" in row and "Protocol note." in main
    nfe = table.split("## Sweep: quality against sampler steps")[1].split("\n## ")[0]
    # network evaluations: 2 per step with guidance, 1 without; the spacing of each sampler is shown
    assert "| A.nfe-ddim-10 | DDIM-10 (η=0, leading) | leading | 20 | 14.00 [" in nfe
    assert "| A.nfe-dpmpp2m-10 | DPM-Solver++(2M)-10 (trailing) | trailing | 20 | 11.00 [" in nfe
    assert "| A | DDIM-25 (η=0, leading) | leading | 50 | 10.00 [" in nfe  # the base is a point of its own sweep
    g = table.split("## Sweep: guidance scale")[1]
    assert g.index("| A.w1 | 1 |") < g.index("| A | 2 |") < g.index("| A.w4 | 4 |")
    # cost: median images/s of the log, peak memory 4 GiB, 35 s × 2 GPUs, 10% waiting for input, sampling 36 s
    assert "| A | m | 1 | 4 | 225.0 | 4.0 GiB | 0.019 | 10.0% | 0.0100 |" in table
    assert (tmp_path / "out" / "sweeps.png").read_bytes()[:4] == b"\x89PNG"


def test_a_sample_file_changed_after_evaluation_is_refused(tmp_path):
    runs = [fake_run(tmp_path, 10, 10.0, 2.0)]
    with h5py.File(runs[0][1], "a") as f:  # remade (e.g. by another run): sealed again, other bytes
        f["samples/images"][0] = 255 - f["samples/images"][0]
        data.seal(f)
    with pytest.raises(data.CorruptFile, match=r"is not the sample file that .* evaluated"):
        run_report(tmp_path, study({"run": exp()}), runs)
    runs = [fake_run(tmp_path / "b", 10, 10.0, 2.0)]
    with h5py.File(runs[0][1], "a") as f:  # bytes changed, checksums kept: caught when its images are shown
        f["samples/images"][1] = 7
    with pytest.raises(data.CorruptFile, match=r"samples/images does not match the checksum"):
        run_report(tmp_path / "b", study({"run": exp()}), runs)


def test_rows_made_by_other_code_are_marked(tmp_path):
    old = {**code_fingerprint("evaluate"), "sha256": "0" * 64}
    old["modules"] = {**old["modules"], "core.metrics": "0" * 64}
    runs = [fake_run(tmp_path, 10, 10.0, 2.0, "old", code=old), fake_run(tmp_path, 10, 11.0, 2.0, "new")]
    table = run_report(tmp_path, study({"old": exp(), "new": exp()}), runs)
    assert "| old † |" in table and "| new |" in table
    assert "| old | evaluate (r0): core.metrics |" in table.split("## Made by other code")[1]


def test_fd_infinity_is_a_column_when_evaluated(tmp_path):
    metrics, samples = fake_run(tmp_path, 10, 10.0, 2.0)
    m = json.loads(Path(metrics).read_text())
    m["fd_infinity"] = {"value": 8.5, "slope": 300.0, "sizes": [2, 4], "values": [9.0, 8.8]}
    Path(metrics).write_text(json.dumps(m))
    table = run_report(tmp_path, study({"run": exp()}), [(metrics, samples)])
    assert "FD∞ ↓ (Chong & Forsyth 2020) |" in table and table.split("\n")[4].endswith("| 8.50 |")


def test_kid_and_precision_recall_get_t_intervals_over_replicates_and_no_spread_for_a_single_run(tmp_path):
    runs = [fake_run(tmp_path, 10, 10.0, 2.0, "single")]
    runs += [fake_run(tmp_path, 10, 10.0, 2.0, "rep", replicate=r) for r in range(3)]
    kid = {("single", 0): 0.004, ("rep", 0): 0.001, ("rep", 1): 0.002, ("rep", 2): 0.006}
    for metrics, _ in runs:
        m = json.loads(Path(metrics).read_text())
        key = (m["samples"]["experiment"], m["samples"]["replicate"])
        m.update(kid_mean=kid[key], kid_std=0.5, precision=0.6 + 0.1 * key[1], recall=0.3)
        Path(metrics).write_text(json.dumps(m))
    table = run_report(tmp_path, study({"single": exp(), "rep": exp()}), runs)
    part = table.split("## Further metrics")[1].split("\n## ")[0]
    iv = stats.t_interval([1.0, 2.0, 6.0])  # KID × 10³ of the three replicates
    p = stats.t_interval([0.6, 0.7, 0.8])
    assert f"| rep | 10 | 3 | {iv.estimate:.3f} [{iv.low:.3f}, {iv.high:.3f}] | {p.estimate:.3f} [{p.low:.3f}" in part
    assert "| single | 10 | 1 | 4.000 | 0.600 | 0.300 |" in part  # a single run: no ± (the subsets' sd 0.5 unused)
    with open(tmp_path / "out" / "table.csv", newline="") as fh:
        assert {r["kid_subset_sd"] for r in csv.DictReader(fh)} == {"0.5"}


def test_the_footer_names_each_rows_training_precision():
    from types import SimpleNamespace

    from core.reporting import notes

    def row(precision):
        return SimpleNamespace(first=SimpleNamespace(m={"training_precision": precision}))

    same = {"A": row("bf16 autocast + TF32"), "B": row("bf16 autocast + TF32")}
    assert notes.precision_note(same) == "Training precision: bf16 autocast + TF32 (every row; metrics in fp32). "
    mixed = {"A": row("fp32"), "B": row("bf16 autocast + TF32"), "C": row(None)}
    assert notes.precision_note(mixed) == (
        "Training precision: fp32: A; bf16 autocast + TF32: B; not recorded: C (metrics in fp32). "
    )
