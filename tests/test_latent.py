"""The latent pipeline: autoencoder stage (train or import, scale factor), latent cache, latent training and
decoding samples, and the configuration checks around them."""

from __future__ import annotations

import copy
import json

import h5py
import numpy as np
import pytest
import torch

from core import config as cfg
from core import data
from core.models import build_autoencoder, load_autoencoder, load_denoiser
from core.plan import Plan
from core.provenance import file_sha256
from core.stages.encode_latents import run as encode
from core.stages.evaluate_autoencoder import psnr
from core.stages.sample import run as run_sample
from core.stages.train import run as train
from core.stages.train_autoencoder import run as run_autoencoder
from tests.conftest import ROOT, TINY_MODEL, model_spec
from tests.conftest import sample_spec as complete_sample_spec

AE_SPEC = {
    "name": "tiny-f2",
    "dataset": "tiny",
    "net": {"ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "z_channels": 3},
    "train": {"steps": 6, "batch_size": 8, "lr": 1e-3, "kl_weight": 1e-6, "seed": 0},
    "checkpoint": None,
    "checkpoint_sha256": None,
    "scale_images": 64,
}


@pytest.fixture(scope="module")
def autoencoder(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("ae") / "vae.pt"
    meta = run_autoencoder(copy.deepcopy(AE_SPEC), str(tiny_dataset), str(out), str(out) + ".csv", "cpu")
    return out, meta


@pytest.fixture(scope="module")
def latents(autoencoder, tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("lat") / "latents.h5"
    encode(str(tiny_dataset), str(autoencoder[0]), str(out), batch_size=16, device_name="cpu")
    return out


def test_scale_factor_gives_unit_variance_latents(autoencoder, tiny_dataset):
    path, meta = autoencoder
    vae, saved = load_autoencoder(path)
    assert saved["latent_shape"] == [3, 4, 4] and saved["downsampling_factor"] == 2
    images, _ = data.read_split(tiny_dataset, "train")
    with torch.no_grad():
        z = vae.encode(data.to_model_range(images)).sample(torch.Generator().manual_seed(0))
    # computed from the same 64 training images (other noise draws): scaled std is 1 up to sampling noise
    assert float((z * meta["scale_factor"]).std()) == pytest.approx(1.0, rel=0.05)
    assert meta["scale_factor"] != pytest.approx(0.18215)  # not SD's hard-coded constant
    log = (path.parent / "vae.pt.csv").read_text().splitlines()
    assert log[0] == "step,loss,rec_l1,kl,elapsed_s,input_wait_s" and len(log) == 1 + AE_SPEC["train"]["steps"]
    assert all(float(line.split(",")[-1]) >= 0 for line in log[1:])


def test_latent_cache_round_trip(autoencoder, latents, tiny_dataset):
    vae, meta = load_autoencoder(autoencoder[0])
    with h5py.File(latents, "r") as f:
        assert f.attrs["layout"] == data.LATENT_LAYOUT and f.attrs["kind"] == "latents"
        assert f.attrs["scale_factor"] == pytest.approx(meta["scale_factor"])
        assert f.attrs["autoencoder_sha256"] == file_sha256(autoencoder[0])
        for split, n in (("train", 64), ("val", 32)):
            moments = f[f"{split}/moments"][:]
            assert moments.shape == (n, 6, 4, 4) and moments.dtype == np.float32
            images, labels = data.read_split(tiny_dataset, split)
            np.testing.assert_array_equal(f[f"{split}/labels"][:], labels)
            with torch.no_grad():
                post = vae.encode(data.to_model_range(images))
            np.testing.assert_allclose(moments[:, :3], post.mean.numpy(), rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(moments[:, 3:], post.logvar.numpy(), rtol=1e-5, atol=1e-5)
    # the batch loader reads latent rows through the same code as images
    loader = data.ImageBatches(latents, "train", 8, torch.Generator().manual_seed(0), key="moments")
    rows, labels = loader.next()
    assert rows.shape == (8, 6, 4, 4) and labels.shape == (8,)
    loader.close()
    with pytest.raises(ValueError, match="moments"):
        data.open_latents(tiny_dataset, "train")  # an image file is not a latent cache


def test_latent_model_trains_on_cache_and_samples_decoded_pixels(autoencoder, latents, tiny_spec, tmp_path):
    entry = {
        **TINY_MODEL,
        "space": "latent",
        "autoencoder": "tiny-f2",
        "net": {**TINY_MODEL["net"], "attention_resolutions": [2]},
    }
    spec = model_spec({**entry, "train": {**TINY_MODEL["train"], "steps": 4, "checkpoint_every": 4}}, input_size=4)
    train(spec, str(latents), str(tmp_path / "m"), "cpu")
    model, meta = load_denoiser(tmp_path / "m" / "ckpt" / "step0000004.pt")
    assert meta["in_channels"] == 3 and meta["image_size"] == 4 and meta["latent"]["pixel_size"] == 8
    assert meta["latent"]["autoencoder_sha256"] == file_sha256(autoencoder[0])
    sample_spec = complete_sample_spec(
        {
            "model": "m",
            "sampler": {"name": "ddim", "steps": 5, "clip_denoised": False},
            "guidance_scale": 2.0,
            "num_samples": 6,
            "batch_size": 4,
            "seed": 0,
            "trajectory_images": 2,
            "trajectory_points": 3,
        },
        experiment="x",
    )
    out = tmp_path / "s.h5"
    ckpt = str(tmp_path / "m" / "ckpt" / "step0000004.pt")
    run_sample(ckpt, sample_spec, str(out), "cpu", str(autoencoder[0]))
    with h5py.File(out, "r") as f:
        assert f["samples/images"].shape == (6, 8, 8, 3) and f.attrs["image_size"] == 8
        assert f["trajectory/images"].shape == (2, 4, 8, 8, 3)
        prov = json.loads(f.attrs["provenance"])
        assert prov["space"] == "latent" and prov["autoencoder"]["scale_factor"] == meta["latent"]["scale_factor"]
        first = f["samples/images"][:4]
    # the decoder sees z / scale_factor: decoding the same latent sample by hand gives the same pixels
    vae, _ = load_autoencoder(autoencoder[0])
    from core.config import sampler_spec
    from core.diffusion import GaussianDiffusion
    from core.sampling import sample

    gen = torch.Generator().manual_seed(0 * 1_000_003 + 0)
    x_T = torch.randn((4, 3, 4, 4), generator=gen)
    y = torch.arange(4) % meta["num_classes"]
    z = sample(
        model,
        GaussianDiffusion.from_spec(spec["diffusion"]),
        x_T,
        sampler_spec("ddim", 5, clip_denoised=False),
        y,
        2.0,
        gen,
    )
    with torch.no_grad():
        by_hand = data.to_uint8(vae.decode(z / meta["latent"]["scale_factor"]))
    np.testing.assert_array_equal(first, by_hand)

    # clipping latents is refused, and so is a missing or different autoencoder
    with pytest.raises(ValueError, match="clip_denoised must be false"):
        run_sample(
            ckpt,
            {**sample_spec, "sampler": {**sample_spec["sampler"], "clip_denoised": True}},
            str(tmp_path / "c.h5"),
            "cpu",
            str(autoencoder[0]),
        )
    with pytest.raises(ValueError, match="pass --autoencoder"):
        run_sample(ckpt, sample_spec, str(tmp_path / "n.h5"), "cpu", None)
    other = tmp_path / "other.pt"
    state = torch.load(autoencoder[0], weights_only=False)
    state["meta"]["scale_factor"] = 1.0
    torch.save(state, other)
    with pytest.raises(ValueError, match="retrain the model or use that file"):
        run_sample(ckpt, sample_spec, str(tmp_path / "o.h5"), "cpu", str(other))
    assert not (tmp_path / "o.h5").exists()


def test_import_checkpoint_verifies_hash_and_keys(autoencoder, tiny_dataset, tmp_path):
    vae, _ = load_autoencoder(autoencoder[0])
    weights = tmp_path / "user.ckpt"
    torch.save({"state_dict": vae.state_dict()}, weights)  # nested as in LDM's Lightning checkpoints
    spec = {**copy.deepcopy(AE_SPEC), "checkpoint": str(weights), "checkpoint_sha256": file_sha256(weights)}
    meta = run_autoencoder(spec, str(tiny_dataset), str(tmp_path / "imp.pt"), str(tmp_path / "imp.csv"), "cpu")
    assert meta["source"] == "checkpoint" and meta["checkpoint_sha256"] == file_sha256(weights)
    imported, _ = load_autoencoder(tmp_path / "imp.pt")
    for (k, a), b in zip(vae.state_dict().items(), imported.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    bad_hash = {**spec, "checkpoint_sha256": "0" * 64}
    with pytest.raises(ValueError, match=r"autoencoders.tiny-f2.checkpoint: .* has SHA-256"):
        run_autoencoder(bad_hash, str(tiny_dataset), str(tmp_path / "x.pt"), str(tmp_path / "x.csv"), "cpu")
    wider = {**spec, "checkpoint_sha256": None, "net": {**AE_SPEC["net"], "ch": 16}}
    with pytest.raises(ValueError, match="does not fit the configured net"):
        run_autoencoder(wider, str(tiny_dataset), str(tmp_path / "y.pt"), str(tmp_path / "y.csv"), "cpu")
    missing = {**spec, "checkpoint": str(tmp_path / "nope.ckpt"), "checkpoint_sha256": None}
    with pytest.raises(FileNotFoundError, match=r"autoencoders.tiny-f2.checkpoint"):
        run_autoencoder(missing, str(tiny_dataset), str(tmp_path / "z.pt"), str(tmp_path / "z.csv"), "cpu")
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "y.pt").exists()


def test_psnr_closed_form():
    a = np.zeros((2, 4, 4, 3), np.uint8)
    b = a.copy()
    b[0] = 10  # MSE 100 → 10·log10(255²/100); image 1 identical → capped at 1e-12 MSE
    per_image, pooled = psnr(a, b)
    assert pooled == pytest.approx(10 * np.log10(255**2 / 50))
    assert per_image == pytest.approx((10 * np.log10(255**2 / 100) + 10 * np.log10(255**2 / 1e-12)) / 2)
    assert build_autoencoder(AE_SPEC["net"], 8).downsampling_factor == 2


def _config() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_config_checks_for_latent_models():
    c = _config()
    plan = Plan(copy.deepcopy(c))
    assert plan.experiment("tiny", "DDIM-VAE-CFG")["sampler"]["clip_denoised"] is False  # never clipped
    assert plan.train_data("tiny", "unet-vae-cfg").endswith("latents/shapes-tiny-f2.h5")

    def refused(bad: dict, pattern: str) -> None:
        with pytest.raises(cfg.ConfigError, match=pattern):
            Plan(bad)

    bad = copy.deepcopy(c)
    bad["studies"]["tiny"]["experiments"]["DDIM-VAE-CFG"]["sampler"]["clip_denoised"] = True
    refused(bad, r"experiments.DDIM-VAE-CFG.sampler.clip_denoised: .* latent model")
    bad = copy.deepcopy(c)
    del bad["studies"]["tiny"]["models"]["unet-vae-cfg"]["autoencoder"]
    refused(bad, r"models.unet-vae-cfg.autoencoder: a latent model needs")
    bad = copy.deepcopy(c)
    bad["studies"]["tiny"]["models"]["unet-vae-cfg"]["autoencoder"] = "nope"
    refused(bad, "autoencoder 'nope' is not defined")
    bad = copy.deepcopy(c)
    bad["autoencoders"]["shapes-tiny-f2"]["dataset"] = "shapes12"
    refused(bad, r"autoencoders.shapes-tiny-f2.dataset: 'shapes12' differs")
    bad = copy.deepcopy(c)
    bad["autoencoders"]["shapes-tiny-f2"]["net"]["ch_mult"] = [1, 2, 2, 2, 2]
    refused(bad, "downsampling factor 16 does not divide the image size 8")
    bad = copy.deepcopy(c)
    bad["studies"]["tiny"]["models"]["dit-vae-cfg"]["net"]["base_channels"] = 8
    refused(bad, r"dit-vae-cfg.net: Additional properties are not allowed \('base_channels' was unexpected\)")
    bad = copy.deepcopy(c)
    bad["studies"]["tiny"]["models"]["unet-cfg"]["autoencoder"] = "shapes-tiny-f2"
    refused(bad, "only latent models")
