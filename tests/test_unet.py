import pytest
import torch

from core.nets.unet import UNet


def test_output_shape_and_zero_init():
    m = UNet(
        16,
        base_channels=8,
        channel_mult=(1, 2, 2),
        num_res_blocks=2,
        attention_resolutions=(8, 4),
        num_heads=2,
        norm_groups=4,
    )
    x = torch.randn(3, 3, 16, 16)
    out = m(x, torch.tensor([0, 10, 999]))
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0  # zero-initialised output convolution


def test_class_conditioning_and_null_class():
    torch.manual_seed(0)
    m = UNet(
        8,
        base_channels=8,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(),
        norm_groups=4,
        num_classes=5,
    )
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([3, 3])
    with torch.no_grad():
        a, b = m(x, t, torch.tensor([0, 0])), m(x, t, torch.tensor([1, 1]))
        null = m(x, t, torch.tensor([5, 5]))
        assert not torch.allclose(a, b)
        assert torch.equal(m(x, t, None), null)  # no labels means the null class
    assert m.class_emb.num_embeddings == 6


def test_unconditional_model_refuses_labels():
    m = UNet(8, base_channels=8, channel_mult=(1,), num_res_blocks=1, attention_resolutions=(), norm_groups=4)
    with pytest.raises(ValueError, match="unconditional"):
        m(torch.randn(1, 3, 8, 8), torch.tensor([1]), torch.tensor([0]))


def test_bad_widths_are_clear_errors():
    with pytest.raises(ValueError, match="norm_groups"):
        UNet(8, base_channels=12, channel_mult=(1,), norm_groups=8)
    with pytest.raises(ValueError, match="divisible by 2"):
        UNet(12, base_channels=8, channel_mult=(1, 2, 2, 2), norm_groups=8)


def test_reference_configuration_size():
    # The reference's Study A UNet: base 128, mult [1,2,2,4], 2 blocks, attention at 32² and 16², ≈74M.
    with torch.device("meta"):
        m = UNet(
            128,
            base_channels=128,
            channel_mult=(1, 2, 2, 4),
            num_res_blocks=2,
            attention_resolutions=(32, 16),
        )
    n = sum(p.numel() for p in m.parameters())
    assert 70e6 < n < 78e6


def test_attention_block_is_multi_head_softmax_attention():
    """The block against attention written out: per head, softmax(q kᵀ / √d) v over the H·W positions."""
    from core.nets.unet import AttentionBlock

    torch.manual_seed(0)
    block = AttentionBlock(16, num_heads=4, groups=4)
    torch.nn.init.normal_(block.proj.weight)  # zero-initialised: give it weights so the output depends on it
    x = torch.randn(2, 16, 3, 5)
    t = block.norm(x).flatten(2).transpose(1, 2)  # (B, 15, 16)
    q, k, v = (t @ w.T + b for w, b in zip(block.qkv.weight.chunk(3), block.qkv.bias.chunk(3), strict=True))
    heads = [
        torch.softmax(q[..., i : i + 4] @ k[..., i : i + 4].transpose(1, 2) / 2.0, dim=-1) @ v[..., i : i + 4]
        for i in range(0, 16, 4)
    ]
    expected = x + (torch.cat(heads, -1) @ block.proj.weight.T + block.proj.bias).transpose(1, 2).reshape(2, 16, 3, 5)
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)
