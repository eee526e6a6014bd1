"""The KL autoencoder of latent diffusion (Rombach et al. 2022, "AutoencoderKL"), for latent-space rows.

Encoder: conv_in; per level ``num_res_blocks`` ResNet blocks (GroupNorm(32) → SiLU → conv, twice) with
single-head attention after each block at ``attn_resolutions``, a stride-2 conv between levels; a middle
ResNet–attention–ResNet; GroupNorm, SiLU, conv_out to 2·z_channels (mean and log-variance). A 1×1
``quant_conv`` maps them to 2·embed_dim moments of the posterior; ``post_quant_conv`` maps a latent back to
z_channels for the decoder, which mirrors the encoder with ``num_res_blocks`` + 1 blocks per level and
nearest-neighbour upsampling + conv. The downsampling factor is f = 2^(len(ch_mult) − 1).

ch = 128, ch_mult = (1, 2, 4), 2 blocks, 3 latent channels is LDM's KL-f4 model, the reference's
autoencoder (128² → 32×32×3, 55.3M parameters); ch_mult = (1, 2, 4, 4) with 4 latent channels is LDM's
KL-f8 (the Stable Diffusion VAE, 83.65M parameters; both counts are checked in tests/test_vae.py).

Training loss here: L1 reconstruction + ``kl_weight`` · KL(q(z|x) ‖ N(0, I)); the LPIPS perceptual and
patch-adversarial terms of LDM are omitted. Latents are multiplied by ``latent_scale_factor`` (1/std of the
training latents, computed from the data rather than hard-coded as SD's 0.18215) before diffusion. Images
are in [−1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm(32) as in LDM; widths not divisible by 32 (tiny test models only) use gcd(32, C) groups."""
    return nn.GroupNorm(math.gcd(32, channels), channels, eps=1e-6)


class ResnetBlock(nn.Module):
    """GroupNorm → SiLU → 3×3 conv, twice (dropout before the second conv), 1×1 shortcut if widths differ."""

    def __init__(self, c_in: int, c_out: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1, self.conv1 = group_norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = group_norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.nin_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H·W positions with 1×1 q, k, v and output projections, residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = group_norm(channels)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(channels, channels, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = self.norm(x)
        q, k, v = (m(n).reshape(b, 1, c, h * w).transpose(-1, -2) for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 3×3 conv with LDM's asymmetric (right/bottom) zero padding: H → H/2 exactly."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour ×2 upsampling followed by a 3×3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DiagonalGaussian:
    """The posterior q(z|x) = N(mean, diag(exp(logvar))), from moments (N, 2·C, h, w) split along channels.

    The log-variance is clamped to [−30, 20] as in LDM, to keep exp() finite.
    """

    def __init__(self, moments: torch.Tensor) -> None:
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mean + std · ε, ε ~ N(0, I) drawn from ``generator`` (reparameterised: differentiable)."""
        mean = self.mean
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q ‖ N(0, I)) = ½ Σ (μ² + σ² − 1 − log σ²) per sample, summed over all non-batch dims."""
        return 0.5 * (self.mean.pow(2) + self.var - 1.0 - self.logvar).flatten(1).sum(dim=1)


class Encoder(nn.Module):
    """x (N, in_channels, R, R) → moments (N, 2·z_channels, R/f, R/f)."""

    def __init__(
        self,
        ch: int,
        ch_mult: Sequence[int],
        num_res_blocks: int,
        z_channels: int,
        in_channels: int,
        resolution: int,
        attn_resolutions: Sequence[int],
        dropout: float,
    ) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        c, res = ch, resolution
        for level, mult in enumerate(ch_mult):
            layers = nn.ModuleList()
            for _ in range(num_res_blocks):
                layers.append(ResnetBlock(c, ch * mult, dropout))
                c = ch * mult
                if res in attn_resolutions:
                    layers.append(AttnBlock(c))
            if level < len(ch_mult) - 1:
                layers.append(Downsample(c))
                res //= 2
            self.down.append(layers)
        self.mid = nn.Sequential(ResnetBlock(c, c, dropout), AttnBlock(c), ResnetBlock(c, c, dropout))
        self.norm_out = group_norm(c)
        self.conv_out = nn.Conv2d(c, 2 * z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for layers in self.down:
            for layer in layers:
                h = layer(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    """z (N, z_channels, R/f, R/f) → x̂ (N, out_channels, R, R); the encoder's mirror image."""

    def __init__(
        self,
        ch: int,
        ch_mult: Sequence[int],
        num_res_blocks: int,
        z_channels: int,
        out_channels: int,
        resolution: int,
        attn_resolutions: Sequence[int],
        dropout: float,
    ) -> None:
        super().__init__()
        c = ch * ch_mult[-1]
        res = resolution // 2 ** (len(ch_mult) - 1)
        self.conv_in = nn.Conv2d(z_channels, c, 3, padding=1)
        self.mid = nn.Sequential(ResnetBlock(c, c, dropout), AttnBlock(c), ResnetBlock(c, c, dropout))
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(ch_mult))):
            layers = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                layers.append(ResnetBlock(c, ch * mult, dropout))
                c = ch * mult
                if res in attn_resolutions:
                    layers.append(AttnBlock(c))
            if level > 0:
                layers.append(Upsample(c))
                res *= 2
            self.up.append(layers)
        self.norm_out = group_norm(c)
        self.conv_out = nn.Conv2d(c, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for layers in self.up:
            for layer in layers:
                h = layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoencoderKL(nn.Module):
    """LDM's KL-regularised autoencoder: ``encode(x)`` → posterior, ``decode(z)`` → image.

    Defaults are the reference's KL-f4 model at 128². ``embed_dim`` (the latent's channel count) defaults to
    ``z_channels``, as in every released LDM KL model. ``resolution`` only places the attention blocks.
    """

    def __init__(
        self,
        ch: int = 128,
        ch_mult: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 2,
        z_channels: int = 3,
        in_channels: int = 3,
        resolution: int = 128,
        attn_resolutions: Sequence[int] = (),
        dropout: float = 0.0,
        embed_dim: int | None = None,
    ) -> None:
        super().__init__()
        factor = 2 ** (len(ch_mult) - 1)
        if resolution % factor:
            raise ValueError(f"VAE resolution {resolution} is not divisible by the downsampling f = {factor}")
        self.downsampling_factor = factor
        self.z_channels = z_channels
        self.embed_dim = z_channels if embed_dim is None else embed_dim
        args = (ch, tuple(ch_mult), num_res_blocks, z_channels)
        self.encoder = Encoder(*args, in_channels, resolution, tuple(attn_resolutions), dropout)
        self.decoder = Decoder(*args, in_channels, resolution, tuple(attn_resolutions), dropout)
        self.quant_conv = nn.Conv2d(2 * z_channels, 2 * self.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(self.embed_dim, z_channels, 1)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        return DiagonalGaussian(self.quant_conv(self.encoder(x)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))

    def forward(
        self, x: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, DiagonalGaussian]:
        """Reconstruction of x from a posterior sample (or its mode) and the posterior itself."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample else posterior.mode()
        return self.decode(z), posterior


def vae_loss(
    vae: AutoencoderKL, x: torch.Tensor, kl_weight: float = 1e-6, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """L1 reconstruction (mean over all pixels) + kl_weight · KL (summed per sample, mean over the batch).

    LDM's perceptual (LPIPS) and adversarial (patch discriminator) terms, and its learned output log-variance,
    are omitted. Note that LDM sums the reconstruction term over pixels too, so the same ``kl_weight`` weighs
    the KL H·W·C times more here than there.
    """
    reconstruction, posterior = vae(x, sample=True, generator=generator)
    rec = (reconstruction - x).abs().mean()
    kl = posterior.kl().mean()
    return rec + kl_weight * kl, {"rec": rec.item(), "kl": kl.item()}


def latent_scale_factor(latents: torch.Tensor) -> float:
    """1 / std of the (training) latents, so that ``latents * factor`` has unit variance."""
    std = latents.detach().double().std().item()
    if not math.isfinite(std) or std == 0.0:
        raise ValueError(f"cannot scale latents with standard deviation {std}")
    return 1.0 / std
