"""Start a stage on one or several processes: ``python -m core.launch --gpus G --nodes N <stage> <args …>``.

One process (G·N ≤ 1): ``python -m core.stages.<stage>``. One node, G > 1: ``torchrun --standalone
--nproc-per-node G``. Several nodes (inside a SLURM allocation): ``srun`` starts one ``torchrun`` per node with a
c10d rendezvous on the allocation's first node. The command is built as an argument list and replaces this process
(``exec``, no shell): no value reaches a shell, and signals (SLURM's SIGUSR1 before a time limit) and the exit status
(75 on preemption) are the stage's own.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

STAGES = (
    "make_dataset",
    "train_autoencoder",
    "encode_latents",
    "evaluate_autoencoder",
    "train",
    "sample",
    "train_classifier",
    "reference_stats",
    "evaluate",
    "collect_checkpoints",
    "report",
)
RDZV_PORT = 29500


def first_node(nodelist: str) -> str:
    """The first host of a SLURM node list (``scontrol show hostnames``)."""
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


def command(stage: str, args: list[str], gpus: int = 1, nodes: int = 1, env: dict[str, str] | None = None) -> list[str]:
    """The argument list that runs ``core.stages.<stage>`` with ``args`` on ``nodes`` × ``gpus`` processes."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")
    if gpus < 0 or nodes < 1:
        raise ValueError(f"gpus must be ≥ 0 and nodes ≥ 1, got gpus={gpus}, nodes={nodes}")
    module = ["-m", f"core.stages.{stage}", *args]
    if nodes <= 1 and gpus <= 1:
        return [sys.executable, *module]
    if nodes <= 1:
        return ["torchrun", "--standalone", "--nproc-per-node", str(gpus), *module]
    env = os.environ if env is None else env
    head = first_node(env["SLURM_JOB_NODELIST"])
    return [
        "srun",
        "--nodes",
        str(nodes),
        "--ntasks-per-node",
        "1",
        "torchrun",
        "--nnodes",
        str(nodes),
        "--nproc-per-node",
        str(gpus),
        "--rdzv-id",
        env["SLURM_JOB_ID"],
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"{head}:{RDZV_PORT}",
        *module,
    ]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpus", type=int, default=1, help="processes (GPUs) per node")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("stage", choices=STAGES)
    p.add_argument("args", nargs=argparse.REMAINDER, help="the stage's own arguments")
    a = p.parse_args(argv)
    cmd = command(a.stage, a.args, a.gpus, a.nodes)
    sys.stdout.flush()
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main()
