"""A researcher's own study: the README's ten-line example, read from the README itself, run end to end on a tree of
grey images (one channel all the way through) at CPU-tiny scale, with the README's command lines run verbatim (in a
dry run, the example's file name replaced by its location)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def block(marker: str, lang: str) -> str:
    """The fenced ``lang`` block that follows ``<!-- marker -->`` in the README."""
    m = re.search(rf"<!-- {marker} -->\s*```{lang}\n(.*?)```", README, re.S)
    assert m, f"README has no {lang} block after <!-- {marker} -->"
    return m[1]


def grey_tree(root: Path, per_class: int = 30) -> Path:
    """Three classes of grey 24² images (a disc, a bar, a ring on a dark background), saved as 8-bit grey PNGs."""
    rng = np.random.default_rng(0)
    for shape in ("disc", "bar", "ring"):
        (root / shape).mkdir(parents=True)
        for i in range(per_class):
            img = Image.new("L", (24, 24), int(rng.integers(0, 60)))
            draw = ImageDraw.Draw(img)
            x, y = rng.integers(6, 18, 2)
            r, v = int(rng.integers(4, 7)), int(rng.integers(160, 255))
            if shape == "disc":
                draw.ellipse([x - r, y - r, x + r, y + r], fill=v)
            elif shape == "bar":
                draw.rectangle([x - r, y - 2, x + r, y + 2], fill=v)
            else:
                draw.ellipse([x - r, y - r, x + r, y + r], outline=v, width=2)
            img.save(root / shape / f"{i:03d}.png")
    return root


def snakemake(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args], cwd=ROOT, capture_output=True, text=True, timeout=900
    )


def job_count(out: str) -> int:
    return int(re.search(r"^total\s+(\d+)$", out, re.M)[1])


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The README's example, its folder path pointed at a grey tree; and an overlay that only shrinks it."""
    tmp = tmp_path_factory.mktemp("own")
    example = block("own-data-example", "yaml")
    assert len(example.strip().splitlines()) <= 10
    images = grey_tree(tmp / "my-images")
    mine = tmp / "mine.yaml"
    mine.write_text(example.replace("/data/my-images", str(images)))
    tiny = {  # CPU-tiny scale: the same study, fewer steps and images
        "results_dir": str(tmp / "results"),
        "studies": {
            "mine": {
                "models": {"unet": {"train": {"steps": 30, "batch_size": 16, "checkpoint_every": 30}}},
                "defaults": {"experiment": {"num_samples": 24, "batch_size": 24, "sampler": {"steps": 10}}},
                "evaluation": {
                    "is_splits": 2,
                    "kid_subset_size": 8,
                    "bootstrap": 20,
                    "classifier": {"steps": 30, "batch_size": 16, "width": 8, "depth": 1},
                },
            }
        },
    }
    (tmp / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    return {"tmp": tmp, "mine": mine, "tiny": tmp / "tiny.yaml", "example": yaml.safe_load(example)}


def test_the_example_is_ten_lines_of_yaml_and_valid(study):
    from core.config import deep_merge
    from core.plan import Plan

    plan = Plan(deep_merge(yaml.safe_load((ROOT / "config.yaml").read_text()), study["example"]))
    assert plan.model("mine", "unet")["net"]["channel_mult"] == [1, 2, 2]  # by image size (16²)
    assert plan.experiment("mine", "DDIM-CFG")["sampler"]["name"] == "ddim"


@pytest.mark.e2e
def test_the_readme_command_lines_plan_the_example_verbatim(study):
    commands = [line for line in block("own-data-commands", "bash").splitlines() if line.startswith("snakemake")]
    assert len(commands) == 2
    counts = []
    for line in commands:
        args = [str(study["mine"]) if a == "mine.yaml" else a for a in shlex.split(line)[1:]]
        proc = snakemake([*args, "-n"])  # into the default results/: a dry run writes nothing there
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        counts.append(job_count(proc.stdout))
    # the whole study, then one target (its report): the same jobs but rule `all`
    assert counts[0] == counts[1] + 1 == 10


@pytest.mark.e2e
def test_the_example_runs_end_to_end_on_grey_images(study):
    proc = snakemake(
        ["--cores", "2", "--configfile", str(study["mine"]), str(study["tiny"]), "--config", "studies_to_run=[mine]"]
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    results = study["tmp"] / "results"
    with h5py.File(results / "data" / "mine.h5", "r") as f:
        assert f.attrs["channels"] == 1 and f["train/images"].shape[1:] == (16, 16, 1)
        assert f["val/images"].shape[0] == 9  # 10% of each class held out (3 × 3)
    for row in ("DDIM", "DDIM-CFG"):
        with h5py.File(results / "mine" / "samples" / row / "r0" / "step0000030.h5", "r") as f:
            assert f["samples/images"].shape == (24, 16, 16, 1)  # grey samples: no colour noise is possible
    table = (results / "mine" / "report" / "table.md").read_text()
    assert "| DDIM | no | no (w=0: unconditional branch) | UNet |" in table
    assert "| DDIM-CFG | no | w=3 | UNet |" in table
    for name in ("grids.png", "trajectory.png", "fid_is.png"):
        assert (results / "mine" / "report" / name).read_bytes()[:4] == b"\x89PNG"
