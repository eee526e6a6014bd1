"""The report picks the best-FD checkpoint and reports the IS of that same checkpoint (the reference did not)."""

import csv
import json
import math

import h5py
import numpy as np

from core import data
from core.stages import report

STUDY = {
    "name": "s",
    "title": "Test study",
    "layout": "ablation",
    "models": {
        "m": {
            "backbone": "unet",
            "space": "pixel",
            "net": {"base_channels": 8, "class_conditional": False},
            "train": {"lr": 1e-4, "hflip": True},
        }
    },
    "experiments": {"run": {"model": "m", "sampler": {"name": "ddim", "steps": 25, "eta": 0.0}, "guidance_scale": 1.0}},
}


def fake_run(tmp_path, step, fid, is_mean, experiment="run", tag=None):
    tag = tag or f"step{step:07d}"
    samples = tmp_path / "samples" / experiment / f"{tag}.h5"
    samples.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(samples, "w") as f:
        data.write_root_attrs(f, "samples", 4, ["a"], {})
        images, _ = data.create_split(f, "samples", 4, 4)
        images[:] = np.full((4, 4, 4, 3), step % 255, dtype=np.uint8)
        g = f.create_group("trajectory")
        g.create_dataset("images", data=np.zeros((1, 3, 4, 4, 3), dtype=np.uint8))
        g.create_dataset("timesteps", data=np.array([10, 5, -1]))
        f.attrs["sampling_device_seconds"] = 36.0
    metrics = tmp_path / "metrics" / experiment / f"{tag}.json"
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text(
        json.dumps(
            {
                "fid": fid,
                "is_mean": is_mean,
                "is_std": 0.1,
                "kid_mean": 0.0,
                "kid_std": 0.0,
                "precision": 0.5,
                "recall": 0.5,
                "label": {"fid": "FD_clf@4", "is": "IS_clf (2 splits)", "kid": "KID"},
                "extractor": {"extractor": "classifier", "weights_sha256": "ab" * 32, "preprocessing": "native"},
                "n_generated": 4,
                "n_real": 8,
                "reference": {"split": "train"},
                "samples": {
                    "experiment": experiment,
                    "checkpoint_step": step,
                    "sampler": "ddim",
                    "steps": 25,
                    "eta": 0.0,
                    "guidance_scale": 1.0,
                    "seed": 0,
                    "code_version": "test",
                },
            }
        )
    )
    return str(metrics), str(samples)


def test_best_checkpoint_row_uses_is_of_the_same_checkpoint(tmp_path):
    # FD is best at step 200; IS is best at step 300: the row must show step 200's IS, not 9.0
    runs = [fake_run(tmp_path, 100, 50.0, 2.0), fake_run(tmp_path, 200, 10.0, 3.0), fake_run(tmp_path, 300, 20.0, 9.0)]
    log = tmp_path / "train_log.csv"
    log.write_text("step,loss\n" + "".join(f"{i},{1 / i}\n" for i in range(1, 300)))
    report.run(STUDY, [m for m, _ in runs], [s for _, s in runs], [str(log)], str(tmp_path / "out"))
    table = (tmp_path / "out" / "table.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| run | 8 |"))
    assert "10.00 (200)" in row and "3.00 ± 0.10" in row and "9.00" not in row
    assert "| 20.00 |" in row  # last checkpoint's FD, for comparison
    assert "not Inception FID/IS" in table
    with open(tmp_path / "out" / "table.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["checkpoint_step"]) for r in rows] == [100, 200, 300]
    for name in ("fid_is.png", "loss.png", "grids.png", "trajectory.png", "curves.png"):
        assert (tmp_path / "out" / name).read_bytes()[:4] == b"\x89PNG"


def test_sweeps_published_numbers_and_cost(tmp_path):
    sampler = {"name": "ddim", "steps": 25, "eta": 0.0}
    pub = {"fid": 150.0, "is_mean": 4.45, "is_std": 0.1}
    exps = {
        "A": {"model": "m", "sampler": sampler, "guidance_scale": 2.0, "published": pub},
        "A.nfe-ddim-10": {"model": "m", "sampler": {**sampler, "steps": 10}, "guidance_scale": 2.0},
        "A.nfe-dpmpp2m-10": {"model": "m", "sampler": {"name": "dpmpp2m", "steps": 10}, "guidance_scale": 2.0},
        "A.w1": {"model": "m", "sampler": sampler, "guidance_scale": 1.0},
        "A.w4": {"model": "m", "sampler": sampler, "guidance_scale": 4.0},
    }
    for name in ("A.nfe-ddim-10", "A.nfe-dpmpp2m-10"):
        exps[name]["sweep"] = {"kind": "nfe", "base": "A"}
    for name in ("A.w1", "A.w4"):
        exps[name]["sweep"] = {"kind": "guidance", "base": "A"}
    model = {**STUDY["models"]["m"], "net": {"base_channels": 8, "class_conditional": True}}
    study = {
        **STUDY,
        "layout": "matrix",
        "models": {"m": model},
        "experiments": exps,
        "resources": {"m": {"gpus": 2, "nodes": 1}},
        "published_protocol": "Protocol note.",
    }
    fids = {"A": 10.0, "A.nfe-ddim-10": 14.0, "A.nfe-dpmpp2m-10": 11.0, "A.w1": 20.0, "A.w4": 12.0}
    runs = [fake_run(tmp_path, 4, fid, 3.0, experiment=e) for e, fid in fids.items()]
    log = tmp_path / "models" / "m" / "train_log.csv"
    log.parent.mkdir(parents=True)
    # a resumed run: elapsed restarts at 0 after step 2; 20 s + 15 s = 35 s on 2 GPUs, 3.5 s of it waiting for input
    log.write_text(
        "step,loss,lr,grad_norm,images_per_s,elapsed_s,peak_mem_mb,input_wait_s\n"
        "1,1,1,1,100,10,2048,1\n2,1,1,1,300,20,2048,2\n3,1,1,1,200,5,4096,0.25\n4,1,1,1,250,15,1024,0.25\n"
    )
    report.run(study, [m for m, _ in runs], [s for _, s in runs], [str(log)], str(tmp_path / "out"))
    table = (tmp_path / "out" / "table.md").read_text()
    main = table.split("## Sweep")[0]
    assert "| A.w4 |" not in main and "| A.nfe-ddim-10 |" not in main  # sweep points stay out of the main table
    row = next(line for line in main.splitlines() if line.startswith("| A |"))
    assert row.endswith("| 10.00 | 3.00 ± 0.10 | 150.00 | 4.45 ± 0.10 |") and "Protocol note." in main
    # network evaluations: 2 per step with guidance, 1 without
    assert "| A.nfe-ddim-10 | DDIM-10 (η=0) | 20 | 14.00 |" in table
    assert "| A.nfe-dpmpp2m-10 | DPM-Solver++(2M)-10 | 20 | 11.00 |" in table
    assert "| A | DDIM-25 (η=0) | 50 | 10.00 |" in table  # the base is a point of its own sweep
    g = table.split("## Sweep: guidance scale")[1]
    assert g.index("| A.w1 | 1 |") < g.index("| A | 2 |") < g.index("| A.w4 | 4 |")
    # cost: median images/s of the log, peak memory 4 GiB, 35 s × 2 GPUs, 10% waiting for input, sampling 36 s
    assert "| A | m | 4 | 225.0 | 4.0 GiB | 0.019 | 10.0% | 0.0100 |" in table
    old = tmp_path / "old_log.csv"  # a log from before the input-wait column: no share is made up
    old.write_text("step,loss,lr,grad_norm,images_per_s,elapsed_s,peak_mem_mb\n1,1,1,1,100,10,0\n")
    assert math.isnan(report.training_cost(str(old), 1)["input_wait"])
    assert (tmp_path / "out" / "sweeps.png").read_bytes()[:4] == b"\x89PNG"
