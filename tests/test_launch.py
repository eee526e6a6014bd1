"""core.launch: the commands it builds for 1 process, G processes on a node and N nodes; the allocation check; the
supervisor that forwards SIGUSR1/SIGTERM to torchrun's workers (a stand-in torchrun on PATH: fast) and, slow, a real
2-process torchrun run interrupted by SIGUSR1 that resumes to the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import launch
from tests.conftest import ROOT

# A stand-in torchrun: like the real agent it has no SIGUSR1 handler of its own, starts its workers (each catches
# SIGUSR1/SIGTERM, writes a marker and exits 75, as core.stages.train does after checkpointing; each in a session of
# its own, as torch 2.13's agent starts them) and exits 1 when a
# worker failed. It records whether it was started with SIGUSR1 ignored.
FAKE_TORCHRUN = r"""#!{python}
import os, signal, subprocess, sys
out = os.environ["FAKE_OUT"]
open(os.path.join(out, "agent"), "w").write(str(signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN))
worker = '''
import os, signal, sys, time
def handle(signum, frame):
    open(os.path.join(sys.argv[1], "rank%s" % sys.argv[2]), "w").write(str(signum))
    sys.exit(75)
for s in (signal.SIGUSR1, signal.SIGTERM):
    signal.signal(s, handle)
open(os.path.join(sys.argv[1], "ready%s" % sys.argv[2]), "w").close()
time.sleep(60)
sys.exit(0)
'''
n = int(sys.argv[sys.argv.index("--nproc-per-node") + 1])
procs = [subprocess.Popen([sys.executable, "-c", worker, out, str(r)], start_new_session=True) for r in range(n)]
sys.exit(1 if any(p.wait() for p in procs) else 0)
"""


def _fake_torchrun(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "torchrun"
    script.write_text(FAKE_TORCHRUN.replace("{python}", sys.executable))
    script.chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return {**env, "PATH": f"{bin_dir}:{env['PATH']}", "FAKE_OUT": str(out), "PYTHONPATH": str(ROOT)}


def _wait_for(paths: list[Path], proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        assert proc.poll() is None, f"launch exited {proc.returncode} before the workers were ready"
        assert time.monotonic() < deadline, "workers did not start"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGTERM])
def test_a_signal_to_the_launcher_reaches_every_torchrun_worker_and_exits_75(tmp_path, sig):
    env = _fake_torchrun(tmp_path)
    out = Path(env["FAKE_OUT"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "core.launch", "--gpus", "2", "train", "--x"], cwd=ROOT, env=env, start_new_session=True
    )
    try:
        _wait_for([out / "ready0", out / "ready1"], proc)
        os.kill(proc.pid, sig)
        assert proc.wait(timeout=30) == launch.PREEMPTED
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert (out / "agent").read_text() == "True"  # torchrun's agent ignores SIGUSR1 rather than dying of it
    # every worker got SIGUSR1 (a SIGTERM is passed on as SIGUSR1: the agent would tear its workers down)
    assert [(out / f"rank{r}").read_text() for r in (0, 1)] == [str(int(signal.SIGUSR1))] * 2


def test_the_launcher_passes_torchruns_status_on_without_a_signal(tmp_path):
    env = _fake_torchrun(tmp_path)
    code = "from core import launch; import sys; sys.exit(launch.supervise(['torchrun', '--nproc-per-node', '0']))"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, timeout=60).returncode == 0
    code = "from core import launch; import sys; sys.exit(launch.supervise(['sh', '-c', 'exit 3']))"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, timeout=60).returncode == 3


def test_commands_for_one_process_one_node_and_several_nodes(monkeypatch):
    assert launch.command("train", ["--x", "a b"], gpus=1) == [sys.executable, "-m", "core.stages.train", "--x", "a b"]
    assert launch.command("train", [], gpus=0)[0] == sys.executable
    assert launch.command("sample", ["--y"], gpus=4) == [
        "torchrun", "--standalone", "--nproc-per-node", "4", "-m", "core.stages.sample", "--y"
    ]  # fmt: skip
    env = {"SLURM_JOB_ID": "7", "SLURM_CPUS_ON_NODE": "32"}
    multi = launch.command("train", ["--spec", "$(touch x)"], 4, 2, env)
    step = ["srun", "--overlap", "--nodes", "2", "--ntasks", "2", "--ntasks-per-node", "1", "--cpus-per-task", "32"]
    assert multi[: len(step) + 3] == [*step, "--gres=gpu:4", "--mem=0", "--kill-on-bad-exit=1"]
    agent = [sys.executable, "-m", "core.launch", "--node-agent", "--gpus", "4", "--nodes", "2", "train"]
    assert multi[len(step) + 3 :] == [*agent, "--spec", "$(touch x)"]  # arguments stay arguments: no shell
    monkeypatch.setattr(launch, "job_nodes", lambda env: {"7": ["n1", "n2"]}[env["SLURM_JOB_ID"]])
    monkeypatch.setattr(launch, "node_address", lambda node: {"n1": "n1"}[node])
    per_node = launch.agent_command("train", ["--spec", "s"], 4, 2, env)
    assert per_node == [
        "torchrun", "--nnodes", "2", "--nproc-per-node", "4", "--rdzv-id", "7", "--rdzv-backend", "c10d",
        "--rdzv-endpoint", f"n1:{launch.RDZV_PORT}", "-m", "core.stages.train", "--spec", "s",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="unknown stage"):
        launch.command("rm -rf /", [])


def test_gres_and_cpus_for_the_rules():
    assert [launch.gpu_gres(g) for g in (0, 1, 4)] == ["", "gpu:1", "gpu:4"]
    assert [launch.cpus_per_node(8, g) for g in (0, 1, 4)] == [8, 8, 32]
    with pytest.raises(ValueError):
        launch.gpu_gres(-1)


STEP = {"SLURM_JOB_ID": "42", "SLURM_STEP_ID": "0"}
JOBS = {"42": ["n1"], "43": ["n1", "n2"], "44": ["n1", "n2", "n3"]}  # scontrol show job: the job's nodes


@pytest.mark.parametrize(
    ("gpus", "nodes", "env", "named"),
    [
        (4, 1, {**STEP, "SLURM_GPUS_ON_NODE": "1"}, ["--gpus 4", "SLURM_GPUS_ON_NODE=1"]),
        (1, 1, STEP, ["--gpus 1", "SLURM_GPUS_ON_NODE=(unset"]),
        (4, 2, {**STEP, "SLURM_GPUS_ON_NODE": "4"}, ["--nodes 2", "has 1 node"]),
        # the step's own environment says 1 node (as in the SLURM executor's step); the job has 2
        (4, 1, {**STEP, "SLURM_JOB_ID": "43", "SLURM_GPUS_ON_NODE": "4", "SLURM_NNODES": "1"}, ["has 2 node"]),
        (2, 1, {**STEP, "SLURM_JOB_ID": "44", "SLURM_GPUS_ON_NODE": "8"}, ["--gpus 2", "--nodes 1", "has 3 node"]),
    ],
)
def test_a_launch_that_does_not_match_its_allocation_fails_before_starting(gpus, nodes, env, named, monkeypatch):
    monkeypatch.setattr(launch, "job_nodes", lambda env: JOBS[env["SLURM_JOB_ID"]])
    with pytest.raises(launch.AllocationMismatch) as err:
        launch.check_allocation(gpus, nodes, env)
    for text in named:
        assert text in str(err.value)
    # main() stops before anything is started
    monkeypatch.setattr(os, "environ", env)
    monkeypatch.setattr(os, "execvp", lambda *a: pytest.fail("started a process"))
    monkeypatch.setattr(launch, "supervise", lambda *a, **k: pytest.fail("started a process"))
    with pytest.raises(SystemExit, match="does not have the allocation"):
        launch.main(["--gpus", str(gpus), "--nodes", str(nodes), "train", "--x"])


def test_a_matching_allocation_or_no_slurm_step_passes(monkeypatch):
    monkeypatch.setattr(launch, "job_nodes", lambda env: JOBS[env["SLURM_JOB_ID"]])
    launch.check_allocation(4, 2, {**STEP, "SLURM_JOB_ID": "43", "SLURM_GPUS_ON_NODE": "4", "SLURM_NNODES": "1"})
    launch.check_allocation(0, 1, STEP)
    launch.check_allocation(4, 2, {})  # not in SLURM
    launch.check_allocation(4, 2, {"SLURM_JOB_ID": "42"})  # an salloc shell, not a job step


@pytest.mark.slow
def test_sigusr1_to_a_two_process_launch_checkpoints_and_the_resumed_run_matches(tiny_spec, tiny_dataset, tmp_path):
    """`python -m core.launch --gpus 2 train` (torchrun, 2 gloo processes on the CPU) gets SIGUSR1 partway: it exits
    75 with a checkpoint; the rerun resumes and ends with the same weights, bit for bit, as an uninterrupted run."""
    import torch

    spec = {**tiny_spec, "net": {**tiny_spec["net"], "dropout": 0.0}}
    spec["train"] = {**spec["train"], "steps": 300, "checkpoint_every": 300, "batch_size": 8}
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env |= {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}

    def start(out: Path) -> subprocess.Popen:
        args = ["--spec", json.dumps(spec), "--data", str(tiny_dataset), "--out-dir", str(out), "--device", "cpu"]
        cmd = [sys.executable, "-m", "core.launch", "--gpus", "2", "train", *args, "--threads", "1"]
        log = open(out.parent / f"{out.name}.log", "ab")  # noqa: SIM115 (closed with the process)
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    cut, full = tmp_path / "cut", tmp_path / "full"
    proc = start(cut)
    try:
        deadline = time.monotonic() + 300
        log = cut / "state" / "train_log.csv"  # the live log
        while not (log.exists() and len(log.read_text().splitlines()) > 20):  # header + 20 steps
            assert proc.poll() is None, (tmp_path / "cut.log").read_text()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGUSR1)
        assert proc.wait(timeout=300) == launch.PREEMPTED, (tmp_path / "cut.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    state = torch.load(cut / "state" / "latest.pt", weights_only=False)
    assert 20 <= state["step"] < 300
    text = (tmp_path / "cut.log").read_text()
    assert "rank 0" in text and "rank 1" in text, text[-3000:]  # every rank saw the signal
    assert start(cut).wait(timeout=600) == 0, (tmp_path / "cut.log").read_text()[-3000:]
    assert f"at step {state['step']}" in (tmp_path / "cut.log").read_text()
    assert start(full).wait(timeout=600) == 0, (tmp_path / "full.log").read_text()[-3000:]
    a = torch.load(cut / "ckpt" / "step0000300.pt", weights_only=False)
    b = torch.load(full / "ckpt" / "step0000300.pt", weights_only=False)
    for part in ("model", "ema"):
        flat_a = a[part] if part == "model" else a[part]["model"]
        flat_b = b[part] if part == "model" else b[part]["model"]
        for key, value in flat_b.items():
            assert torch.equal(flat_a[key], value), f"{part}.{key}"


def test_the_nested_srun_sees_the_job_not_the_enclosing_step():
    env = {
        "PATH": "/bin",
        "SLURM_JOB_ID": "7",
        "SLURM_NNODES": "1",
        "SLURM_JOB_NODELIST": "n1",
        "SRUN_CPUS_PER_TASK": "2",
    }
    assert launch.srun_env({**env, "SLURM_STEP_ID": "0", "SBATCH_MEM": "1"}) == {"PATH": "/bin", "SLURM_JOB_ID": "7"}


def test_one_process_is_an_exec_and_several_are_supervised(monkeypatch):
    calls = []
    monkeypatch.setattr(os, "environ", {"PATH": "/bin"})
    monkeypatch.setattr(os, "execvp", lambda file, args: calls.append(("exec", args)))
    monkeypatch.setattr(launch, "supervise", lambda cmd, **kw: calls.append(("supervise", cmd)) or 0)
    launch.main(["--gpus", "1", "train", "--x"])
    with pytest.raises(SystemExit):
        launch.main(["--gpus", "2", "train", "--x"])
    assert calls == [
        ("exec", [sys.executable, "-m", "core.stages.train", "--x"]),
        ("supervise", ["torchrun", "--standalone", "--nproc-per-node", "2", "-m", "core.stages.train", "--x"]),
    ]
