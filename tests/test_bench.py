"""The benchmark scripts run (tiny settings) and write the JSON that bench/RESULTS.md quotes; the loader
benchmark's stand-in for the former streaming read returns the same batches as today's buffered read, and the memory
benchmark's memory-map alternative the same rows as the loader's reads."""

import importlib.util
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from core import data
from tests.conftest import ROOT


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_buffered_streaming_returns_the_former_row_reads_batches(tmp_path):
    """Same generator, same order: the buffered read (whole chunks per shuffle buffer) and the former read of
    scattered rows give identical batches, so the benchmark compares two ways of reading the same data."""
    path = tmp_path / "d.h5"
    images = np.random.default_rng(0).integers(0, 256, (97, 4, 4, 3), dtype=np.uint8)
    with h5py.File(path, "w") as f:
        f.create_dataset("train/images", data=images, chunks=(6, 4, 4, 3))
        f.create_dataset("train/labels", data=np.arange(97, dtype=np.int64))
        data.write_root_attrs(f, "dataset", 4, [], {})
    bench = load_script("bench_loader")
    new = data.ImageBatches(path, "train", 9, torch.Generator().manual_seed(2), 0, buffer_chunks=3)
    old = bench.RowReads(path, "train", 9, torch.Generator().manual_seed(2), 0, buffer_chunks=3)
    for _ in range(40):  # about four epochs
        (a, la), (b, lb) = new.next(), old.next()
        assert np.array_equal(a, b) and np.array_equal(la, lb) and np.array_equal(a, images[la])
    new.close()
    old.close()


@pytest.mark.slow
def test_bench_loader_writes_its_table(tmp_path):
    out = tmp_path / "loader.json"
    args = ["--images", "128", "--size", "16", "--batch", "8", "--batches", "2", "--train-images", "256"]
    args += ["--train-size", "8", "--train-batch", "4", "--steps", "1", "--rounds", "1", "--device", "cpu"]
    args += ["--latent-batch", "1", "--latent-reps", "1"]
    subprocess.run([sys.executable, "bench/bench_loader.py", *args, "--out", str(out)], cwd=ROOT, check=True)
    result = json.loads(out.read_text())
    assert set(result["reading"]) == set(load_script("bench_loader").LOADERS)
    assert len(result["training"]) == 6 and result["versions"]["torch"] == torch.__version__
    for row in result["training"].values():
        assert 0 <= row["input_share"] < 1 and row["images_per_s"] > 0
    latent = result["latent_input"]
    assert latent["encoder_parameters"] > 20e6 and latent["encode_ms_per_batch"] > latent["cache_ms_per_batch"] > 0


@pytest.mark.slow
def test_bench_models_quick_writes_ours_and_the_levers(tmp_path):
    out = tmp_path / "models.json"
    cmd = [sys.executable, "bench/bench_models.py", "--quick", "--wait-quiet", "0", "--parts", "train"]
    subprocess.run([*cmd, "--models", "unet-demo,dit-b2", "--out", str(out)], cwd=ROOT, check=True)
    result = json.loads(out.read_text())
    assert {r["model"] for r in result["train"]} == {"unet-demo", "dit-b2"}
    assert all(r["images_per_s"] > 0 and r["train_flops_per_image"] > 0 for r in result["train"])
    assert {r["lever"] for r in result["levers"]} >= {"bf16"}


@pytest.mark.slow
def test_gpu_check_dry_run_on_the_cpu_runs_every_step_and_records_each_at_once(tmp_path):
    """bench/gpu_check.sh with GPU_CHECK_DEVICE=cpu: the same six steps at tiny sizes, each finished step in
    steps.tsv with exit 0 within its limit, the critical checks first, and the real-shape step's rows (fp32 and the
    presets' bf16) in their JSON, so that the script a first GPU session relies on cannot rot unseen."""
    out = tmp_path / "gpu-out"
    env = {**os.environ, "GPU_CHECK_DEVICE": "cpu", "OUT": str(out)}
    subprocess.run(["bash", "bench/gpu_check.sh"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=900)
    rows = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines()[1:]]
    assert [r[0].split(":")[0] for r in rows] == [
        "critical",
        "real shapes",
        "torch.compile, timed apart",
        "peers and MFU",
        "input pipeline",
        "Inception on cpu equals the CPU",
    ]
    assert all(r[1] == "0" and int(r[2]) <= int(r[3]) for r in rows), rows
    assert sum(int(r[3]) for r in rows) == 10 * 340  # the GPU limits add up to 340 s (x10 on the CPU)
    shapes = json.loads((out / "results-models-gpu-shapes.json").read_text())
    assert {r["levers"] for r in shapes["train"]} == {"baseline (fp32)"} and shapes["train"]
    assert {r["levers"] for r in shapes["levers"]} == {"bf16"}
    assert all(r["median_step_s"] > 0 and r["peak_mem_mib"] > 0 for r in shapes["train"] + shapes["levers"])
    assert 'failures="0"' in (out / "critical.xml").read_text()


def test_memory_benchmarks_mapped_rows_are_the_loaders_rows(tmp_path):
    """The memory benchmark's memory-map alternative gathers the same rows as the loader's reads, for chunks in
    and out of row order, so that it compares two ways of reading the same data."""
    path = tmp_path / "d.h5"
    images = np.random.default_rng(0).integers(0, 256, (97, 4, 4, 3), dtype=np.uint8)
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("train/images", shape=images.shape, dtype=np.uint8, chunks=(6, 4, 4, 3))
        for a in reversed(range(0, 97, 6)):
            ds[a : a + 6] = images[a : a + 6]
        f.create_dataset("train/labels", data=np.arange(97, dtype=np.int64))
        data.write_root_attrs(f, "dataset", 4, [], {})
    loader = data.ImageBatches(path, "train", 9, torch.Generator())
    mapped = load_script("bench_data_memory").MappedRows(loader.rows_file)
    idx = np.random.default_rng(1).permutation(97)
    assert np.array_equal(mapped.gather(idx), images[idx]) and np.array_equal(loader.rows_file.gather(idx), images[idx])
    del mapped
    loader.close()


@pytest.mark.slow
def test_bench_data_memory_writes_its_ranks(tmp_path):
    out, standin = tmp_path / "memory.json", tmp_path / "standin.h5"
    args = [
        "--images",
        "300",
        "--val-images",
        "20",
        "--size",
        "16",
        "--batch",
        "8",
        "--batches",
        "3",
        "--procs",
        "1",
        "2",
    ]
    cmd = [sys.executable, "bench/bench_data_memory.py", *args, "--data", str(standin), "--out", str(out)]
    subprocess.run(cmd, cwd=ROOT, check=True)
    result = json.loads(out.read_text())
    assert [(s["variant"], s["processes"]) for s in result["settings_run"]] == [
        (v, n) for n in (1, 2) for v in ("old", "new", "mmap")
    ]
    for setting in result["settings_run"]:
        ranks = setting["ranks"]
        assert [r["rows_per_batch"] for r in ranks] == [8 // len(ranks)] * len(ranks)
        assert all(r["rows_read_from_file"] == (setting["variant"] != "old") for r in ranks)
        assert all(r["peak_rss_gib"] >= r["peak_anon_gib"] > 0 and r["batches_per_s"] > 0 for r in ranks)
    val = result["validation"]
    # the validation batch as stored: uint8 images, int64 labels and timesteps (no float copies of images or noise)
    assert val["images"] == 20 and val["tensors_gib"] == pytest.approx((20 * 3 * 16 * 16 + 2 * 20 * 8) / 2**30)
    assert not standin.exists()  # the stand-in is deleted unless --keep
