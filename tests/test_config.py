import copy

import pytest
import yaml

from core import config as cfg
from core.nets import inception
from tests.conftest import ROOT

BASE = yaml.safe_load((ROOT / "config.yaml").read_text())


def fresh():
    return copy.deepcopy(BASE)


def test_shipped_config_is_valid_and_resolves():
    c = cfg.validate(fresh())
    spec = cfg.model_spec(c, "demo-a", "unet-cfg")
    assert spec["net"]["class_conditional"] is True and spec["train"]["label_dropout"] == 0.1
    # YAML merge keys: the CFG model is the unconditional one's net with class_conditional switched on
    assert {**spec["net"], "class_conditional": False} == cfg.model_spec(c, "demo-a", "unet")["net"]
    assert spec["train"]["steps"] == c["studies"]["demo-a"]["defaults"]["model"]["train"]["steps"]
    exp = cfg.experiment_spec(c, "demo-a", "DDIM-CFG")
    assert exp["guidance_scale"] == BASE["studies"]["demo-a"]["experiments"]["DDIM-CFG"]["guidance_scale"] > 1
    assert exp["num_samples"] > 0
    assert c["studies"]["demo-a"]["evaluation"]["is_splits"] == 10


def test_mistyped_key_is_named():
    c = fresh()
    c["studies"]["demo-a"]["models"]["unet"]["train"] = {"learning_rate": 1e-3}
    with pytest.raises(cfg.ConfigError, match=r"studies\.demo-a\.models\.unet\.train.*learning_rate"):
        cfg.validate(c)


def test_wrong_type_is_named():
    c = fresh()
    c["studies"]["demo-a"]["defaults"]["model"]["train"]["lr"] = "fast"
    with pytest.raises(cfg.ConfigError, match=r"studies\.demo-a\.defaults\.model\.train\.lr"):
        cfg.validate(c)


def test_cross_references_are_checked():
    c = fresh()
    c["studies"]["demo-a"]["experiments"]["DDIM"]["model"] = "nope"
    with pytest.raises(cfg.ConfigError, match=r"experiments\.DDIM\.model.*'nope'"):
        cfg.validate(c)
    c = fresh()
    c["studies"]["demo-a"]["experiments"]["DDIM"]["guidance_scale"] = 3.0
    with pytest.raises(cfg.ConfigError, match="class-conditional"):
        cfg.validate(c)
    c = fresh()
    c["default_studies"] = ["nonexistent"]
    with pytest.raises(cfg.ConfigError, match="default_studies"):
        cfg.validate(c)


def test_missing_required_setting_after_merge_is_named():
    c = fresh()
    del c["studies"]["demo-b"]["defaults"]["model"]["train"]["steps"]
    with pytest.raises(cfg.ConfigError, match=r"studies\.demo-b\.models\.baseline.*steps"):
        cfg.validate(c)


def test_eval_steps_all_and_final():
    c = cfg.validate(fresh())
    assert cfg.eval_steps(c, "demo-b", "baseline") == cfg.checkpoint_steps(
        cfg.model_spec(c, "demo-b", "baseline")["train"]
    )
    assert len(cfg.eval_steps(c, "demo-a", "DDPM")) == 1


def test_extractor_is_classifier_without_weights_and_inception_with_them(tmp_path):
    c = cfg.validate(fresh())
    assert cfg.extractor_kind(c, "demo-a") == "classifier"
    assert cfg.reference_path(c, "demo-a").endswith("val-classifier-n1000.npz")
    weights = tmp_path / "pt_inception.pth"
    weights.write_bytes(b"x")
    c = fresh()
    c["metrics"] = {"inception_weights": str(weights), "preprocessing": "tf"}
    c = cfg.validate(c)
    assert cfg.extractor_kind(c, "demo-a") == "inception"
    assert cfg.reference_path(c, "demo-a").endswith("val-inception-tf-n1000.npz")
    assert cfg.extractor_spec(c, "demo-a")["sha256"] == inception.INCEPTION_SHA256


def test_missing_inception_weights_are_named_at_planning_time(tmp_path):
    c = fresh()
    c["metrics"] = {"inception_weights": str(tmp_path / "nowhere.pth")}
    with pytest.raises(cfg.ConfigError, match=r"metrics\.inception_weights: .*nowhere\.pth does not exist"):
        cfg.validate(c)
    c = fresh()
    c["studies"]["demo-a"]["evaluation"]["extractor"] = "inception"
    with pytest.raises(cfg.ConfigError, match=r"needs metrics\.inception_weights"):
        cfg.validate(c)


def test_sample_counts_must_support_the_metrics():
    c = fresh()
    c["studies"]["demo-a"]["evaluation"]["kid_subset_size"] = 5000
    with pytest.raises(cfg.ConfigError, match=r"experiments\.\w+.*num_samples.*kid_subset_size = 5000"):
        cfg.validate(c)


def test_dit_models_need_a_zoo_name_or_their_sizes():
    c = fresh()
    c["studies"]["demo-a"]["models"]["dit"] = {"backbone": "dit", "net": {"config": "ref-8", "class_conditional": True}}
    cfg.validate(copy.deepcopy(c))
    c["studies"]["demo-a"]["models"]["dit"]["net"] = {"patch_size": 2, "class_conditional": True}
    with pytest.raises(cfg.ConfigError, match=r"studies\.demo-a\.models\.dit"):
        cfg.validate(c)


def test_early_stopping_models_are_sampled_at_their_best_checkpoint():
    c = fresh()
    c["studies"]["demo-a"]["models"]["unet"]["train"] = {"early_stopping": {"every": 100, "patience": 3}}
    with pytest.raises(cfg.ConfigError, match=r"experiments\.DDPM\.checkpoints: .*checkpoints: best"):
        cfg.validate(copy.deepcopy(c))
    for e in ("DDPM", "DDIM"):
        c["studies"]["demo-a"]["experiments"][e]["checkpoints"] = "best"
    v = cfg.validate(c)
    assert cfg.eval_steps(v, "demo-a", "DDIM") == ["best"]
    assert cfg.sample_path(v, "demo-a", "DDIM", "best").endswith("demo-a/samples/DDIM/best.h5")
    assert cfg.model_spec(v, "demo-a", "unet")["train"]["early_stopping"]["num_images"] == 1000  # schema default
    c = fresh()
    c["studies"]["demo-a"]["experiments"]["DDIM-CFG"]["checkpoints"] = "best"
    with pytest.raises(cfg.ConfigError, match=r"DDIM-CFG\.checkpoints: 'best' needs train\.early_stopping"):
        cfg.validate(c)


def test_sweeps_expand_into_experiments_once_without_repeating_the_base():
    c = fresh()
    c["studies"]["demo-a"]["sweeps"] = {
        "nfe": [{"base": "DDPM-CFG", "samplers": {"ddpm": [10, 50], "ddim": [50], "dpmpp2m": [20]}}],
        "guidance": [{"base": "DDIM-CFG", "scales": [1, 1.5, 3]}],
    }
    v = cfg.validate(c)
    # DDPM-50 at w=3 is DDPM-CFG itself, and w=3 is DDIM-CFG's own scale: neither is sampled twice
    assert cfg.sweep_experiments(v, "demo-a") == [
        "DDPM-CFG.nfe-ddpm-10",
        "DDPM-CFG.nfe-ddim-50",
        "DDPM-CFG.nfe-dpmpp2m-20",
        "DDIM-CFG.w1",
        "DDIM-CFG.w1.5",
    ]
    ddim = cfg.experiment_spec(v, "demo-a", "DDPM-CFG.nfe-ddim-50")
    assert ddim["sampler"] == {"name": "ddim", "steps": 50, "eta": 0.0} and ddim["guidance_scale"] == 3.0
    assert ddim["model"] == "unet-cfg" and ddim["sweep"] == {"kind": "nfe", "base": "DDPM-CFG"}
    assert cfg.experiment_spec(v, "demo-a", "DDIM-CFG.w1.5")["guidance_scale"] == 1.5
    assert len(cfg.sweep_experiments(cfg.validate(v), "demo-a")) == 5  # validating again adds nothing
    c = fresh()
    c["studies"]["demo-a"]["sweeps"] = {"guidance": [{"base": "nope", "scales": [1]}]}
    with pytest.raises(cfg.ConfigError, match=r"studies\.demo-a\.sweeps\.guidance\.0\.base: 'nope'"):
        cfg.validate(c)
    c = fresh()
    c["studies"]["demo-a"]["sweeps"] = {"guidance": [{"base": "DDIM", "scales": [2]}]}  # unconditional model
    with pytest.raises(cfg.ConfigError, match=r"DDIM\.w2\.guidance_scale: guidance needs a class-conditional"):
        cfg.validate(c)


def test_sweep_deduplication_knows_the_samplers_defaults():
    """config cannot import core.sampling (torch) at planning time, so it restates SamplerSpec's defaults."""
    from core.sampling import SamplerSpec

    spec = SamplerSpec()
    for name in ("ddpm", "ddim"):
        filled = cfg._sampling_settings({"sampler": {"name": name, "steps": 10}})["sampler"]
        assert filled["spacing"] == spec.spacing
        assert filled.get("eta", spec.eta) == spec.eta and filled.get("variance", spec.variance) == spec.variance
