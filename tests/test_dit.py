import math

import pytest
import torch

from core.models import build_model
from core.nets.dit import DiT, build_dit, sincos_pos_embed_2d
from core.nets.zoo import DIT_CONFIGS

# Params (M) of Table 4 in Peebles & Xie (2023), arXiv:2212.09748, printed to the nearest million: 256² images
# → 32×32×4 latents, 1000 classes, learned σ (8 output channels).
PUBLISHED_M = {
    "DiT-S/8": 33, "DiT-S/4": 33, "DiT-S/2": 33,
    "DiT-B/8": 131, "DiT-B/4": 130, "DiT-B/2": 130,
    "DiT-L/8": 459, "DiT-L/4": 458, "DiT-L/2": 458,
    "DiT-XL/8": 676, "DiT-XL/4": 675, "DiT-XL/2": 675,
}  # fmt: skip


def tiny(patch: int = 2, size: int = 8, channels: int = 3, num_classes: int = 0, **kw) -> DiT:
    sizes = {"depth": 2, "hidden_size": 32, "num_heads": 4, "patch_size": patch, **kw}
    return build_dit(sizes, size, channels, num_classes)


def perturbed(model: DiT) -> DiT:
    """Leave the zero initialisation, as training would."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("name", list(PUBLISHED_M))
def test_zoo_parameter_counts_match_the_paper(name):
    with torch.device("meta"):  # no allocation: XL is 675M parameters
        model = build_dit(name, 32, 4, 1000, out_channels=8)
    n = sum(p.numel() for p in model.parameters())  # trainable only; pos_embed is a fixed buffer
    assert round(n / 1e6) == PUBLISHED_M[name]
    assert n / 1e6 == pytest.approx(PUBLISHED_M[name], rel=0.005)


def test_reference_configurations():
    assert DIT_CONFIGS["ref-12"] == {"depth": 12, "hidden_size": 768, "num_heads": 12, "patch_size": 2}
    assert DIT_CONFIGS["ref-8"] == {"depth": 8, "hidden_size": 512, "num_heads": 8, "patch_size": 2}
    assert DIT_CONFIGS["pixel-ref"] == {"depth": 8, "hidden_size": 512, "num_heads": 8, "patch_size": 16}
    assert DIT_CONFIGS["DiT-XL/4"] == {"depth": 28, "hidden_size": 1152, "num_heads": 16, "patch_size": 4}
    with torch.device("meta"):
        pixel = build_dit("pixel-ref", 128, 3, 10)
    assert pixel.pos_embed.shape == (1, 64, 512) and pixel.out_channels == 3
    with pytest.raises(ValueError, match="unknown DiT"):
        build_dit("DiT-M/2", 32, 4, 0)


@pytest.mark.parametrize(("size", "patch", "channels"), [(32, 2, 4), (16, 4, 3), (128, 16, 3), (8, 8, 1)])
def test_output_shape_and_exact_zero_at_init(size, patch, channels):
    model = tiny(patch, size, channels, num_classes=5)
    x = torch.randn(2, channels, size, size)
    with torch.no_grad():
        out = model(x, torch.tensor([3, 700]), torch.tensor([1, 5]))
        assert out.shape == x.shape
        assert torch.count_nonzero(out) == 0  # adaLN-Zero and a zero final layer
        assert torch.count_nonzero(model(x, torch.tensor([0.5, 999.0]))) == 0  # float t, null class
        assert perturbed(model)(x, torch.tensor([3, 700])).shape == x.shape


def test_learned_sigma_output_has_twice_the_channels():
    model = perturbed(tiny(num_classes=0, out_channels=6))
    assert model(torch.randn(2, 3, 8, 8), torch.tensor([1, 2])).shape == (2, 6, 8, 8)


def test_output_depends_on_t_and_y_once_trained():
    model = perturbed(tiny(num_classes=5))
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        base = model(x, torch.tensor([10]), torch.tensor([0]))
        assert base.abs().max() > 1e-3
        assert not torch.allclose(base, model(x, torch.tensor([500]), torch.tensor([0])))
        assert not torch.allclose(base, model(x, torch.tensor([10]), torch.tensor([1])))
        # y=None on a conditional model is the null class (index num_classes)
        null = model(x, torch.tensor([10]), torch.tensor([5]))
        assert torch.equal(model(x, torch.tensor([10]), None), null)
        # samples in a batch do not interact
        pair = model(torch.cat([x, torch.randn_like(x)]), torch.tensor([10, 300]), torch.tensor([0, 3]))
        torch.testing.assert_close(pair[:1], base, rtol=1e-5, atol=1e-6)


def test_unconditional_model_refuses_labels():
    model = tiny(num_classes=0)
    assert model.num_classes == 0 and model.y_embedder is None
    with pytest.raises(ValueError, match="unconditional"):
        model(torch.randn(1, 3, 8, 8), torch.tensor([1]), torch.tensor([0]))


def test_wrong_input_size_is_refused():
    with pytest.raises(ValueError, match="not divisible"):
        tiny(patch=3, size=8)
    with pytest.raises(ValueError, match="built for 8"):
        tiny()(torch.randn(1, 3, 16, 16), torch.tensor([1]))


def test_position_embedding_is_fixed_sincos():
    model = tiny(size=8, patch=2, hidden_size=16, num_heads=2)
    assert "pos_embed" not in dict(model.named_parameters())
    assert "pos_embed" in dict(model.named_buffers())
    pe = sincos_pos_embed_2d(16, 4)
    assert pe.shape == (16, 16)
    assert torch.equal(model.pos_embed[0], pe)
    # token (row 1, col 2) of a 4×4 grid: channels [0, 4) sin(row·ω), [4, 8) cos(row·ω), [8, 12) sin(col·ω),
    # [12, 16) cos(col·ω), ω_k = 10000^(−k/4)
    token = pe[1 * 4 + 2]
    for k in range(4):
        omega = 10000 ** (-k / 4)
        assert token[k].item() == pytest.approx(math.sin(1 * omega), abs=1e-6)
        assert token[4 + k].item() == pytest.approx(math.cos(1 * omega), abs=1e-6)
        assert token[8 + k].item() == pytest.approx(math.sin(2 * omega), abs=1e-6)
        assert token[12 + k].item() == pytest.approx(math.cos(2 * omega), abs=1e-6)
    assert not model.pos_embed.requires_grad


def test_unpatchify_inverts_patchify():
    model = tiny(patch=4, size=16, channels=3)
    x = torch.randn(2, 3, 16, 16)
    tokens = model.patchify(x)
    assert tokens.shape == (2, 16, 4 * 4 * 3)
    # token 1 is the patch at grid row 0, column 1
    assert torch.equal(tokens[:, 1].reshape(2, 4, 4, 3), x[:, :, 0:4, 4:8].permute(0, 2, 3, 1))
    assert torch.equal(model.unpatchify(tokens), x)


def test_patch_embedding_is_the_patchified_linear_map():
    """The stride-p conv equals a linear map on each flattened patch (what patchify means)."""
    model = perturbed(tiny(patch=4, size=16, channels=3))
    x = torch.randn(2, 3, 16, 16)
    w = model.x_embedder.weight.permute(0, 2, 3, 1).reshape(32, -1)  # (D, p·p·C) in patchify's order
    expected = model.patchify(x) @ w.T + model.x_embedder.bias
    torch.testing.assert_close(model.x_embedder(x).flatten(2).transpose(1, 2), expected, rtol=1e-4, atol=1e-5)


def test_reference_configuration_through_the_model_builder():
    spec = {"backbone": "dit", "net": {"config": "ref-8", "class_conditional": True}}
    with torch.device("meta"):
        model = build_model(spec, 32, 3, 100)
    assert model.patch_size == 2 and len(model.blocks) == 8 and model.num_classes == 100
    spec = {"backbone": "dit", "net": {"patch_size": 2, "hidden_size": 32, "depth": 1, "num_heads": 2}}
    assert build_model(spec, 8, 3, 0)(torch.randn(1, 3, 8, 8), torch.tensor([1])).shape == (1, 3, 8, 8)


def test_a_few_optimisation_steps_reduce_the_denoising_loss():
    torch.manual_seed(0)
    model = tiny(num_classes=3)
    x0 = torch.randn(8, 3, 8, 8)
    eps, t, y = torch.randn_like(x0), torch.randint(0, 1000, (8,)), torch.randint(0, 4, (8,))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = (model(x0 + eps, t, y) - eps).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(1.0, abs=0.15)  # zero output at init: loss = E[ε²]
    assert losses[-1] < 0.8 * losses[0]


def test_dit_trains_and_samples_through_the_same_stages(tiny_dataset, tmp_path):
    import h5py

    from core.stages import sample as sample_stage
    from core.stages import train as train_stage
    from tests.conftest import TINY_MODEL, model_spec, sample_spec

    spec = model_spec(
        {
            **TINY_MODEL,
            "backbone": "dit",
            "net": {"patch_size": 2, "hidden_size": 32, "depth": 2, "num_heads": 4, "class_conditional": True},
            "train": {**TINY_MODEL["train"], "steps": 4, "checkpoint_every": 4},
        }
    )
    train_stage.run(spec, str(tiny_dataset), str(tmp_path / "m"), "cpu")
    sampling = sample_spec(
        {
            "sampler": {"name": "ddim", "steps": 5},
            "guidance_scale": 2.0,
            "num_samples": 6,
            "batch_size": 3,
            "seed": 0,
        }
    )
    sample_stage.run(str(tmp_path / "m" / "ckpt" / "step0000004.pt"), sampling, str(tmp_path / "s.h5"), "cpu")
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert f.attrs["complete"] and f["samples/images"].shape == (6, 8, 8, 3)
