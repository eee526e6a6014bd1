import math

import pytest
import torch

from core.diffusion import GaussianDiffusion, cosine_alphas_cumprod, make_betas


def test_linear_schedule_closed_form():
    betas = make_betas("linear", 1000, beta_start=1e-4, beta_end=0.02)
    assert betas[0].item() == pytest.approx(1e-4)
    assert betas[-1].item() == pytest.approx(0.02)
    d = GaussianDiffusion(betas)
    # ᾱ_t = ∏(1 − β_s); log ᾱ_T ≈ −Σβ for small β: Σβ = T·(β_1+β_T)/2 = 10.05
    expected = torch.prod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))
    assert d.alphas_cumprod[-1].item() == pytest.approx(expected.item(), rel=1e-12)
    assert math.log(d.alphas_cumprod[-1].item()) == pytest.approx(-10.05, rel=0.01)


def test_cosine_schedule_matches_formula():
    T, s = 1000, 0.008
    d = GaussianDiffusion(make_betas("cosine", T, s=s))
    for t in (0, 100, 500, 900):
        f = math.cos(((t + 1) / T + s) / (1 + s) * math.pi / 2) ** 2 / math.cos(s / (1 + s) * math.pi / 2) ** 2
        assert d.alphas_cumprod[t].item() == pytest.approx(f, rel=1e-9)
    assert d.betas.max().item() <= 0.999
    assert cosine_alphas_cumprod(torch.tensor([0.0], dtype=torch.float64)).item() == pytest.approx(1.0)


def test_sigmoid_schedule_is_monotone_and_ends_near_zero():
    d = GaussianDiffusion(make_betas("sigmoid", 1000, start=-3.0, end=3.0, tau=1.0))
    a = d.alphas_cumprod
    assert torch.all(a[1:] < a[:-1])
    assert a[0].item() > 0.99 and a[-1].item() < 1e-3
    assert torch.all((d.betas > 0) & (d.betas <= 0.999))


def test_unknown_schedule_is_an_error():
    with pytest.raises(ValueError, match="unknown noise schedule"):
        make_betas("quadratic", 10)


def test_forward_noising_statistics():
    d = GaussianDiffusion(make_betas("linear", 1000, beta_start=1e-4, beta_end=0.02))
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((20000, 1), 0.7)
    t = torch.full((20000,), 300, dtype=torch.long)
    xt = d.q_sample(x0, t, torch.randn(x0.shape, generator=g))
    a = d.alphas_cumprod[300].item()
    assert xt.mean().item() == pytest.approx(math.sqrt(a) * 0.7, abs=0.02)
    assert xt.var().item() == pytest.approx(1 - a, rel=0.03)


def test_training_loss_is_mse_against_noise():
    d = GaussianDiffusion(make_betas("linear", 10, beta_start=1e-4, beta_end=0.02))

    class Zero(torch.nn.Module):
        num_classes = 0

        def forward(self, x, t, y=None):
            return torch.zeros_like(x)

    loss = d.training_loss(Zero(), torch.zeros(4096, 4), None, torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(1.0, rel=0.03)  # E[ε²] = 1
