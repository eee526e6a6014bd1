import h5py
import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from core import costs, paths, sampling
from core.models import load_denoiser
from core.stages import sample as sample_stage
from core.stages import train as train_stage
from tests.conftest import TINY_MODEL, model_spec, sample_spec

SPEC = sample_spec(
    {
        "sampler": {"name": "ddpm", "steps": 10},
        "guidance_scale": 2.0,
        "num_samples": 20,
        "batch_size": 8,
        "seed": 4,
        "trajectory_images": 2,
        "trajectory_points": 3,
    }
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_dataset):
    out = tmp_path_factory.mktemp("model")
    spec = model_spec({**TINY_MODEL, "train": {**TINY_MODEL["train"], "steps": 4}})
    train_stage.run(spec, str(tiny_dataset), str(out), "cpu")
    return out / "ckpt" / "step0000004.pt"


def test_sample_file_layout_and_attributes(checkpoint, tmp_path):
    out = tmp_path / "s.h5"
    sample_stage.run(str(checkpoint), SPEC, str(out), "cpu")
    with h5py.File(out, "r") as f:
        assert f.attrs["complete"] and f.attrs["num_done"] == 20 and f.attrs["kind"] == "samples"
        assert f.attrs["experiment"] == "X" and f.attrs["sampler"] == "ddpm" and f.attrs["steps"] == 10
        assert f.attrs["guidance_scale"] == 2.0 and f.attrs["seed"] == 4 and f.attrs["checkpoint_step"] == 4
        assert "code_version" in f.attrs
        assert f["samples/images"].shape == (20, 8, 8, 3) and f["samples/images"].dtype == np.uint8
        assert list(f["samples/labels"][:7]) == [0, 1, 2, 3, 4, 0, 1]
        assert f["trajectory/images"].shape == (2, 4, 8, 8, 3)  # 3 snapshots + the final x0
        assert list(f["trajectory/timesteps"])[-1] == -1
        np.testing.assert_array_equal(f["trajectory/images"][:, -1], f["samples/images"][:2])
    assert not (tmp_path / "s.h5.partial").exists()


def test_interrupted_sampling_resumes_to_identical_file(checkpoint, tmp_path, monkeypatch):
    full = tmp_path / "full.h5"
    sample_stage.run(str(checkpoint), SPEC, str(full), "cpu")

    real_sample = sampling.sample
    calls = {"n": 0}

    def dies_on_second_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill")
        return real_sample(*args, **kwargs)

    out = tmp_path / "resumed.h5"
    monkeypatch.setattr(sampling, "sample", dies_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        sample_stage.run(str(checkpoint), SPEC, str(out), "cpu")
    assert not out.exists()  # never looks complete
    with h5py.File(str(out) + ".partial", "r") as f:
        assert f.attrs["num_done"] == 8 and not f.attrs["complete"]
    monkeypatch.setattr(sampling, "sample", real_sample)
    sample_stage.run(str(checkpoint), SPEC, str(out), "cpu")
    with h5py.File(full, "r") as a, h5py.File(out, "r") as b:
        np.testing.assert_array_equal(a["samples/images"][:], b["samples/images"][:])
        np.testing.assert_array_equal(a["trajectory/images"][:], b["trajectory/images"][:])


def test_the_cost_record_counts_one_image_apart_and_times_every_batch(checkpoint, tmp_path):
    """A rehearsal's spec (a ``rehearsal`` entry) counts FLOPs, a real one does not; the sample file is the same
    either way (the count runs on a generator of its own); the record's FLOPs per image-step are the guided pair of
    network evaluations (ε_c and ε_u), counted here on the network itself; every batch's every step is timed."""
    out = tmp_path / "s.h5"
    sample_stage.run(str(checkpoint), {**SPEC, "rehearsal": {"real": {}}}, str(out), "cpu")
    record = costs.read(paths.cost(str(out)))
    assert record["flops_counted"] is True
    denoise = record["sections"]["denoise"]
    model, meta = load_denoiser(checkpoint)
    x = torch.zeros(1, meta["in_channels"], meta["image_size"], meta["image_size"])
    with FlopCounterMode(display=False) as counter:
        model(x, torch.tensor([5]), torch.tensor([1]))
    assert denoise["flops_per_image_unit"] == pytest.approx(2 * counter.get_total_flops(), rel=1e-9)
    assert denoise["units_timed"] == 10 * 3 and denoise["images_per_unit"] == 8  # 10 steps × batches of 8, 8, 4
    assert denoise["seconds_per_image_unit"] > 0

    uncounted = tmp_path / "uncounted.h5"
    sample_stage.run(str(checkpoint), SPEC, str(uncounted), "cpu")
    real = costs.read(paths.cost(str(uncounted)))
    assert real["flops_counted"] is False and real["sections"]["denoise"]["flops_per_image_unit"] is None
    assert real["sections"]["denoise"]["units_timed"] == 10 * 3 and real["sections"]["decode"]["units_timed"] == 3
    with h5py.File(out, "r") as a, h5py.File(uncounted, "r") as b:
        np.testing.assert_array_equal(a["samples/images"][:], b["samples/images"][:])
        np.testing.assert_array_equal(a["trajectory/images"][:], b["trajectory/images"][:])


def test_partial_from_other_settings_is_moved_aside_never_deleted(checkpoint, tmp_path):
    out = tmp_path / "s.h5"
    partial = tmp_path / "s.h5.partial"
    with h5py.File(partial, "w") as f:
        f.attrs["resume_hash"] = "something else"
        f.attrs["num_done"] = 16
    sample_stage.run(str(checkpoint), SPEC, str(out), "cpu")
    with h5py.File(out, "r") as f:
        assert f.attrs["num_done"] == 20
    aside = list(tmp_path.glob("s.h5.partial.aside-*"))
    assert len(aside) == 1
    with h5py.File(aside[0], "r") as f:
        assert f.attrs["resume_hash"] == "something else"  # the other run's file, intact


def test_guidance_on_unconditional_model_is_refused(tiny_dataset, tmp_path):
    spec = model_spec(
        {
            **TINY_MODEL,
            "net": {**TINY_MODEL["net"], "class_conditional": False},
            "train": {**TINY_MODEL["train"], "steps": 1, "checkpoint_every": 1},
        }
    )
    train_stage.run(spec, str(tiny_dataset), str(tmp_path / "m"), "cpu")
    with pytest.raises(ValueError, match="class-conditional"):
        sample_stage.run(str(tmp_path / "m" / "ckpt" / "step0000001.pt"), SPEC, str(tmp_path / "s.h5"), "cpu")
