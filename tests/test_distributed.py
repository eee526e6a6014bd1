"""The process group's guards, with real gloo processes on the CPU: a hung rank ends the others with an error
that names the ranks; every rank draws its own dropout stream; the device check refuses a GPU job that torch
cannot serve (issue 21, defects 4, 6 and 8)."""

from __future__ import annotations

import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

from core import distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank: int, world: int, port: int, timeout_s: float) -> distributed.Context:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    return distributed.init(torch.device("cpu"), timeout_s=timeout_s)


def _hang_worker(rank: int, port: int, what: str, results) -> None:
    ctx = _join(rank, 2, port, timeout_s=3)
    try:
        if rank == 1:
            time.sleep(12)  # hung: never reaches the collective in time
            results[rank] = "slept"
            return
        t0 = time.time()
        try:
            if what == "barrier":
                distributed.barrier(ctx, "the checkpoint barrier")
            else:
                distributed.all_mean(ctx, torch.ones(3))
            results[rank] = "no error"
        except distributed.CollectiveTimeout as err:
            results[rank] = f"{time.time() - t0:.1f}|{err}"
    finally:
        os._exit(0)  # a hung peer would block a clean shutdown of the group


@pytest.mark.slow
@pytest.mark.parametrize("what", ["barrier", "all_reduce"])
def test_a_hung_rank_ends_the_others_with_an_error_naming_the_ranks(what):
    results = mp.Manager().dict()
    mp.start_processes(_hang_worker, args=(_free_port(), what, results), nprocs=2, start_method="spawn", join=True)
    seconds, message = results[0].split("|", 1)
    assert float(seconds) < 10, "rank 0 waited for the hung rank well past the 3 s timeout"
    assert message.startswith("rank 0 of 2: ")
    assert ("the checkpoint barrier" if what == "barrier" else "the step's all-reduce") in message
    assert "collective timeout 3s" in message
    assert "Ranks 1 failed to pass monitoredBarrier" in message, message  # the hung rank, by number


def _seed_worker(rank: int, port: int, results) -> None:
    ctx = _join(rank, 2, port, timeout_s=30)
    torch.manual_seed(7)
    weights = torch.randn(4)  # the shared initialisation
    distributed.seed_rank(ctx, 7)
    results[rank] = (weights, torch.rand(8), torch.nn.functional.dropout(torch.ones(16), 0.5))
    distributed.shutdown(ctx)


@pytest.mark.slow
def test_each_rank_draws_its_own_dropout_masks_from_the_same_initial_weights():
    results = mp.Manager().dict()
    mp.start_processes(_seed_worker, args=(_free_port(), results), nprocs=2, start_method="spawn", join=True)
    (w0, r0, d0), (w1, r1, d1) = results[0], results[1]
    assert torch.equal(w0, w1)  # the model's initial weights come from the shared seed
    assert not torch.equal(r0, r1) and not torch.equal(d0, d1)
    torch.manual_seed(7)
    torch.randn(4)
    assert torch.equal(torch.rand(8), r0)  # rank 0 continues the base stream: one process is unchanged
    assert distributed.rank_seed(7, 0) == 7 and distributed.rank_seed(7, 1) != distributed.rank_seed(7, 2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine where torch sees no GPU")
@pytest.mark.parametrize(
    "env",
    [
        {"SLURM_JOB_GPUS": "0,1"},
        {"SLURM_GPUS_ON_NODE": "2"},
        {"CUDA_VISIBLE_DEVICES": "0"},
        {"SLURM_STEP_GPUS": "3"},
    ],
)
def test_a_job_given_gpus_refuses_to_run_on_the_cpu(env):
    with pytest.raises(RuntimeError) as err:
        distributed.device_for("auto", env)
    message = str(err.value)
    assert next(iter(env)) in message and f"torch {torch.__version__}" in message
    assert "CUDA_VISIBLE_DEVICES=" in message and "DIFFUSION_STUDY_DEVICE=cpu" in message
    # on purpose: the override runs it on the CPU (CI's emulated GPUs)
    assert distributed.device_for("auto", {**env, "DIFFUSION_STUDY_DEVICE": "cpu"}) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine where torch sees no GPU")
def test_a_job_without_gpus_runs_on_the_cpu_and_bad_overrides_are_named():
    assert distributed.device_for("auto", {}) == torch.device("cpu")
    assert distributed.device_for("auto", {"CUDA_VISIBLE_DEVICES": "-1", "SLURM_GPUS_ON_NODE": "0"}).type == "cpu"
    with pytest.raises(ValueError, match="DIFFUSION_STUDY_DEVICE='gpu'"):
        distributed.device_for("auto", {"DIFFUSION_STUDY_DEVICE": "gpu"})
    with pytest.raises(RuntimeError, match="CPU-only build"):
        distributed.device_for("auto", {"DIFFUSION_STUDY_DEVICE": "cuda"})
