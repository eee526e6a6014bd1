import math

import pytest
import torch

from core.vae import AutoencoderKL, DiagonalGaussian, latent_scale_factor, vae_loss


def small(**kw) -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(**{"ch": 16, "ch_mult": (1, 2, 4), "num_res_blocks": 1, "resolution": 16, **kw})


def test_reference_configuration_size_and_factor():
    # the reference's f = 4 KL autoencoder: ch 128, mult (1, 2, 4), 2 blocks, 3 latent channels, ≈55M parameters
    with torch.device("meta"):
        vae = AutoencoderKL(ch=128, ch_mult=(1, 2, 4), num_res_blocks=2, z_channels=3, resolution=128)
    assert vae.downsampling_factor == 4
    assert sum(p.numel() for p in vae.parameters()) / 1e6 == pytest.approx(55.3, abs=0.1)


@pytest.mark.parametrize(("ch_mult", "factor"), [((1, 2, 4), 4), ((1, 2), 2)])
def test_encode_decode_shapes(ch_mult, factor):
    vae = small(ch_mult=ch_mult, attn_resolutions=(8,))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    posterior = vae.encode(x)
    assert posterior.mean.shape == (2, 3, 16 // factor, 16 // factor)
    assert vae.decode(posterior.sample()).shape == x.shape


def test_kl_closed_form():
    zero = DiagonalGaussian(torch.zeros(2, 6, 4, 4))  # mean 0, log-variance 0: exactly N(0, I)
    assert torch.equal(zero.kl(), torch.zeros(2))
    moments = torch.zeros(1, 2, 1, 1)
    moments[0, 0] = 1.0  # mean 1
    moments[0, 1] = math.log(4.0)  # variance 4
    expected = 0.5 * (1.0 + 4.0 - 1.0 - math.log(4.0))
    assert DiagonalGaussian(moments).kl().item() == pytest.approx(expected, rel=1e-6)


def test_posterior_sampling_statistics():
    moments = torch.zeros(1, 2, 200, 200)
    moments[:, 0] = 0.5
    moments[:, 1] = math.log(0.25)
    z = DiagonalGaussian(moments).sample(torch.Generator().manual_seed(0))
    assert z.mean().item() == pytest.approx(0.5, abs=0.01)
    assert z.std().item() == pytest.approx(0.5, abs=0.01)


def test_latent_scale_factor_gives_unit_variance():
    latents = torch.randn(64, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 5.4
    scaled = latents * latent_scale_factor(latents)
    assert scaled.std().item() == pytest.approx(1.0, rel=1e-5)


def test_training_reduces_the_loss():
    vae = small(ch=8, ch_mult=(1, 2), resolution=8)
    x = torch.rand(8, 3, 8, 8) * 2 - 1
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(vae.parameters(), lr=2e-3)
    first, _ = vae_loss(vae, x, generator=gen)
    for _ in range(60):
        loss, parts = vae_loss(vae, x, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.6 * first.item()
    assert set(parts) == {"rec", "kl"}
