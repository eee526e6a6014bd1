import pytest
import torch

from core.dit import DIT_CONFIGS, build_dit, sincos_pos_embed_2d
from core.models import build_model

# Table 4 of Peebles & Xie (2023), 32×32×4 latents, 1000 classes, learned σ (8 output channels). The official
# code keeps the fixed position embedding as a frozen parameter, so its counts include grid² × width.
PUBLISHED_M = {"DiT-S/2": 33.0, "DiT-B/2": 130.5, "DiT-L/2": 458.1, "DiT-XL/2": 675.1}


@pytest.mark.parametrize("name", sorted(PUBLISHED_M))
def test_zoo_parameter_counts_match_the_paper(name):
    with torch.device("meta"):
        model = build_dit(name, 32, 4, 1000, out_channels=8)
    n = sum(p.numel() for p in model.parameters()) + model.pos_embed.numel()
    assert n / 1e6 == pytest.approx(PUBLISHED_M[name], abs=0.06)


def test_patch_size_barely_changes_the_count():
    with torch.device("meta"):
        counts = [sum(p.numel() for p in build_dit(f"DiT-XL/{p}", 32, 4, 1000).parameters()) for p in (2, 4, 8)]
    assert max(counts) / min(counts) < 1.002


@pytest.mark.parametrize(("size", "patch", "channels"), [(32, 2, 3), (16, 4, 4), (128, 16, 3)])
def test_output_shape_and_exact_zero_at_init(size, patch, channels):
    model = build_dit({"depth": 2, "hidden_size": 32, "num_heads": 4, "patch_size": patch}, size, channels, 5)
    x = torch.randn(2, channels, size, size)
    out = model(x, torch.tensor([3, 700]), torch.tensor([1, 5]))
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0  # adaLN-Zero and a zero final layer


def test_output_depends_on_t_and_y_once_trained():
    torch.manual_seed(0)
    model = build_dit({"depth": 2, "hidden_size": 32, "num_heads": 4, "patch_size": 2}, 8, 3, 5)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        base = model(x, torch.tensor([10]), torch.tensor([0]))
        assert not torch.allclose(base, model(x, torch.tensor([500]), torch.tensor([0])))
        assert not torch.allclose(base, model(x, torch.tensor([10]), torch.tensor([1])))
        assert torch.equal(model(x, torch.tensor([10]), None), model(x, torch.tensor([10]), torch.tensor([5])))
    uncond = build_dit({"depth": 1, "hidden_size": 32, "num_heads": 4, "patch_size": 2}, 8, 3, 0)
    with pytest.raises(ValueError, match="unconditional"):
        uncond(x, torch.tensor([1]), torch.tensor([0]))


def test_position_embedding_is_fixed_sincos():
    model = build_dit({"depth": 1, "hidden_size": 16, "num_heads": 2, "patch_size": 2}, 8, 3, 0)
    assert "pos_embed" not in dict(model.named_parameters())
    pe = sincos_pos_embed_2d(16, 4)
    assert pe.shape == (16, 16)
    # token (row 1, col 2): first quarter sin(row·ω), third quarter sin(col·ω), ω_0 = 1
    assert pe[1 * 4 + 2, 0].item() == pytest.approx(torch.sin(torch.tensor(1.0)).item())
    assert pe[1 * 4 + 2, 8].item() == pytest.approx(torch.sin(torch.tensor(2.0)).item())
    assert torch.equal(model.pos_embed[0], pe)


def test_unpatchify_inverts_patchify():
    model = build_dit({"depth": 1, "hidden_size": 16, "num_heads": 2, "patch_size": 4}, 16, 3, 0)
    x = torch.randn(2, 3, 16, 16)
    p = 4
    tokens = x.reshape(2, 3, 4, p, 4, p).permute(0, 2, 4, 3, 5, 1).reshape(2, 16, p * p * 3)
    assert torch.equal(model.unpatchify(tokens), x)


def test_reference_configurations_and_model_builder():
    assert DIT_CONFIGS["ref-12"] == {"depth": 12, "hidden_size": 768, "num_heads": 12, "patch_size": 2}
    assert DIT_CONFIGS["ref-8"]["depth"] == 8 and DIT_CONFIGS["pixel-ref"]["patch_size"] == 16
    spec = {"backbone": "dit", "net": {"config": "ref-8", "class_conditional": True}}
    with torch.device("meta"):
        model = build_model(spec, 32, 3, 100)
    assert model.patch_size == 2 and len(model.blocks) == 8 and model.num_classes == 100
    spec = {"backbone": "dit", "net": {"patch_size": 2, "hidden_size": 32, "depth": 1, "num_heads": 2}}
    assert build_model(spec, 8, 3, 0)(torch.randn(1, 3, 8, 8), torch.tensor([1])).shape == (1, 3, 8, 8)


def test_dit_trains_and_samples_through_the_same_stages(tiny_dataset, tmp_path):
    import h5py

    from core import sample as sample_stage
    from core import train as train_stage
    from tests.conftest import TINY_MODEL

    spec = {
        **TINY_MODEL,
        "backbone": "dit",
        "net": {"patch_size": 2, "hidden_size": 32, "depth": 2, "num_heads": 4, "class_conditional": True},
        "train": {**TINY_MODEL["train"], "steps": 4, "checkpoint_every": 4},
    }
    train_stage.train(spec, str(tiny_dataset), str(tmp_path / "m"), "cpu")
    sampling = {
        "sampler": {"name": "ddim", "steps": 5},
        "guidance_scale": 2.0,
        "num_samples": 6,
        "batch_size": 3,
        "seed": 0,
    }
    sample_stage.run(str(tmp_path / "m" / "ckpt" / "step0000004.pt"), sampling, str(tmp_path / "s.h5"), "cpu")
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert f.attrs["complete"] and f["samples/images"].shape == (6, 8, 8, 3)
