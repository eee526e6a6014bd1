"""The report picks the best-FD checkpoint and reports the IS of that same checkpoint (the reference did not)."""

import csv
import json

import h5py
import numpy as np

from core import data, report

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


def fake_run(tmp_path, step, fid, is_mean):
    samples = tmp_path / "samples" / "run" / f"step{step:07d}.h5"
    samples.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(samples, "w") as f:
        data.write_root_attrs(f, "samples", 4, ["a"], {})
        images, _ = data.create_split(f, "samples", 4, 4)
        images[:] = np.full((4, 4, 4, 3), step % 255, dtype=np.uint8)
        g = f.create_group("trajectory")
        g.create_dataset("images", data=np.zeros((1, 3, 4, 4, 3), dtype=np.uint8))
        g.create_dataset("timesteps", data=np.array([10, 5, -1]))
    metrics = tmp_path / "metrics" / f"{step}.json"
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
                    "experiment": "run",
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
    report.report(STUDY, [m for m, _ in runs], [s for _, s in runs], [str(log)], str(tmp_path / "out"))
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
