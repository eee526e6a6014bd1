import pytest
import torch

from core.config import sampler_spec
from core.diffusion import GaussianDiffusion, make_betas
from core.nets.unet import UNet
from core.sampling import guided_eps, label, make_timesteps, sample, trajectory_recorder

DIFF = GaussianDiffusion(make_betas("linear", 100, beta_start=1e-4, beta_end=0.02))


class Oracle(torch.nn.Module):
    """The exact ε-predictor for a dataset that is a single image x*."""

    num_classes = 0

    def __init__(self, target: torch.Tensor, diffusion: GaussianDiffusion) -> None:
        super().__init__()
        self.target, self.d = target, diffusion

    def forward(self, x, t, y=None):
        a = self.d.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        return (x - a.sqrt() * self.target) / (1 - a).sqrt()


def small_unet(num_classes: int = 0) -> UNet:
    torch.manual_seed(0)
    m = UNet(
        8,
        base_channels=8,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(4,),
        num_heads=1,
        norm_groups=4,
        num_classes=num_classes,
    )
    for p in m.parameters():  # zero-initialised output layers would make every test trivial
        torch.nn.init.normal_(p, std=0.1)
    return m.eval()


@pytest.mark.parametrize(
    "spec",
    [
        sampler_spec("ddim", 10),
        sampler_spec("ddim", 100, eta=1.0),
        sampler_spec("ddpm", 100),
        sampler_spec("ddpm", 20, variance="fixed_large"),
        sampler_spec("ddim", 7, spacing="trailing"),
        sampler_spec("ddim", 13, spacing="linspace", eta=0.5),
    ],
    ids=label,
)
def test_last_step_returns_x0_of_the_oracle(spec):
    target = torch.rand(1, 3, 8, 8) * 1.6 - 0.8
    g = torch.Generator().manual_seed(0)
    x = sample(Oracle(target, DIFF), DIFF, torch.randn(3, 3, 8, 8, generator=g), spec, generator=g)
    assert torch.allclose(x, target.expand_as(x), atol=1e-4)


def test_timestep_spacings():
    assert make_timesteps(1000, 4, "leading") == [750, 500, 250, 0]
    assert make_timesteps(1000, 4, "trailing") == [999, 749, 499, 249]
    assert make_timesteps(1000, 4, "linspace") == [999, 666, 333, 0]
    for spacing in ("leading", "trailing", "linspace"):
        assert make_timesteps(50, 50, spacing) == list(range(49, -1, -1))
    with pytest.raises(ValueError, match="between 1"):
        make_timesteps(10, 11, "leading")


def test_ddim_eta0_is_deterministic_given_x_T():
    m = small_unet()
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    a = sample(m, DIFF, x_T, sampler_spec("ddim", 10), generator=torch.Generator().manual_seed(2))
    b = sample(m, DIFF, x_T, sampler_spec("ddim", 10), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("clip", [True, False])
def test_ddpm_equals_ddim_eta1_on_all_steps(clip):
    m = small_unet()
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    a = sample(m, DIFF, x_T, sampler_spec("ddpm", 100, clip_denoised=clip), generator=torch.Generator().manual_seed(5))
    b = sample(
        m,
        DIFF,
        x_T,
        sampler_spec("ddim", 100, eta=1.0, clip_denoised=clip),
        generator=torch.Generator().manual_seed(5),
    )
    assert torch.allclose(a, b, atol=1e-4)
    c = sample(
        m,
        DIFF,
        x_T,
        sampler_spec("ddim", 100, eta=0.0, clip_denoised=clip),
        generator=torch.Generator().manual_seed(5),
    )
    assert not torch.allclose(a, c, atol=1e-2)  # the comparison above is not vacuous


def test_fixed_large_differs_from_fixed_small():
    m = small_unet()
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    a = sample(m, DIFF, x_T, sampler_spec("ddpm", 20), generator=torch.Generator().manual_seed(5))
    b = sample(
        m,
        DIFF,
        x_T,
        sampler_spec("ddpm", 20, variance="fixed_large"),
        generator=torch.Generator().manual_seed(5),
    )
    assert not torch.allclose(a, b, atol=1e-3)


def test_guidance_equivalences():
    m = small_unet(num_classes=3)
    x = torch.randn(4, 3, 8, 8)
    t = torch.tensor([5, 50, 70, 99])
    y = torch.tensor([0, 1, 2, 1])
    null = torch.full_like(y, 3)
    with torch.no_grad():
        eps_c, eps_u = m(x, t, y), m(x, t, null)
        assert torch.allclose(guided_eps(m, x, t, y, 1.0), eps_c, atol=1e-6)
        assert torch.allclose(guided_eps(m, x, t, y, 0.0), eps_u, atol=1e-6)
        assert torch.allclose(guided_eps(m, x, t, y, 3.0), eps_u + 3.0 * (eps_c - eps_u), atol=1e-5)
        assert not torch.allclose(eps_c, eps_u, atol=1e-4)


def test_guidance_scale_one_samples_like_plain_conditional():
    m = small_unet(num_classes=3)
    x_T = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2])

    class Plain(torch.nn.Module):
        num_classes = 3

        def forward(self, x, t, yy=None):
            return m(x, t, yy)

    a = sample(m, DIFF, x_T, sampler_spec("ddim", 10), y=y, guidance_scale=1.0)
    b = sample(Plain(), DIFF, x_T, sampler_spec("ddim", 10), y=y, guidance_scale=1.0)
    assert torch.equal(a, b)


def test_trajectory_records_snapshots_and_final_x0():
    m = small_unet()
    x_T = torch.randn(2, 3, 8, 8)
    record, traj = trajectory_recorder(4, 10)
    x = sample(m, DIFF, x_T, sampler_spec("ddim", 10), callback=record)
    assert [t for t, _ in traj] == [90, 60, 30, 0, -1]
    assert torch.equal(traj[0][1], x_T) and torch.equal(traj[-1][1], x)


def test_registry_schema_and_defaults_agree():
    """A sampler is declared once: its function and label here, its options and defaults in the config schema."""
    from core import config
    from core.sampling import COMMON_OPTIONS, SAMPLERS

    defs = config.load_schema()["$defs"]
    assert defs["sampler_name"]["enum"] == list(SAMPLERS)
    for name, entry in SAMPLERS.items():
        schema = defs[f"sampler_{name}"]
        assert schema["title"] == entry.title
        assert set(schema["properties"]) == {*COMMON_OPTIONS, *entry.options}, name
        assert set(defs["sampler"]["properties"]) >= set(schema["properties"])
    spec = sampler_spec("dpmpp2m")
    assert spec == {"name": "dpmpp2m", "steps": 20, "spacing": "trailing", "clip_denoised": True}
    assert label(sampler_spec("ddim", 50)) == "DDIM-50 (η=0, leading)"
    with pytest.raises(config.ConfigError, match=r"sampler: .*'eta' was unexpected"):
        sampler_spec("ddpm", 10, eta=0.5)  # an option DDPM does not use is refused, not ignored
