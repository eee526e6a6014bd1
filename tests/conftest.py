"""Shared fixtures: a tiny shapes dataset on disk and a tiny model spec."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from core.stages.make_dataset import make_shapes

ROOT = Path(__file__).resolve().parent.parent

TINY_MODEL = {
    "name": "tiny",
    "study": "test",
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


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def tiny_spec() -> dict:
    return copy.deepcopy(TINY_MODEL)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.h5"
    make_shapes({"source": "shapes", "image_size": 8, "splits": {"train": 64, "val": 32}, "seed": 0}, str(path))
    return path


def as_json(obj: object) -> str:
    return json.dumps(obj)
