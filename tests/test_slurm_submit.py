"""The sbatch lines profiles/slurm produces for `train` with 1 GPU, 4 GPUs on one node and 2 nodes × 4 GPUs: the
rule's resources as Snakemake resolves them with the real profile (a dry run), turned into sbatch options by the
installed SLURM executor plugin's own functions (get_submit_command, set_gres_string). docs/slurm.md shows them."""

from __future__ import annotations

import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
import yaml

from tests.conftest import ROOT

submit_string = pytest.importorskip("snakemake_executor_plugin_slurm.submit_string")
plugin_utils = pytest.importorskip("snakemake_executor_plugin_slurm.utils")

SHAPES = {"unet-cfg": (1, 1), "unet-vae-cfg": (4, 1), "dit-vae-cfg": (4, 2)}  # tiny's models: (GPUs per node, nodes)
# what each must become (the generic part — job name, log, comment, -D — left out)
EXPECTED = {
    "unet-cfg": "-A CHANGE-ME-account -p CHANGE-ME-gpu-partition -t 1440 --mem-per-cpu 4000 --nodes=1 "
    "--cpus-per-task=8 --signal=USR1@120 --gres=gpu:1",
    "unet-vae-cfg": "-A CHANGE-ME-account -p CHANGE-ME-gpu-partition -t 1440 --mem-per-cpu 4000 --nodes=1 "
    "--cpus-per-task=32 --signal=USR1@120 --gres=gpu:4",
    "dit-vae-cfg": "-A CHANGE-ME-account -p CHANGE-ME-gpu-partition -t 1440 --mem-per-cpu 4000 --nodes=2 "
    "--cpus-per-task=32 --signal=USR1@120 --gres=gpu:4",
}


class Resources(dict):
    """Snakemake's job.resources as the plugin uses it: .get() and attribute access."""

    def __getattr__(self, key: str):
        try:
            return self[key]
        except KeyError as e:
            raise AttributeError(key) from e


def _value(text: str) -> int | str:
    return int(text) if re.fullmatch(r"-?\d+", text) else text


def planned_train_jobs(tmp_path) -> dict[str, SimpleNamespace]:
    """Each tiny model's train job (threads, resources) as `snakemake --profile profiles/slurm -n` plans it."""
    overlay = {
        "studies": {"tiny": {"models": {m: {"resources": {"gpus": g, "nodes": n}} for m, (g, n) in SHAPES.items()}}}
    }
    (tmp_path / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    res = tmp_path / "res"
    targets = [str(res / "tiny" / "models" / m / "r0" / "train_log.csv") for m in SHAPES]
    # --cores: a dry run caps threads at the local cores; a SLURM run does not (a submitted job gets set-threads)
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "64", "--profile", "profiles/slurm"]
    cmd += ["--configfile", "config.yaml", str(tmp_path / "overlay.yaml"), "--config", f"results_dir={res}", "--"]
    proc = subprocess.run([*cmd, *targets], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = {}
    for block in re.split(r"\n(?=\S)", proc.stdout + proc.stderr):
        if not block.startswith("checkpoint train:"):
            continue
        model = re.search(r"model=([\w-]+)", block)[1]
        threads = int(re.search(r"^\s+threads: (\d+)$", block, re.M)[1])
        line = re.search(r"^\s+resources: (.*)$", block, re.M)[1]
        resources = Resources((k, _value(v)) for k, v in (item.split("=", 1) for item in line.split(", ")))
        jobs[model] = SimpleNamespace(resources=resources, threads=threads, name="train")
    assert sorted(jobs) == sorted(SHAPES)
    return jobs


def sbatch_options(job: SimpleNamespace) -> str:
    params = {
        "run_uuid": "RUN",
        "slurm_logfile": "LOG",
        "comment_str": "rule_train",
        "account": f"-A {job.resources['slurm_account']}",
        "partition": f"-p {job.resources['slurm_partition']}",
        "workdir": "",
    }
    call = submit_string.get_submit_command(job, params) + plugin_utils.set_gres_string(job)
    head = "sbatch --parsable --job-name RUN --output LOG --export=ALL --comment rule_train "
    assert call.startswith(head), call
    return " ".join(call[len(head) :].split())


@pytest.mark.slow
def test_the_plugin_requests_gpus_per_node_and_scales_cpus_and_memory_with_them(tmp_path):
    jobs = planned_train_jobs(tmp_path)
    lines = {m: sbatch_options(job) for m, job in jobs.items()}
    for model, line in lines.items():
        # no per-job --gpus (2 nodes × 4 would get 4 GPUs in all) and no --ntasks-per-gpu (k tasks per GPU)
        assert "--gpus" not in line and "--ntasks" not in line, (model, line)
    assert lines == EXPECTED
