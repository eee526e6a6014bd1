"""``python -m core.forecast``: FLOP counts of every job at its real budget, priced per GPU type and precision, and
the jobs that do not fit the SLURM profile named first."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from core import costs, forecast, measured, paths, preflight, provenance
from core.plan import Plan
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def plan() -> Plan:
    return Plan(preflight.load_config([], []))


@pytest.mark.slow
def test_training_flops_per_image_agree_with_the_benchmarks_own_count(plan):
    """The Study A UNet and the reference DiT per training image, against bench/results-models-cpu.json (counted
    there by bench_models.py's own builder of the same layouts)."""
    bench = {r["model"]: r for r in json.loads((ROOT / "bench" / "results-models-cpu.json").read_text())["train"]}
    per_image, fwd, activations, params = forecast.train_costs(plan, "full-a", "unet", 0)
    assert params == bench["unet-a"]["params"] == 74_051_331
    assert per_image == pytest.approx(bench["unet-a"]["train_flops_per_image"], rel=1e-9)
    assert fwd == pytest.approx(per_image / 3, rel=0.01)  # the backward costs twice the forward
    assert 0.5e9 < activations < 1.5e9  # bytes an image saves for the backward: about 1 GB at 128² in fp32


def test_gpu_hours_are_flops_over_the_assumed_rate():
    job = forecast.price(forecast.Job("train", "x", flops=312e12 * forecast.MFU["bf16"] * 3600 * 10))
    assert job.hours["A100-80GB/bf16"] == pytest.approx(10.0)
    assert job.hours["H100-SXM/bf16"] == pytest.approx(10.0 * 312 / 989)
    assert job.hours["A100-80GB/fp32"] == pytest.approx(10.0 * 312 * 0.35 / (19.5 * 0.6))


def test_flags_name_the_job_and_the_setting_to_change(tmp_path):
    profile = tmp_path / "p.yaml"
    profile.write_text("jobs: 4\nretries: 1\nset-resources:\n  train: {runtime: 60}\n  evaluate: {runtime: 60}\n")
    limits = forecast.profile_limits(profile)
    long = forecast.price(forecast.Job("train", "s/m", flops=312e12 * 0.35 * 3600 * 3, train_mem_bytes=50e9))
    short = forecast.price(forecast.Job("train", "s/ok", flops=312e12 * 0.35 * 3600 * 1.5))
    evaluate = forecast.price(forecast.Job("evaluate", "s/e", flops=312e12 * 0.35 * 3600 * 1.5))
    flags = forecast.flags([long, short, evaluate], limits, "A100-40GB", "bf16")
    assert len(flags) == 3, flags
    assert flags[0].startswith("train s/m: 3.0 h") and "runtime 1 h × 2 attempt(s)" in flags[0]
    assert "set-resources.train.runtime" in flags[0]
    assert flags[1].startswith("train s/m: ~50 GB per GPU > 40 GB")
    assert flags[2].startswith("evaluate s/e: 1.5 h") and "× 1 attempt(s)" in flags[2]  # no resume: one attempt


@pytest.mark.slow
def test_the_full_study_forecast_fits_the_profile_and_adds_up(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "core.forecast", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    md = (tmp_path / "forecast.md").read_text()
    assert md.splitlines()[2].startswith("Every job fits profiles/slurm on A100-80GB in bf16")
    with open(tmp_path / "forecast.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    train = [r for r in rows if r["rule"] == "train"]
    assert len(train) == 13 and {r["job"] for r in train if r["gpus"] == "4"} == {"full-a/unet-ddim"}
    total = sum(float(r["gpu_hours:A100-80GB/bf16"]) * int(r["count"]) for r in rows)
    assert f"| A100-80GB | bf16 | {total:,.0f} |" in md


def _record(device: str, sections: dict, rss: float, **info) -> dict:
    return {
        "schema": costs.SCHEMA,
        "job": "train",
        "device": device,
        "device_name": "test device",
        "sections": sections,
        "peak_rss_bytes": rss,
        "cuda_peak_bytes": None,
        **info,
    }


def test_a_rehearsal_prices_the_real_budget_from_what_its_jobs_measured(tmp_path):
    """Issue 22: FLOPs = real image-units × the FLOPs per image-unit the rehearsal counted; time at the measured
    seconds per image-unit; memory from the measured activations at the real per-GPU batch; a GPU rehearsal's
    time is GPU-hours; host memory beyond the profile's is flagged with the setting to change."""
    root = tmp_path / "rehearsal"
    step = {"flops_per_image_unit": 2e12, "seconds_per_image_unit": 0.5, "activation_bytes_per_image": 1e9}
    rec = _record("cpu", {"step": step}, 40 * 2**30, parameters=10_000_000)
    provenance.write_json(paths.train_cost(str(root), "s", "m", 0), rec)
    job = forecast.Job("train", "s/m", flops=1.0, work={"step": (1000.0, 6e11)}, batch_per_gpu=32)
    other = forecast.Job("sample", "s/x", flops=5.0, work={"denoise": (10.0, 1e9)})
    assert measured.attach([job, other], str(root)) == ["sample s/x"]  # the jobs it found no record for
    assert job.flops == pytest.approx(1000 * 2e12) and other.flops == 5.0
    assert job.measured["forecast_seconds"] == pytest.approx(500.0)
    assert job.train_mem_bytes == pytest.approx(20 * 10_000_000 + 1e9 * 32)
    assert measured.measured_hours(job) is None  # a CPU's time is not a GPU's
    forecast.price(job)
    assert job.hours["A100-80GB/bf16"] == pytest.approx(2e15 / (312e12 * forecast.MFU["bf16"]) / 3600)
    limits = forecast.profile_limits()
    flags = measured.memory_flags([job], limits)  # 40 GiB measured > 8 CPUs × 4000 MB for train
    assert len(flags) == 1 and "set-resources.train.mem_mb" in flags[0] and "40.0 GiB" in flags[0]
    gpu = forecast.Job("train", "s/m", flops=1.0, work={"step": (1000.0, 6e11)}, batch_per_gpu=32)
    provenance.write_json(paths.train_cost(str(root), "s", "m", 0), {**rec, "device": "cuda", "peak_rss_bytes": 1})
    measured.attach([gpu], str(root))
    assert measured.measured_hours(gpu) == pytest.approx(500.0 / 3600) and not measured.memory_flags([gpu], limits)
