"""Shared fixtures: a tiny shapes dataset on disk and a tiny model spec, completed as the workflow completes them."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from core import config
from core.stages import make_dataset

ROOT = Path(__file__).resolve().parent.parent

# As a study's config states it; ``model_spec`` completes it from the schema's defaults as Plan does.
TINY_MODEL = {
    "backbone": "unet",
    "space": "pixel",
    "net": {
        "base_channels": 8,
        "channel_mult": [1, 2],
        "num_res_blocks": 1,
        "attention_resolutions": [4],
        "num_heads": 1,
        "norm_groups": 4,
        "dropout": 0.1,
        "class_conditional": True,
    },
    "diffusion": {"schedule": "linear", "timesteps": 50},
    "train": {
        "steps": 12,
        "batch_size": 8,
        "lr": 1e-3,
        "lr_schedule": "cosine",
        "min_lr": 1e-5,
        "warmup_steps": 2,
        "grad_clip": 1.0,
        "ema": {"decay": 0.9, "update_every": 2},
        "label_dropout": 0.2,
        "hflip": True,
        "checkpoint_every": 4,
        "log_every": 4,
        "seed": 3,
    },
}


def model_spec(entry: dict, input_size: int = 8, name: str = "tiny", replicate: int = 0) -> dict:
    """A train spec (what core.stages.train gets) from a model entry, completed from the config schema."""
    spec = config.complete_model(copy.deepcopy(entry), input_size)
    spec = {k: v for k, v in spec.items() if k not in config.MODEL_BOOKKEEPING}
    return {"name": name, "study": "test", "replicate": replicate, **spec}


def sample_spec(entry: dict, experiment: str = "X", replicate: int = 0) -> dict:
    """A sample spec (what core.stages.sample gets) from an experiment entry, completed from the config schema."""
    spec = config.fill(copy.deepcopy(entry), config.defs_ref("experiment"))
    spec["sampler"] = config.complete_sampler(spec["sampler"])
    spec = {k: v for k, v in spec.items() if k not in config.EXPERIMENT_BOOKKEEPING}
    return {"experiment": experiment, "study": "test", "replicate": replicate, "model_replicate": 0, **spec}


def shapes_dataset(path: Path, image_size: int = 8, train: int = 64, val: int = 32, seed: int = 0) -> Path:
    """A built-in shapes dataset written (and sealed) by the make_dataset stage."""
    spec = {"source": "shapes", "image_size": image_size, "splits": {"train": train, "val": val}, "seed": seed}
    entry = config.fill(spec, config.defs_ref("dataset_shapes"))
    make_dataset.run({"name": "tiny", **entry}, str(path), [])
    return path


@pytest.fixture(scope="session", autouse=True)
def _no_wait_for_an_absent_slurm_controller(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The SLURM executor plugin runs `scontrol show config` whenever Snakemake starts, to word a help text. Where
    SLURM's tools are installed but no controller answers (CI's machine between its cluster runs), scontrol waits
    about 9 s for its own time-out, in every `snakemake` a test starts (the 14 fast tests that start one took 290 of
    the set's 490 s). No pytest test talks to a cluster (.ci/slurm-*.sh do, outside pytest), so there the tests'
    processes get an `scontrol` that fails at once, as on a machine without SLURM. With a controller that answers,
    nothing changes."""
    real = shutil.which("scontrol")
    if real is None:
        return
    try:
        answered = subprocess.run([real, "ping"], capture_output=True, timeout=3).returncode == 0
    except subprocess.TimeoutExpired:
        answered = False
    if answered:
        return
    bin_dir = tmp_path_factory.mktemp("no-slurm-controller")
    stub = bin_dir / "scontrol"
    stub.write_text(
        "#!/bin/sh\necho 'scontrol: no SLURM controller in this test run (tests/conftest.py)' >&2\nexit 1\n"
    )
    stub.chmod(0o755)
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def tiny_spec() -> dict:
    return model_spec(TINY_MODEL)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shapes_dataset(tmp_path_factory.mktemp("data") / "tiny.h5")


def as_json(obj: object) -> str:
    return json.dumps(obj)
