"""TensorBoard curves of a training run (core.tboard, optional extra): written only when asked, read back with
TensorBoard's own reader, and continued without duplicate steps when a run resumes."""

import csv
import shutil

import pytest
import torch

from core import tboard
from core.config import ConfigError
from core.plan import Plan
from core.stages import train as train_stage
from tests.test_status import tiny_config


def read_scalars(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), purge_orphaned_data=True)
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_asking_for_tensorboard_without_the_package_is_a_planning_error(tmp_path, monkeypatch):
    monkeypatch.setattr(tboard, "available", lambda: False)
    config = tiny_config(tmp_path)
    config["tensorboard"] = True
    with pytest.raises(ConfigError, match=r"config key tensorboard: .*pip install -e '\.\[tensorboard\]'"):
        Plan(config)
    config = tiny_config(tmp_path)  # off by default: nothing to install
    assert Plan(config).config["tensorboard"] is False


def test_no_events_unless_asked(tiny_spec, tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.delenv(tboard.ENV, raising=False)
    tiny_spec["train"]["steps"] = 4
    train_stage.run(tiny_spec, str(tiny_dataset), str(tmp_path / "run"), "cpu")
    assert not (tmp_path / "run" / "tensorboard").exists()


@pytest.mark.slow  # training, killed or changed, and resumed
def test_curves_continue_across_a_resume_without_duplicate_steps(tiny_spec, tiny_dataset, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    monkeypatch.setenv(tboard.ENV, "1")
    run = tmp_path / "run"
    train_stage.run(tiny_spec, str(tiny_dataset), str(run), "cpu")  # 12 steps, logged every 4
    # roll the run back to its step-8 state, as if it had died after logging step 12 but before saving it
    shutil.copyfile(run / "state" / "step0000008.pt", run / "state" / "latest.pt")
    shutil.rmtree(run / "ckpt")
    (run / "train_log.csv").unlink()
    train_stage.run(tiny_spec, str(tiny_dataset), str(run), "cpu")
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2  # one file per attempt
    scalars = read_scalars(run / "tensorboard")
    assert {"train/loss", "train/lr", "train/grad_norm", "train/step_time_s", "train/images_per_s"} <= set(scalars)
    with open(run / "train_log.csv", newline="") as fh:
        rows = {int(r["step"]): r for r in csv.DictReader(fh)}
    for tag, column in (("train/loss", "loss"), ("train/lr", "lr"), ("train/grad_norm", "grad_norm")):
        assert [s for s, _ in scalars[tag]] == [4, 8, 12], tag  # step 12 once: the first attempt's is purged
        assert [v for _, v in scalars[tag]] == pytest.approx([float(rows[s][column]) for s in (4, 8, 12)], rel=1e-5)
    assert all(v > 0 for _, v in scalars["train/step_time_s"])
    assert [s for s, _ in scalars["train/ema_loss"]] == [4, 8, 12] and all(v > 0 for _, v in scalars["train/ema_loss"])
    # the EMA curve draws from a generator of its own: training with the curves gives the weights of one without
    monkeypatch.setenv(tboard.ENV, "0")
    plain = tmp_path / "plain"
    train_stage.run(tiny_spec, str(tiny_dataset), str(plain), "cpu")
    a, b = (torch.load(r / "ckpt" / "step0000012.pt", weights_only=False) for r in (run, plain))
    assert all(torch.equal(a["ema"]["model"][k], v) for k, v in b["ema"]["model"].items())


def test_validation_loss_is_a_curve(tiny_spec, tiny_dataset, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    monkeypatch.setenv(tboard.ENV, "1")
    tiny_spec["train"]["early_stopping"] = {
        "every": 4,
        "patience": 5,
        "num_images": 16,
        "min_delta": 0.0,
        "weights": "ema",
    }
    train_stage.run(tiny_spec, str(tiny_dataset), str(tmp_path / "run"), "cpu")
    scalars = read_scalars(tmp_path / "run" / "tensorboard")
    with open(tmp_path / "run" / "val_log.csv", newline="") as fh:
        val = [(int(r["step"]), float(r["val_loss"])) for r in csv.DictReader(fh)]
    assert [s for s, _ in scalars["val/loss"]] == [s for s, _ in val] == [4, 8, 12]
    assert [v for _, v in scalars["val/loss"]] == pytest.approx([v for _, v in val], rel=1e-5)


@pytest.mark.slow
def test_an_evaluated_checkpoints_fd_and_is_join_its_models_curves(tmp_path, monkeypatch):
    """The evaluate stage adds the FD and IS of a checkpoint at its step, under the model replicate's folder."""
    pytest.importorskip("tensorboard")
    import json

    from core.stages import evaluate as evaluate_stage
    from core.stages import reference_stats, train_classifier
    from core.stages import sample as sample_stage
    from tests.conftest import TINY_MODEL, model_spec, sample_spec, shapes_dataset

    monkeypatch.setenv(tboard.ENV, "1")
    data_path = shapes_dataset(tmp_path / "d.h5")
    spec = model_spec({**TINY_MODEL, "train": {**TINY_MODEL["train"], "steps": 4, "checkpoint_every": 2}})
    model = tmp_path / "demo" / "models" / "unet" / "r0"
    train_stage.run(spec, str(data_path), str(model), "cpu")
    clf = {"width": 8, "depth": 1, "steps": 5, "batch_size": 16, "lr": 0.003, "seed": 0}
    train_classifier.run(str(data_path), clf, str(tmp_path / "clf.pt"))
    extractor = {"kind": "classifier", "weights": str(tmp_path / "clf.pt")}
    reference_stats.run(str(data_path), "val", 0, extractor, str(tmp_path / "ref.npz"))
    options = {"is_splits": 2, "kid_subsets": 5, "kid_subset_size": 8, "bootstrap": 0, "fd_infinity": False}
    fids = {}
    for step in (2, 4):
        s_spec = sample_spec({"sampler": {"name": "ddim", "steps": 2}, "num_samples": 16, "batch_size": 8}, "DDIM")
        samples, metrics = tmp_path / f"s{step}.h5", tmp_path / f"m{step}.json"
        sample_stage.run(str(model / "ckpt" / f"step{step:07d}.pt"), s_spec, str(samples), "cpu")
        evaluate_stage.run(
            str(samples), str(tmp_path / "ref.npz"), extractor, str(metrics), {**options, "batch_size": 8}
        )
        fids[step] = json.loads(metrics.read_text())
    scalars = read_scalars(model / "tensorboard")
    assert [s for s, _ in scalars["eval/DDIM/r0/fid"]] == [2, 4]
    assert [v for _, v in scalars["eval/DDIM/r0/fid"]] == pytest.approx([fids[2]["fid"], fids[4]["fid"]], rel=1e-6)
    assert [v for _, v in scalars["eval/DDIM/r0/is"]] == pytest.approx([fids[2]["is_mean"], fids[4]["is_mean"]])
    assert [s for s, _ in scalars["train/loss"]] == [4]  # the training curves are still there (log_every 4)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(model / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    grids = acc.Images("eval/DDIM/r0/samples")
    assert [g.step for g in grids] == [2, 4] and all(g.width > 0 and g.height > 0 for g in grids)
