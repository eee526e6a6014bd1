"""Data-parallel training: one process per GPU (or per CPU slot with the gloo backend).

Processes are started by ``torchrun`` (one node: ``torchrun --standalone --nproc-per-node G -m core.stages.train …``;
several nodes under SLURM: ``srun`` starts one ``torchrun`` per node with a c10d rendezvous on the first
node, see ``core.launch``). torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them training runs as one
process.

Equivalence with one process: every rank draws the same global batch order, timesteps and noise from
identically seeded generators and keeps its contiguous share of the global batch, and DDP averages the
gradients. The update therefore equals the one-process update with the same global batch, up to the
floating-point order of the gradient sum. What each rank draws on its own (dropout masks: torch's global
RNG) comes from a stream of its own (``seed_rank``): rank 0 continues the base stream, so a one-process run is
unchanged, and the other ranks never repeat its masks.

Device: ``device_for`` refuses ``auto`` on a job that was given GPUs (SLURM's GPU variables or
``CUDA_VISIBLE_DEVICES``) when torch sees none (a CPU build of torch on a GPU node would otherwise train for
days on the CPU). ``DIFFUSION_STUDY_DEVICE`` (auto | cpu | cuda) overrides ``auto``: CI sets ``cpu`` where SLURM
hands out emulated GPUs.

Hangs: the process group has a timeout (``COLLECTIVE_TIMEOUT_S``, or the stage's ``--collective-timeout``): a
collective or barrier that waits longer because a rank died or hung raises ``CollectiveTimeout`` naming this
rank, the operation and, at barriers (``monitored_barrier`` on a gloo group), the ranks that did not arrive; the
process exits non-zero and torchrun ends the others.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

DEVICE_ENV = "DIFFUSION_STUDY_DEVICE"
DEVICES = ("auto", "cpu", "cuda")
COLLECTIVE_TIMEOUT_S = 1800  # the default of every stage's --collective-timeout
GPU_ENV = ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_GPUS_ON_NODE", "SLURM_GPUS", "CUDA_VISIBLE_DEVICES")


class CollectiveTimeout(RuntimeError):
    """A collective or barrier waited longer than the process group's timeout: another rank died or hung."""


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    timeout_s: float = COLLECTIVE_TIMEOUT_S
    monitor: Any = field(default=None, compare=False, repr=False)  # a gloo group for monitored barriers

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


def init(device: torch.device, timeout_s: float = COLLECTIVE_TIMEOUT_S) -> Context:
    """Join the process group torchrun set up (NCCL on CUDA, gloo on CPU) with a timeout of ``timeout_s`` on every
    collective; a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context()
    if timeout_s <= 0:
        raise ValueError(f"the collective timeout must be > 0 seconds, got {timeout_s}")
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local)
    timeout = dt.timedelta(seconds=timeout_s)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    monitor = dist.new_group(backend="gloo", timeout=timeout)  # its own connections: usable after a failed collective
    ctx = Context(rank, world, local, timeout_s, monitor)
    if ctx.is_main:
        print(
            f"[distributed] {world} processes, backend {dist.get_backend()}, collective timeout {timeout_s:g}s",
            flush=True,
        )
    return ctx


def gpus_allocated(env: dict[str, str] | None = None) -> str | None:
    """The variable that says this job was given GPUs, as ``NAME=value``: a GPU count above 0
    (``SLURM_GPUS_ON_NODE``, ``SLURM_GPUS``) or a list of devices (``SLURM_JOB_GPUS``, ``SLURM_STEP_GPUS``,
    ``CUDA_VISIBLE_DEVICES``; ``-1``/``NoDevFiles``, which hide every GPU, do not count); None when none does."""
    env = os.environ if env is None else env
    for name in GPU_ENV:
        value = env.get(name, "").strip()
        count = name in ("SLURM_GPUS_ON_NODE", "SLURM_GPUS")
        if count and value.isdigit() and int(value) > 0:
            return f"{name}={value}"
        if not count and value and value not in ("-1", "NoDevFiles"):
            return f"{name}={value}"
    return None


def device_for(name: str, env: dict[str, str] | None = None) -> torch.device:
    """The device of this process. ``auto`` (overridden by ``DIFFUSION_STUDY_DEVICE``): this process's GPU
    (LOCAL_RANK) when CUDA is usable; the CPU when the job was given no GPU; an error when it was given GPUs that
    torch cannot see (a CPU build of torch, or a driver problem), naming the build and the variables."""
    env = os.environ if env is None else env
    if name == "auto":
        name = env.get(DEVICE_ENV, "auto").strip() or "auto"
        if name not in DEVICES:
            raise ValueError(f"{DEVICE_ENV}={name!r}: expected one of {', '.join(DEVICES)}")
    if name != "auto":
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} asked for, but {cuda_diagnosis(env)}")
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(env.get("LOCAL_RANK", "0")))
    given = gpus_allocated(env)
    if given:
        raise RuntimeError(
            f"this job was given GPUs ({given}) but {cuda_diagnosis(env)}. Install a CUDA build of torch in the "
            f"job's environment (README: GPU install), or set {DEVICE_ENV}=cpu to run on the CPU on purpose"
        )
    return torch.device("cpu")


def cuda_diagnosis(env: dict[str, str] | None = None) -> str:
    """Why torch sees no GPU, in words: the torch build and CUDA_VISIBLE_DEVICES."""
    env = os.environ if env is None else env
    build = f"torch {torch.__version__} " + (
        f"(CUDA {torch.version.cuda} build)" if torch.version.cuda else "(a CPU-only build: torch.version.cuda is None)"
    )
    visible = env.get("CUDA_VISIBLE_DEVICES", "<unset>")
    return f"torch cannot use CUDA: {build}, CUDA_VISIBLE_DEVICES={visible}, torch.cuda.device_count()=" + str(
        torch.cuda.device_count()
    )


def seed_rank(ctx: Context, seed: int) -> None:
    """Give this rank's own draws (dropout: torch's global CPU and CUDA generators) a stream of their own. Rank 0
    keeps the stream of ``torch.manual_seed(seed)`` (a one-process run is unchanged); rank r > 0 is seeded from a
    hash of (seed, r). Call after the model is built (its initial weights come from the shared seed)."""
    if ctx.rank == 0:
        return
    torch.manual_seed(rank_seed(seed, ctx.rank))


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s own stream (rank 0: ``seed`` itself)."""
    if rank == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}/rank{rank}".encode()).digest()[:8], "little") & ((1 << 63) - 1)


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__


def _missing_ranks(ctx: Context) -> str:
    """After a failed collective: which ranks do not answer a short monitored barrier (rank 0 learns it)."""
    try:
        timeout = dt.timedelta(seconds=min(ctx.timeout_s, 60))
        dist.monitored_barrier(group=ctx.monitor, timeout=timeout, wait_all_ranks=True)
    except (RuntimeError, dist.DistError) as err:
        return f"; then {_first_line(err)}"
    return ""


def _timed_out(ctx: Context, what: str, err: BaseException, probe: bool = True) -> CollectiveTimeout:
    first = _first_line(err) + (_missing_ranks(ctx) if probe else "")
    return CollectiveTimeout(
        f"rank {ctx.rank} of {ctx.world_size}: {what} failed (collective timeout {ctx.timeout_s:g}s; a rank that "
        f"died or hung stops the others here): {first}"
    )


def all_mean(ctx: Context, values: torch.Tensor, what: str = "the step's all-reduce") -> torch.Tensor:
    """The mean over ranks of a small tensor (the tensor itself for one process)."""
    if not ctx.enabled:
        return values
    out = values.detach().clone()
    try:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    except (RuntimeError, dist.DistError) as err:
        raise _timed_out(ctx, what, err) from err
    return out / ctx.world_size


def all_gather(ctx: Context, obj: Any, what: str = "gathering the ranks' states") -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order (``[obj]`` for one process)."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    try:
        dist.all_gather_object(out, obj)
    except (RuntimeError, dist.DistError) as err:
        raise _timed_out(ctx, what, err) from err
    return out


def barrier(ctx: Context, what: str = "a barrier") -> None:
    """Wait for every rank; past the timeout, ``CollectiveTimeout`` — on rank 0 naming the ranks that did not
    arrive (``monitored_barrier``, gloo)."""
    if not ctx.enabled:
        return
    try:
        dist.monitored_barrier(group=ctx.monitor, timeout=dt.timedelta(seconds=ctx.timeout_s), wait_all_ranks=True)
    except (RuntimeError, dist.DistError) as err:
        raise _timed_out(ctx, what, err, probe=False) from err


def shutdown(ctx: Context) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
