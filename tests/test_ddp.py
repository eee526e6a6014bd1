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

from core.distributed import Context, launcher
from tests.conftest import ROOT


def _train(spec: dict, data: str, out: str, nproc: int) -> None:
    head = [sys.executable, "-m", "core.train"]
    if nproc > 1:
        torchrun = shutil.which("torchrun") or pytest.skip("torchrun is not on PATH")
        head = [torchrun, "--standalone", "--nproc-per-node", str(nproc), "-m", "core.train"]
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


def test_shard_and_launcher():
    assert [Context(r, 2).shard(8) for r in range(2)] == [slice(0, 4), slice(4, 8)]
    with pytest.raises(ValueError, match=r"train.batch_size = 9 .* not divisible by the 2"):
        Context(0, 2).shard(9)
    assert launcher(1) == "python"
    assert launcher(4) == "torchrun --standalone --nproc-per-node 4"
    multi = launcher(4, nodes=2)
    assert multi.startswith("srun --nodes 2 --ntasks-per-node 1 torchrun --nnodes 2 --nproc-per-node 4")
    assert "--rdzv-backend c10d" in multi
