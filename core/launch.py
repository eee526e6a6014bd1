"""Start a stage on one or several processes: ``python -m core.launch --gpus G --nodes N <stage> <args …>``.

One process (G·N ≤ 1): ``python -m core.stages.<stage>``, which replaces this process (``exec``): SLURM's SIGUSR1
before a time limit, SIGTERM and the exit status (75 on preemption) are the stage's own.

One node, G > 1: ``torchrun --standalone --nproc-per-node G``. torchrun's agent has no SIGUSR1 handler (it would
die of it, leaving its workers), so this process stays as a small supervisor: it starts torchrun in a new process
group with SIGUSR1 ignored (the workers install their own handler, core.stages.train's Preemption), forwards
SIGUSR1 and SIGTERM as SIGUSR1 (a SIGTERM would make the agent tear its workers down instead of letting them
checkpoint) to that group and to every process below torchrun (its workers run in sessions of their own), and exits
75 when it forwarded a signal and torchrun then failed (the workers exited 75).

Several nodes (inside a SLURM allocation): ``srun --overlap`` (a step nested in the job step the SLURM executor
started, sharing its CPUs and GPUs) starts one node agent per node, ``python -m core.launch --node-agent``, which
supervises one ``torchrun`` per node as above with a c10d rendezvous on the allocation's first node. srun
forwards SIGUSR1/SIGTERM to the agents (and SLURM signals every process of the step anyway).

Inside a SLURM job step the allocation is checked before anything starts: GPUs on this node
(``SLURM_GPUS_ON_NODE``) must equal ``--gpus`` and the job's nodes (``scontrol show job``) ``--nodes``. Commands are
argument lists: no value reaches a shell. Planning code imports this module (gpu_gres, cpus_per_node): no torch.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping

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
    "score_selected",
    "collect_checkpoints",
    "report",
)
RDZV_PORT = 29500
PREEMPTED = 75  # the stages' exit status after checkpointing on SIGUSR1/SIGTERM
FORWARDED = (signal.SIGUSR1, signal.SIGTERM)


class AllocationMismatch(RuntimeError):
    """The SLURM allocation this process runs in is not what ``--gpus``/``--nodes`` ask for."""


def gpu_gres(gpus: int) -> str:
    """The rules' ``gres`` resource for ``gpus`` GPUs per node (the SLURM plugin's ``--gres``, a per-node request);
    empty (no GPU request) for a CPU job."""
    if gpus < 0:
        raise ValueError(f"gpus must be ≥ 0, got {gpus}")
    return f"gpu:{gpus}" if gpus else ""


def cpus_per_node(threads: int, gpus: int) -> int:
    """CPUs a job asks for on each node: ``threads`` per process, one process per GPU (one for a CPU job)."""
    return max(1, threads) * max(1, gpus)


def check_allocation(gpus: int, nodes: int, env: Mapping[str, str]) -> None:
    """Inside a SLURM job step, fail unless it has ``gpus`` GPUs on this node and ``nodes`` nodes; else do nothing."""
    if "SLURM_JOB_ID" not in env or "SLURM_STEP_ID" not in env:
        return
    seen_nodes = len(job_nodes(env))
    seen_gpus = int(env.get("SLURM_GPUS_ON_NODE") or 0)
    problems = []
    if seen_gpus != gpus:
        problems.append(
            f"--gpus {gpus} (GPUs per node) but SLURM_GPUS_ON_NODE={env.get('SLURM_GPUS_ON_NODE', '(unset: no GPUs)')}"
        )
    if seen_nodes != nodes:
        problems.append(
            f"--nodes {nodes} but the job has {seen_nodes} node(s) (scontrol show job {env['SLURM_JOB_ID']})"
        )
    if problems:
        raise AllocationMismatch(
            f"core.launch: SLURM job {env['SLURM_JOB_ID']} does not have the allocation this launch needs: "
            + "; ".join(problems)
            + " (the rule's resources — gres, nodes — and the model's `resources: {gpus, nodes}` must agree)"
        )


def hostnames(nodelist: str) -> list[str]:
    """The hosts of a SLURM node list (``scontrol show hostnames``)."""
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    return out.stdout.split()


def job_nodes(env: Mapping[str, str]) -> list[str]:
    """The hosts of the job ``SLURM_JOB_ID`` (``scontrol show job``): inside the SLURM executor's job step the
    environment describes the step (one node), not the job."""
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", env["SLURM_JOB_ID"]], capture_output=True, text=True, check=True
    )
    for field in out.stdout.split():
        if field.startswith("NodeList="):
            return hostnames(field.removeprefix("NodeList="))
    raise RuntimeError(f"scontrol show job {env['SLURM_JOB_ID']} gives no NodeList: {out.stdout.strip()}")


def node_address(node: str) -> str:
    """The address SLURM reaches ``node`` at (its ``NodeAddr``; the node name where none is set)."""
    out = subprocess.run(["scontrol", "show", "node", "-o", node], capture_output=True, text=True, check=True)
    for field in out.stdout.split():
        if field.startswith("NodeAddr="):
            return field.removeprefix("NodeAddr=") or node
    return node


def _check(stage: str, gpus: int, nodes: int) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")
    if gpus < 0 or nodes < 1:
        raise ValueError(f"gpus must be ≥ 0 and nodes ≥ 1, got gpus={gpus}, nodes={nodes}")


def command(
    stage: str, args: list[str], gpus: int = 1, nodes: int = 1, env: Mapping[str, str] | None = None
) -> list[str]:
    """The argument list that runs ``core.stages.<stage>`` with ``args`` on ``nodes`` × ``gpus`` processes."""
    _check(stage, gpus, nodes)
    module = ["-m", f"core.stages.{stage}", *args]
    if nodes <= 1 and gpus <= 1:
        return [sys.executable, *module]
    if nodes <= 1:
        return ["torchrun", "--standalone", "--nproc-per-node", str(gpus), *module]
    env = os.environ if env is None else env
    step = ["srun", "--overlap", "--nodes", str(nodes), "--ntasks", str(nodes), "--ntasks-per-node", "1"]
    if env.get("SLURM_CPUS_ON_NODE"):  # the job's CPUs on a node, all for the one agent task there
        step += ["--cpus-per-task", str(int(env["SLURM_CPUS_ON_NODE"]))]
    if gpus:
        step += [f"--gres={gpu_gres(gpus)}"]
    # --mem=0: all of the job's memory on each node (a nested step asking for its own would find none left)
    step += ["--mem=0", "--kill-on-bad-exit=1"]
    agent = [sys.executable, "-m", "core.launch", "--node-agent", "--gpus", str(gpus), "--nodes", str(nodes)]
    return [*step, *agent, stage, *args]


def agent_command(stage: str, args: list[str], gpus: int, nodes: int, env: Mapping[str, str]) -> list[str]:
    """The torchrun one node agent starts: ``gpus`` workers joining a c10d rendezvous on the job's first node (at
    its SLURM address: the node name need not resolve)."""
    _check(stage, gpus, nodes)
    head = node_address(job_nodes(env)[0])
    return [
        "torchrun",
        "--nnodes",
        str(nodes),
        "--nproc-per-node",
        str(max(1, gpus)),
        "--rdzv-id",
        env["SLURM_JOB_ID"],
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"{head}:{RDZV_PORT}",
        "-m",
        f"core.stages.{stage}",
        *args,
    ]


# what a nested srun may inherit: the job's identity, not the enclosing step's layout (one task on one node)
SRUN_KEEP = ("SLURM_JOB_ID", "SLURM_JOBID", "SLURM_CLUSTER_NAME", "SLURM_CONF", "SLURM_SUBMIT_DIR", "SLURM_SUBMIT_HOST")


def srun_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the enclosing step's SLURM_*/SRUN_*/SBATCH_* settings: srun then takes the job's allocation
    from the controller (with the step's SLURM_NNODES=1 it refuses: "Only allocated 1 nodes asked for 2")."""
    return {k: v for k, v in env.items() if k in SRUN_KEEP or not k.startswith(("SLURM_", "SRUN_", "SBATCH_"))}


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc), found whatever session or process group it started."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:  # ended meanwhile
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # after "pid (comm) state"
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def supervise(cmd: list[str], own_group: bool = True, env: Mapping[str, str] | None = None) -> int:
    """Run ``cmd``, forwarding SIGUSR1/SIGTERM to it; the exit status to report (75 after a forwarded signal).

    ``own_group``: start ``cmd`` (torchrun) in a new process group with SIGUSR1 ignored and forward both signals as
    SIGUSR1 to that group and to every process below it; otherwise (srun, which relays signals to its tasks itself)
    send each to ``cmd``."""
    received: list[int] = []
    proc: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        if proc is None or proc.returncode is not None:
            return
        try:
            if own_group:
                os.killpg(proc.pid, signal.SIGUSR1)
                for pid in descendants(proc.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGUSR1)
            else:
                proc.send_signal(signum)
        except ProcessLookupError:
            pass

    def ignore_usr1() -> None:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)

    previous = {s: signal.signal(s, forward) for s in FORWARDED}
    try:
        sys.stdout.flush()
        proc = subprocess.Popen(
            cmd,
            process_group=0 if own_group else None,
            preexec_fn=ignore_usr1 if own_group else None,
            env=None if env is None else dict(env),
        )
        if received:  # a signal that came while starting: pass it on now
            forward(received[-1], None)
        rc = proc.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if received and rc != 0:
        print(
            f"[launch] forwarded signal {received[0]} to {cmd[0]}, which exited {rc}: the workers checkpointed "
            f"(preempted), exit {PREEMPTED}",
            file=sys.stderr,
            flush=True,
        )
        return PREEMPTED
    return rc if rc >= 0 else 128 - rc


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpus", type=int, default=1, help="processes (GPUs) per node")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--node-agent", action="store_true", help=argparse.SUPPRESS)  # one node of a multi-node launch
    p.add_argument("stage", choices=STAGES)
    p.add_argument("args", nargs=argparse.REMAINDER, help="the stage's own arguments")
    a = p.parse_args(argv)
    try:
        check_allocation(a.gpus, a.nodes, os.environ)
    except AllocationMismatch as e:
        sys.exit(str(e))
    if a.node_agent:
        sys.exit(supervise(agent_command(a.stage, a.args, a.gpus, a.nodes, os.environ)))
    cmd = command(a.stage, a.args, a.gpus, a.nodes)
    if cmd[0] == sys.executable:  # one process: no wrapper, the stage gets the signals itself
        sys.stdout.flush()
        os.execvp(cmd[0], cmd)
        return  # not reached: exec replaced this process
    if cmd[0] == "srun":
        sys.exit(supervise(cmd, own_group=False, env=srun_env(os.environ)))
    sys.exit(supervise(cmd))


if __name__ == "__main__":
    main()
