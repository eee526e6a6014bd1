"""Data-parallel training: one process per GPU (or per CPU slot with the gloo backend).

Processes are started by ``torchrun`` (one node: ``torchrun --standalone --nproc-per-node G -m core.stages.train …``;
several nodes under SLURM: ``srun`` starts one ``torchrun`` per node with a c10d rendezvous on the first
node, see ``launcher``). torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them training runs as one
process.

Equivalence with one process: every rank draws the same global batch order, timesteps and noise from
identically seeded generators and keeps its contiguous share of the global batch, and DDP averages the
gradients. The update therefore equals the one-process update with the same global batch, up to the
floating-point order of the gradient sum (dropout masks differ, since each rank draws its own).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def shard(self, global_batch: int) -> slice:
        """This rank's contiguous share of a global batch (which must divide evenly)."""
        if global_batch % self.world_size:
            raise ValueError(
                f"train.batch_size = {global_batch} (the global batch) is not divisible by the {self.world_size} "
                "data-parallel processes; change train.batch_size or the number of GPUs"
            )
        per = global_batch // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)


def init(device: torch.device) -> Context:
    """Join the process group torchrun set up (NCCL on CUDA, gloo on CPU); a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context()
    ctx = Context(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(ctx.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return ctx


def device_for(name: str) -> torch.device:
    """``auto``: this process's GPU (LOCAL_RANK) when CUDA is available, else the CPU."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def all_mean(ctx: Context, values: torch.Tensor) -> torch.Tensor:
    """The mean over ranks of a small tensor (the tensor itself for one process)."""
    if not ctx.enabled:
        return values
    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / ctx.world_size


def barrier(ctx: Context) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: Context) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def launcher(gpus: int, nodes: int = 1, port: int = 29500) -> str:
    """The command that starts ``-m core.stages.train`` on ``nodes`` × ``gpus`` processes (``python`` for one)."""
    if nodes <= 1 and gpus <= 1:
        return "python"
    if nodes <= 1:
        return f"torchrun --standalone --nproc-per-node {gpus}"
    head = '$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)'
    return (
        f"srun --nodes {nodes} --ntasks-per-node 1 torchrun --nnodes {nodes} --nproc-per-node {gpus} "
        f'--rdzv-id "$SLURM_JOB_ID" --rdzv-backend c10d --rdzv-endpoint {head}:{port}'
    )
