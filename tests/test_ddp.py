"""Data-parallel training on CPU: 2 gloo processes under torchrun follow the 1-process run with the same global
batch (same data order, timesteps and noise; gradients averaged), up to float summation order."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from core import launch
from core.distributed import Context
from tests.conftest import ROOT, sample_spec

pytestmark = pytest.mark.slow


def _train(spec: dict, data: str, out: str, nproc: int) -> None:
    head = [sys.executable, "-m", "core.stages.train"]
    if nproc > 1:
        torchrun = shutil.which("torchrun") or pytest.skip("torchrun is not on PATH")
        head = [torchrun, "--standalone", "--nproc-per-node", str(nproc), "-m", "core.stages.train"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    subprocess.run(
        [*head, "--spec", json.dumps(spec), "--data", data, "--out-dir", out, "--device", "cpu", "--threads", "1"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )


def _losses(out) -> list[float]:
    with open(out / "train_log.csv", newline="") as fh:
        return [float(r["loss"]) for r in csv.DictReader(fh)]


def test_two_gloo_processes_follow_the_one_process_run(tiny_spec, tiny_dataset, tmp_path):
    spec = {**tiny_spec, "net": {**tiny_spec["net"], "dropout": 0.0}}  # dropout masks are drawn per rank
    spec["train"] = {**spec["train"], "steps": 8, "checkpoint_every": 4, "batch_size": 8}
    _train(spec, str(tiny_dataset), str(tmp_path / "one"), 1)
    _train(spec, str(tiny_dataset), str(tmp_path / "two"), 2)
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 8
    assert two == pytest.approx(one, rel=1e-4, abs=1e-6)
    a = torch.load(tmp_path / "one" / "ckpt" / "step0000008.pt", weights_only=False)
    b = torch.load(tmp_path / "two" / "ckpt" / "step0000008.pt", weights_only=False)
    assert b["meta"]["world_size"] == 2 and a["meta"]["world_size"] == 1
    for key, value in a["ema"]["model"].items():
        torch.testing.assert_close(b["ema"]["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    # the data-parallel run really trained: its weights moved between the two checkpoints
    mid = torch.load(tmp_path / "two" / "ckpt" / "step0000004.pt", weights_only=False)
    assert any(not torch.equal(mid["model"][k], v) for k, v in b["model"].items())


def test_two_gloo_processes_resume_bit_identically_with_their_own_dropout(tiny_spec, tiny_dataset, tmp_path):
    """Each rank draws its own dropout masks (issue 21, defect 8) and the checkpoint keeps every rank's stream, so a
    2-process run rolled back to step 4 and resumed ends with the uninterrupted run's weights, bit for bit."""
    spec = {**tiny_spec, "net": {**tiny_spec["net"], "dropout": 0.3}}
    spec["train"] = {**spec["train"], "steps": 8, "checkpoint_every": 4, "batch_size": 8}
    _train(spec, str(tiny_dataset), str(tmp_path / "full"), 2)
    part = tmp_path / "part"
    _train(spec, str(tiny_dataset), str(part), 2)
    ckpt = torch.load(part / "state" / "step0000004.pt", weights_only=False)
    ranks = ckpt["rng"]["ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["torch"], ranks[1]["torch"])
    shutil.copyfile(part / "state" / "step0000004.pt", part / "state" / "latest.pt")
    shutil.rmtree(part / "ckpt")
    _train(spec, str(tiny_dataset), str(part), 2)
    a = torch.load(tmp_path / "full" / "ckpt" / "step0000008.pt", weights_only=False)
    b = torch.load(part / "ckpt" / "step0000008.pt", weights_only=False)
    for key in ("model",):
        for k, v in a[key].items():
            assert torch.equal(b[key][k], v), k
    for k, v in a["ema"]["model"].items():
        assert torch.equal(b["ema"]["model"][k], v), k


def test_two_gloo_processes_stop_early_together_at_the_one_process_step(tiny_spec, tiny_dataset, tmp_path):
    early = {"every": 2, "patience": 1, "num_images": 16, "min_delta": 10.0, "weights": "ema"}  # stops at step 4
    spec = {**tiny_spec, "net": {**tiny_spec["net"], "dropout": 0.0}}
    spec["train"] = {**spec["train"], "batch_size": 8, "early_stopping": early}
    _train(spec, str(tiny_dataset), str(tmp_path / "one"), 1)
    _train(spec, str(tiny_dataset), str(tmp_path / "two"), 2)  # a rank that ran on would hang its collectives
    val_losses = {}
    for run in ("one", "two"):
        with open(tmp_path / run / "val_log.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert [int(r["step"]) for r in rows] == [2, 4]
        val_losses[run] = [float(r["val_loss"]) for r in rows]
    # each rank evaluates half of the validation images; the mean over both is the one-process loss
    assert val_losses["two"] == pytest.approx(val_losses["one"], rel=1e-4)
    for run in ("one", "two"):
        assert len(_losses(tmp_path / run)) == 4
        assert torch.load(tmp_path / run / "ckpt" / "best.pt", weights_only=False)["step"] == 2


def test_shard_and_launcher(monkeypatch):
    assert [Context(r, 2).shard(8) for r in range(2)] == [slice(0, 4), slice(4, 8)]
    with pytest.raises(ValueError, match=r"train.batch_size = 9 .* not divisible by the 2"):
        Context(0, 2).shard(9)
    assert launch.command("train", ["--x", "a b"]) == [sys.executable, "-m", "core.stages.train", "--x", "a b"]
    assert launch.command("sample", [], gpus=4)[:4] == ["torchrun", "--standalone", "--nproc-per-node", "4"]
    monkeypatch.setattr(launch, "job_nodes", lambda env: ["n1", "n2"])
    monkeypatch.setattr(launch, "node_address", lambda node: node)
    multi = launch.command(
        "train", ["--spec", "$(touch x)"], 4, 2, {"SLURM_JOB_NODELIST": "n1,n2", "SLURM_JOB_ID": "7"}
    )
    assert multi[:2] == ["srun", "--overlap"] and "--node-agent" in multi  # tests/test_launch.py: the full form
    per_node = launch.agent_command(
        "train", ["--spec", "$(touch x)"], 4, 2, {"SLURM_JOB_NODELIST": "n1,n2", "SLURM_JOB_ID": "7"}
    )
    assert per_node[9:11] == ["--rdzv-endpoint", "n1:29500"]
    assert multi[-2:] == per_node[-2:] == ["--spec", "$(touch x)"]  # arguments stay arguments: no shell sees them
    with pytest.raises(ValueError, match="unknown stage"):
        launch.command("rm -rf /", [])


def _run_module(module: str, args: list[str], nproc: int) -> None:
    head = [sys.executable, "-m", module]
    if nproc > 1:
        torchrun = shutil.which("torchrun") or pytest.skip("torchrun is not on PATH")
        head = [torchrun, "--standalone", "--nproc-per-node", str(nproc), "-m", module]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([*head, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_sampling_and_feature_extraction_split_across_two_processes(tiny_spec, tiny_dataset, tmp_path):
    """Two ranks draw alternate batches into shards and the main rank assembles the same file one process
    writes; two ranks extract halves of the features and gather the same statistics."""
    import h5py
    import numpy as np

    from core.stages.train import run as train
    from core.stages.train_classifier import run as train_classifier

    spec = {**tiny_spec, "train": {**tiny_spec["train"], "steps": 4, "checkpoint_every": 4}}
    train(spec, str(tiny_dataset), str(tmp_path / "m"), "cpu")
    ckpt = str(tmp_path / "m" / "ckpt" / "step0000004.pt")
    spec_s = sample_spec(
        {
            "model": "m",
            "sampler": {"name": "ddim", "steps": 4},
            "guidance_scale": 2.0,
            "num_samples": 10,
            "batch_size": 3,  # 4 batches, the last one short: rank 0 draws 0 and 2, rank 1 draws 1 and 3
            "seed": 1,
            "trajectory_images": 2,
            "trajectory_points": 3,
        },
        experiment="x",
    )
    files = {}
    for nproc in (1, 2):
        out = tmp_path / f"s{nproc}.h5"
        _run_module(
            "core.stages.sample", ["--checkpoint", ckpt, "--spec", json.dumps(spec_s), "--out", str(out)], nproc
        )
        files[nproc] = out
    with h5py.File(files[1], "r") as a, h5py.File(files[2], "r") as b:
        assert b.attrs["complete"] and b.attrs["num_done"] == 10
        np.testing.assert_array_equal(a["samples/images"][:], b["samples/images"][:])
        np.testing.assert_array_equal(a["samples/labels"][:], b["samples/labels"][:])
        np.testing.assert_array_equal(a["trajectory/images"][:], b["trajectory/images"][:])
    # the shards are gone; what is left is the file and the main rank's record of its cost
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("s2.h5")) == ["s2.h5", "s2.h5.cost.json"]

    weights = tmp_path / "clf.pt"
    train_classifier(
        str(tiny_dataset), {"width": 8, "depth": 1, "steps": 5, "batch_size": 16, "lr": 0.003, "seed": 0}, str(weights)
    )
    extractor = json.dumps({"kind": "classifier", "weights": str(weights)})
    stats = {}
    for nproc in (1, 2):
        out = tmp_path / f"ref{nproc}.npz"
        args = ["--data", str(tiny_dataset), "--split", "val", "--num-images", "0", "--extractor", extractor]
        _run_module("core.stages.reference_stats", [*args, "--batch-size", "7", "--out", str(out)], nproc)
        with np.load(out) as z:
            stats[nproc] = {k: z[k] for k in ("features", "logits", "mu", "sigma")}
    assert stats[2]["features"].shape == (32, stats[1]["features"].shape[1])
    for key in stats[1]:
        np.testing.assert_allclose(stats[2][key], stats[1][key], rtol=1e-6, atol=1e-9, err_msg=key)
