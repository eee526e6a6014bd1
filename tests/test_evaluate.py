"""Reference statistics and evaluation through the Inception path, with a random-weights file standing in for
the community's weights (the code path is the same; only the numbers differ)."""

import json

import h5py
import numpy as np
import pytest
import torch

from core import data
from core.features import load_reference
from core.nets import inception
from core.provenance import file_sha256
from core.stages.evaluate import run as evaluate
from core.stages.reference_stats import run as reference_stats


@pytest.fixture(scope="module")
def inception_spec(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "inception.pth"
    torch.save(inception.FIDInceptionV3().state_dict(), path)
    return {"kind": "inception", "weights": str(path), "sha256": file_sha256(path), "preprocessing": "pytorch-fid"}


def write_samples(path, images):
    with h5py.File(path, "w") as f:
        data.write_root_attrs(f, "samples", images.shape[1], ["a"], {"code_version": "test"})
        imgs, _ = data.create_split(f, "samples", len(images), images.shape[1])
        imgs[:] = images
        f.attrs.update({"experiment": "E", "checkpoint_step": 7, "sampler": "ddim", "complete": True, "num_done": 16})
        f.attrs.update({"replicate": 0, "sampler_label": "DDIM-10 (η=0, leading)"})
        data.seal(f)


def opts(**kw: object) -> dict:
    """Evaluation options as the workflow passes them (core.plan.Plan.evaluation_options)."""
    base = {"is_splits": 10, "kid_subsets": 100, "kid_subset_size": None, "bootstrap": 20, "fd_infinity": False}
    return {**base, "batch_size": 8, **kw}


@pytest.mark.slow  # the full-size Inception network over 48 images at 299², five 2048-d Fréchet distances
def test_inception_reference_and_evaluation_are_labelled(tiny_dataset, inception_spec, tmp_path):
    ref = tmp_path / "ref.npz"
    reference_stats(str(tiny_dataset), "val", 16, inception_spec, str(ref), batch_size=8)
    arrays, meta = load_reference(str(ref))
    assert arrays["features"].shape == (16, 2048) and arrays["sigma"].shape == (2048, 2048)
    assert meta["extractor"]["extractor"] == "inception-v3-fid" and meta["num_images"] == 16
    assert meta["extractor"]["weights_sha256"] == inception_spec["sha256"]

    images, _ = data.read_split(tiny_dataset, "train", 16)
    samples = tmp_path / "s.h5"
    write_samples(samples, images)
    out = tmp_path / "m.json"
    options = opts(is_splits=2, kid_subsets=5, kid_subset_size=8, bootstrap=2)
    evaluate(str(samples), str(ref), inception_spec, str(out), options)
    m = json.loads(out.read_text())
    boot = m["bootstrap"]
    assert len(boot["fid"]) == 2 and boot["fid_interval"]["low"] <= boot["fid_interval"]["high"]
    assert m["label"]["fid"] == "FID@16" and m["label"]["is"] == "IS (2 splits)"
    assert m["extractor"]["preprocessing"] == "pytorch-fid" and m["n_real"] == 16 and m["n_generated"] == 16
    assert m["samples"]["experiment"] == "E" and m["samples"]["checkpoint_step"] == 7
    assert m["fid"] > 0 and m["is_mean"] >= 1.0

    # the same images as the reference give a distance of (numerically) zero
    val, _ = data.read_split(tiny_dataset, "val", 16)
    write_samples(samples, val)
    evaluate(str(samples), str(ref), inception_spec, str(out), options)
    assert json.loads(out.read_text())["fid"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.slow  # the full-size Inception at 299²
def test_reference_from_other_weights_is_refused(tiny_dataset, inception_spec, tmp_path):
    ref = tmp_path / "ref.npz"
    reference_stats(str(tiny_dataset), "val", 8, inception_spec, str(ref), batch_size=8)
    other = tmp_path / "other.pth"
    torch.manual_seed(1)
    torch.save(inception.FIDInceptionV3().state_dict(), other)
    spec = {**inception_spec, "weights": str(other), "sha256": file_sha256(other)}
    samples = tmp_path / "s.h5"
    write_samples(samples, np.zeros((8, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="rebuild the reference"):
        evaluate(str(samples), str(ref), spec, str(tmp_path / "m.json"), opts(is_splits=2, kid_subset_size=4))


@pytest.mark.slow  # the full-size Inception at 299²
def test_incomplete_sample_file_is_refused(tiny_dataset, inception_spec, tmp_path):
    ref = tmp_path / "ref.npz"
    reference_stats(str(tiny_dataset), "val", 8, inception_spec, str(ref), batch_size=8)
    samples = tmp_path / "s.h5"
    write_samples(samples, np.zeros((8, 8, 8, 3), dtype=np.uint8))
    with h5py.File(samples, "a") as f:
        f.attrs["complete"] = False
    with pytest.raises(ValueError, match="not a complete sample file"):
        evaluate(str(samples), str(ref), inception_spec, str(tmp_path / "m.json"), opts(is_splits=2))


@pytest.mark.slow  # the full-size Inception at 299²
def test_counts_that_cannot_support_the_metrics_fail_before_extraction(tiny_dataset, inception_spec, tmp_path):
    ref = tmp_path / "ref.npz"
    reference_stats(str(tiny_dataset), "val", 8, inception_spec, str(ref), batch_size=8)
    samples = tmp_path / "s.h5"
    write_samples(samples, np.zeros((8, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"evaluation\.kid_subset_size = 50"):
        evaluate(
            str(samples), str(ref), inception_spec, str(tmp_path / "m.json"), opts(is_splits=2, kid_subset_size=50)
        )
    with pytest.raises(ValueError, match=r"evaluation\.is_splits = 10"):
        evaluate(
            str(samples), str(ref), inception_spec, str(tmp_path / "m.json"), opts(is_splits=10, kid_subset_size=4)
        )
