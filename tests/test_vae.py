import math

import pytest
import torch

from core.nets.vae import AutoencoderKL, DiagonalGaussian, latent_scale_factor, vae_loss

# Parameter count of LDM's KL-f8 autoencoder (ch 128, ch_mult 1,2,4,4, 2 blocks, 4 latent channels), i.e. the
# Stable Diffusion VAE: 83,653,863, the figure reported for the released checkpoint; Peebles & Xie (2023),
# Table 4 caption, round it to "84M parameters across the encoder and decoder".
KL_F8_PARAMS = 83_653_863
# KL-f4 (ch_mult 1,2,4, 3 latent channels), the reference's autoencoder: "≈55M" in the reference study.
KL_F4_PUBLISHED_M = 55.0


def small(**kw) -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(**{"ch": 16, "ch_mult": (1, 2, 4), "num_res_blocks": 1, "resolution": 16, **kw})


def count(**kw) -> int:
    with torch.device("meta"):  # no allocation
        return sum(p.numel() for p in AutoencoderKL(**kw).parameters())


def test_parameter_counts_match_the_ldm_autoencoders():
    # the same code at the KL-f8 settings reproduces the released model's count exactly ...
    assert count(ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2, z_channels=4, resolution=256) == KL_F8_PARAMS
    # ... so the KL-f4 count (55,312,063) is that of LDM's KL-f4; the resolution does not change it
    n_f4 = count(ch=128, ch_mult=(1, 2, 4), num_res_blocks=2, z_channels=3, resolution=128)
    assert n_f4 == count(ch=128, ch_mult=(1, 2, 4), num_res_blocks=2, z_channels=3, resolution=256)
    assert n_f4 / 1e6 == pytest.approx(KL_F4_PUBLISHED_M, rel=0.02)


def test_reference_configuration_shapes():
    with torch.device("meta"):
        vae = AutoencoderKL(ch=128, ch_mult=(1, 2, 4), num_res_blocks=2, z_channels=3, resolution=128)
        posterior = vae.encode(torch.empty(2, 3, 128, 128))
        assert vae.downsampling_factor == 4
        assert posterior.mean.shape == (2, 3, 32, 32)
        assert vae.decode(posterior.mode()).shape == (2, 3, 128, 128)


@pytest.mark.parametrize(("ch_mult", "factor"), [((1, 2, 4), 4), ((1, 2), 2)])
def test_encode_decode_shapes(ch_mult, factor):
    vae = small(ch_mult=ch_mult, attn_resolutions=(8,))
    assert vae.downsampling_factor == factor
    assert any(type(m).__name__ == "AttnBlock" for m in vae.encoder.down.modules())
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        posterior = vae.encode(x)
        assert posterior.mean.shape == posterior.logvar.shape == (2, 3, 16 // factor, 16 // factor)
        assert vae.decode(posterior.sample()).shape == x.shape
        reconstruction, _ = vae(x, sample=False)
        assert torch.equal(reconstruction, vae.decode(posterior.mode()))


def test_embed_dim_sets_the_latent_channels():
    vae = small(z_channels=4, embed_dim=2)
    with torch.no_grad():
        z = vae.encode(torch.zeros(1, 3, 16, 16)).sample()
        assert z.shape == (1, 2, 4, 4)
        assert vae.decode(z).shape == (1, 3, 16, 16)


def test_kl_closed_form():
    zero = DiagonalGaussian(torch.zeros(2, 6, 4, 4))  # mean 0, log-variance 0: exactly N(0, I)
    assert torch.equal(zero.kl(), torch.zeros(2))
    # one latent with mean 1 and variance 4, one with mean −2 and variance 1/4:
    # ½(μ² + σ² − 1 − log σ²) = ½(1 + 4 − 1 − log 4) + ½(4 + 1/4 − 1 + log 4)
    moments = torch.tensor([1.0, -2.0, math.log(4.0), math.log(0.25)]).reshape(1, 4, 1, 1)
    expected = 0.5 * (4.0 - math.log(4.0)) + 0.5 * (3.25 + math.log(4.0))
    assert DiagonalGaussian(moments).kl().item() == pytest.approx(expected, rel=1e-6)
    # per sample: summed over channels and positions
    batch = DiagonalGaussian(torch.cat([moments.expand(1, 4, 3, 5), torch.zeros(1, 4, 3, 5)]))
    torch.testing.assert_close(batch.kl(), torch.tensor([15 * expected, 0.0]))


def test_logvar_is_clamped():
    moments = torch.cat([torch.zeros(1, 1, 1, 2), torch.tensor([-100.0, 100.0]).reshape(1, 1, 1, 2)], dim=1)
    posterior = DiagonalGaussian(moments)
    assert posterior.logvar.flatten().tolist() == [-30.0, 20.0]
    assert torch.isfinite(posterior.kl()).all()


def test_posterior_sampling_statistics():
    moments = torch.zeros(1, 2, 200, 200)
    moments[:, 0] = 0.5
    moments[:, 1] = math.log(0.25)
    posterior = DiagonalGaussian(moments)
    z = posterior.sample(torch.Generator().manual_seed(0))
    assert z.mean().item() == pytest.approx(0.5, abs=0.01)  # 40,000 draws: standard error 0.0025
    assert z.std().item() == pytest.approx(0.5, abs=0.01)
    assert torch.equal(z, posterior.sample(torch.Generator().manual_seed(0)))
    assert not torch.equal(z, posterior.sample(torch.Generator().manual_seed(1)))
    assert torch.equal(posterior.mode(), moments[:, :1])


def test_latent_scale_factor_gives_unit_variance():
    latents = torch.randn(64, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 5.4 + 0.3
    factor = latent_scale_factor(latents)
    assert factor == pytest.approx(1 / 5.4, rel=0.03)
    assert (latents * factor).std().item() == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ValueError, match="standard deviation"):
        latent_scale_factor(torch.ones(4, 3, 2, 2))


def test_training_reduces_the_loss():
    vae = small(ch=8, ch_mult=(1, 2), resolution=8)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 8, 8, generator=gen) * 2 - 1
    opt = torch.optim.Adam(vae.parameters(), lr=1e-2)
    first, parts = vae_loss(vae, x, generator=gen)
    assert set(parts) == {"rec", "kl"} and parts["kl"] > 0
    assert first.item() == pytest.approx(parts["rec"] + 1e-6 * parts["kl"], rel=1e-5)
    for _ in range(40):
        loss, parts = vae_loss(vae, x, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first.item()  # ≈ 0.5 over seeds 0–3
