import copy

import pytest
import torch
import yaml

from core import config as cfg
from core import paths
from core.nets import inception, zoo
from core.paths import checkpoint_steps
from core.plan import Plan
from core.sweeps import sweep_experiments
from tests.conftest import ROOT

BASE = yaml.safe_load((ROOT / "config.yaml").read_text())


def fresh():
    return copy.deepcopy(BASE)


def validate(c):
    return Plan(c)


def test_shipped_config_is_valid_and_resolves():
    plan = validate(fresh())
    spec = plan.model("demo-a", "unet-cfg")
    assert spec["net"]["class_conditional"] is True and spec["train"]["label_dropout"] > 0
    assert spec["train"]["steps"] == BASE["studies"]["demo-a"]["defaults"]["model"]["train"]["steps"]
    exp = plan.experiment("demo-a", "DDIM-CFG")
    assert exp["guidance_scale"] == BASE["studies"]["demo-a"]["experiments"]["DDIM-CFG"]["guidance_scale"] > 1
    assert exp["num_samples"] > 0
    assert plan.study("demo-a")["evaluation"]["is_splits"] == 10


def test_mistyped_key_is_named():
    c = fresh()
    c["studies"]["demo-a"]["models"]["unet-cfg"]["train"] = {"learning_rate": 1e-3}
    with pytest.raises(cfg.ConfigError, match=r"studies\.demo-a\.models\.unet-cfg\.train.*learning_rate"):
        validate(c)


def test_wrong_type_is_named():
    c = fresh()
    c["studies"]["demo-a"]["defaults"]["model"]["train"]["lr"] = "fast"
    with pytest.raises(cfg.ConfigError, match=r"studies\.demo-a\.defaults\.model\.train\.lr"):
        validate(c)


def test_cross_references_are_checked():
    c = fresh()
    c["studies"]["demo-a"]["experiments"]["DDIM"]["model"] = "nope"
    with pytest.raises(cfg.ConfigError, match=r"experiments\.DDIM\.model.*'nope'"):
        validate(c)
    c = fresh()
    c["studies"]["demo-b"]["experiments"]["baseline"]["guidance_scale"] = 3.0
    with pytest.raises(cfg.ConfigError, match=r"demo-b\.experiments\.baseline\.guidance_scale: .*class-conditional"):
        validate(c)
    c = fresh()
    c["default_studies"] = ["nonexistent"]
    with pytest.raises(cfg.ConfigError, match="default_studies"):
        validate(c)


def test_missing_required_setting_after_merge_is_named():
    c = fresh()
    del c["studies"]["demo-b"]["experiments"]["baseline"]["model"]
    with pytest.raises(cfg.ConfigError, match=r"studies\.demo-b\.experiments\.baseline: 'model' is a required"):
        validate(c)


def test_eval_steps_all_and_final():
    plan = validate(fresh())
    assert plan.eval_steps("demo-b", "baseline") == checkpoint_steps(plan.model("demo-b", "baseline")["train"])
    assert len(plan.eval_steps("demo-a", "DDPM")) == 1


def test_extractor_is_classifier_without_weights_and_inception_with_them(tmp_path):
    plan = validate(fresh())
    assert plan.extractor_kind("demo-a") == "classifier"
    assert plan.reference_file("demo-a").endswith("val-classifier-n1000.npz")
    weights = tmp_path / "pt_inception.pth"
    weights.write_bytes(b"x")
    c = fresh()
    c["metrics"] = {"inception_weights": str(weights), "preprocessing": "tf"}
    plan = validate(c)
    assert plan.extractor_kind("demo-a") == "inception"
    assert plan.reference_file("demo-a").endswith("val-inception-tf-n1000.npz")
    assert plan.extractor_spec("demo-a")["sha256"] == inception.INCEPTION_SHA256


def test_missing_inception_weights_are_named_at_planning_time(tmp_path):
    c = fresh()
    c["metrics"] = {"inception_weights": str(tmp_path / "nowhere.pth")}
    with pytest.raises(cfg.ConfigError, match=r"metrics\.inception_weights: .*nowhere\.pth does not exist"):
        validate(c)
    c = fresh()
    c["studies"]["demo-a"]["evaluation"]["extractor"] = "inception"
    with pytest.raises(cfg.ConfigError, match=r"needs metrics\.inception_weights"):
        validate(c).extractor_spec("demo-a")  # named when a target needs the study's metrics


def test_sample_counts_must_support_the_metrics():
    c = fresh()
    c["studies"]["demo-a"]["evaluation"]["kid_subset_size"] = 500
    with pytest.raises(cfg.ConfigError, match=r"experiments\.\w+.*num_samples: 300 samples .*kid_subset_size = 500"):
        validate(c)


def test_dit_models_need_a_zoo_name_or_their_sizes():
    c = fresh()
    c["studies"]["demo-a"]["models"]["dit"] = {"backbone": "dit", "net": {"config": "ref-8", "class_conditional": True}}
    validate(copy.deepcopy(c))
    c["studies"]["demo-a"]["models"]["dit"]["net"] = {"patch_size": 2, "class_conditional": True}
    with pytest.raises(cfg.ConfigError, match=r"studies\.demo-a\.models\.dit"):
        validate(c)


@pytest.mark.parametrize(
    ("backbone", "net"),
    [
        ("unet", {"base_channels": 8, "norm_groups": 4, "num_heads": 2}),
        ("dit", {"patch_size": 2, "hidden_size": 32, "depth": 1, "num_heads": 2}),
    ],
)
def test_a_backbone_is_declared_once_and_its_schema_builder_and_planning_check_agree(backbone, net):
    """A backbone is its net module plus one entry in core.models.BACKBONES, core.nets.zoo.PLAN_NET and the schema
    (enum and $defs/net_<backbone>): the three name the same backbones, and the schema's completed options build."""
    from core.models import BACKBONES, build_model

    defs = cfg.load_schema()["$defs"]
    assert defs["model"]["properties"]["backbone"]["enum"] == list(BACKBONES) == list(zoo.PLAN_NET)
    spec = cfg.complete_model({"backbone": backbone, "net": net, "train": {"steps": 10}}, 8)
    assert set(spec["net"]) <= set(defs[f"net_{backbone}"]["properties"])
    model = build_model(spec, 8, 3, 0)  # every option the schema filled in is one the builder takes
    assert model(torch.zeros(1, 3, 8, 8), torch.zeros(1, dtype=torch.long)).shape == (1, 3, 8, 8)
    with pytest.raises(cfg.ConfigError, match=r"model\.net\.num_heads: "):
        cfg.complete_model({"backbone": backbone, "net": {**net, "num_heads": 3}, "train": {"steps": 10}}, 8)


def test_early_stopping_models_are_sampled_at_their_best_checkpoint():
    c = fresh()
    c["studies"]["demo-a"]["models"]["unet-vae-cfg"]["train"] = {"early_stopping": {"every": 100, "patience": 3}}
    with pytest.raises(cfg.ConfigError, match=r"experiments\.DDPM-VAE\.checkpoints: .*checkpoints: best"):
        validate(copy.deepcopy(c))
    for e in ("DDPM-VAE", "DDPM-VAE-CFG", "DDIM-VAE-CFG"):
        c["studies"]["demo-a"]["experiments"][e]["checkpoints"] = "best"
    v = validate(c)
    assert v.eval_steps("demo-a", "DDIM-VAE-CFG") == ["best"]
    path = paths.samples(v.root, "demo-a", "DDIM-VAE-CFG", 0, "best")
    assert path.endswith("demo-a/samples/DDIM-VAE-CFG/r0/best.h5")
    assert v.model("demo-a", "unet-vae-cfg")["train"]["early_stopping"]["num_images"] == 1000  # schema default
    c = fresh()
    c["studies"]["demo-a"]["experiments"]["DiT-VAE-CFG-8"]["checkpoints"] = "best"
    with pytest.raises(cfg.ConfigError, match=r"DiT-VAE-CFG-8\.checkpoints: 'best' needs train\.early_stopping"):
        validate(c)


def test_sweeps_expand_into_experiments_once_without_repeating_the_base():
    c = fresh()
    c["studies"]["demo-a"]["sweeps"] = {
        "nfe": [{"base": "DDPM-CFG", "samplers": {"ddpm": [10, 50], "ddim": [50], "dpmpp2m": [20]}}],
        "guidance": [{"base": "DDIM-CFG", "scales": [1, 1.5, 3]}],
    }
    v = validate(c)
    # DDPM-50 at w=3 is DDPM-CFG itself, and w=3 is DDIM-CFG's own scale: neither is sampled twice
    assert sweep_experiments(v, "demo-a") == [
        "DDPM-CFG.nfe-ddpm-10",
        "DDPM-CFG.nfe-ddim-50",
        "DDPM-CFG.nfe-dpmpp2m-20",
        "DDIM-CFG.w1",
        "DDIM-CFG.w1.5",
    ]
    ddim = v.experiment("demo-a", "DDPM-CFG.nfe-ddim-50")
    assert ddim["sampler"] == {"name": "ddim", "steps": 50, "eta": 0.0, "spacing": "leading", "clip_denoised": True}
    assert ddim["guidance_scale"] == 3.0
    assert ddim["model"] == "unet-cfg" and ddim["sweep"] == {"kind": "nfe", "base": "DDPM-CFG"}
    assert v.sample_spec("demo-a", "DDPM-CFG.nfe-ddim-50", 0).keys().isdisjoint({"sweep", "published", "replicates"})
    assert v.experiment("demo-a", "DDIM-CFG.w1.5")["guidance_scale"] == 1.5
    assert len(sweep_experiments(validate(v.config), "demo-a")) == 5  # validating again adds nothing
    c = fresh()
    c["studies"]["demo-a"]["sweeps"] = {"guidance": [{"base": "nope", "scales": [1]}]}
    with pytest.raises(cfg.ConfigError, match=r"studies\.demo-a\.sweeps\.guidance\.0\.base: 'nope'"):
        validate(c)
    c = fresh()
    c["studies"]["demo-b"]["sweeps"] = {"guidance": [{"base": "baseline", "scales": [2]}]}  # unconditional model
    with pytest.raises(cfg.ConfigError, match=r"baseline\.w2\.guidance_scale: guidance needs a class-conditional"):
        validate(c)


def test_an_experiment_with_more_replicates_than_its_model_is_refused_naming_both_keys():
    c = fresh()
    c["studies"]["demo-b"]["experiments"]["low-lr"]["replicates"] = 2  # model low-lr is trained once
    with pytest.raises(
        cfg.ConfigError,
        match=r"studies\.demo-b\.experiments\.low-lr\.replicates: 2 sample sets"
        r".*studies\.demo-b\.models\.low-lr\.replicates",
    ):
        validate(c)
    # fewer sample sets than trained copies is fine, and replicate k samples copy k (one-to-one)
    c = fresh()
    c["studies"]["demo-b"]["experiments"]["baseline"]["replicates"] = 2
    plan = validate(c)
    assert [plan.model_replicate_of("demo-b", "baseline", k) for k in (0, 1)] == [0, 1]
    assert [plan.model_replicate_of("demo-b", "width-16", k) for k in (0, 1, 2)] == [0, 1, 2]
    with pytest.raises(ValueError, match="no replicate 2"):
        plan.model_replicate_of("demo-b", "baseline", 2)


def test_a_claims_rows_must_share_the_number_of_generated_images():
    c = fresh()
    c["studies"]["demo-b"]["experiments"]["width-12"]["num_samples"] = 300
    with pytest.raises(
        cfg.ConfigError,
        match=r"studies\.demo-b\.claims\.1: its rows differ in num_samples \(studies\.demo-b\.experiments\.width-12"
        r"\.num_samples = 300, studies\.demo-b\.experiments\.baseline\.num_samples = 150\)",
    ):
        validate(c)


def test_claims_list_what_differs_and_which_are_confounded():
    plan = validate(fresh())
    claims = {c["claim"]: c for c in plan.claims["demo-b"]}
    assert claims["width 12 beats 8"]["differs"] == ["model.net.base_channels 8→12", "model.train.hflip no→yes"]
    assert claims["width 12 beats 8"]["confounded"] == ["model.train.hflip no→yes"]  # varies names the width only
    assert claims["lower LR is worse"]["differs"] == ["model.train.lr 0.004→0.0008"]
    assert claims["lower LR is worse"]["confounded"] == [] and claims["lower LR is worse"]["correction"] == "holm"
    guided = next(c for c in plan.claims["demo-a"] if c["a"] == "DDPM-CFG" and c["b"] == "DDPM")
    assert guided["differs"] == ["guidance_scale 0.0→3.0"] and guided["confounded"] == []
    c = fresh()
    c["studies"]["demo-b"]["correction"] = "bh"
    del c["studies"]["demo-b"]["claims"][1]["varies"]  # unnamed: the differences are listed, nothing marked
    claims = validate(c).claims["demo-b"]
    assert claims[1]["confounded"] == [] and len(claims[1]["differs"]) == 2 and claims[0]["correction"] == "bh"
    c = fresh()
    c["studies"]["demo-b"]["correction"] = "bonferroni"
    with pytest.raises(cfg.ConfigError, match=r"studies\.demo-b.*correction"):
        validate(c)
