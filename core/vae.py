"""The KL autoencoder of latent diffusion (Rombach et al. 2022, "AutoencoderKL"), for latent-space rows.

Encoder: conv_in; per level ``num_res_blocks`` ResNet blocks (GroupNorm(32) → SiLU → conv) with optional
single-head attention at ``attn_resolutions``, a stride-2 conv between levels; a middle ResNet–attention–
ResNet; GroupNorm, SiLU, conv_out to 2·z_channels (mean and log-variance). The decoder mirrors it with
``num_res_blocks`` + 1 blocks per level and nearest-neighbour upsampling. The downsampling factor is
f = 2^(len(ch_mult) − 1): ch = 128, ch_mult = (1, 2, 4), 2 blocks and 3 latent channels is the reference's
f = 4 model (128² → 32×32×3).

Training loss here: L1 reconstruction + ``kl_weight`` · KL(q(z|x) ‖ N(0, I)); the LPIPS and adversarial
terms of the original are omitted. Latents are scaled by ``latent_scale_factor`` (1/std of the training
latents, computed from the data rather than hard-coded) before diffusion. Images are in [−1, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(32 if c % 32 == 0 else 8, c, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.nin_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over positions with 1×1 q, k, v and output projections."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = _norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = self.norm(x)
        q, k, v = (m(n).reshape(b, 1, c, h * w).transpose(-1, -2) for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj_out(out)


class DiagonalGaussian:
    """q(z|x) = N(mean, exp(logvar)), log-variance clamped to [−30, 20] as in the original."""

    def __init__(self, moments: torch.Tensor) -> None:
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q ‖ N(0, I)) per sample, summed over latent dimensions."""
        return 0.5 * (self.mean**2 + self.logvar.exp() - 1.0 - self.logvar).sum(dim=(1, 2, 3))


class Encoder(nn.Module):
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
                layers.append(nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(c, c, 3, stride=2)))
                res //= 2
            self.down.append(layers)
        self.mid = nn.Sequential(ResnetBlock(c, c, dropout), AttnBlock(c), ResnetBlock(c, c, dropout))
        self.norm_out = _norm(c)
        self.conv_out = nn.Conv2d(c, 2 * z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for layers in self.down:
            for layer in layers:
                h = layer(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
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
                layers.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)))
                res *= 2
            self.up.append(layers)
        self.norm_out = _norm(c)
        self.conv_out = nn.Conv2d(c, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for layers in self.up:
            for layer in layers:
                h = layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoencoderKL(nn.Module):
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
    ) -> None:
        super().__init__()
        if resolution % 2 ** (len(ch_mult) - 1):
            raise ValueError(f"VAE resolution {resolution} is not divisible by the factor 2^{len(ch_mult) - 1}")
        self.downsampling_factor = 2 ** (len(ch_mult) - 1)
        self.z_channels = z_channels
        args = (ch, ch_mult, num_res_blocks, z_channels)
        self.encoder = Encoder(*args, in_channels, resolution, attn_resolutions, dropout)
        self.decoder = Decoder(*args, in_channels, resolution, attn_resolutions, dropout)
        self.quant_conv = nn.Conv2d(2 * z_channels, 2 * z_channels, 1)
        self.post_quant_conv = nn.Conv2d(z_channels, z_channels, 1)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        return DiagonalGaussian(self.quant_conv(self.encoder(x)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))


def vae_loss(
    vae: AutoencoderKL, x: torch.Tensor, kl_weight: float = 1e-6, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """L1 reconstruction (mean over pixels) + kl_weight · KL (mean over the batch)."""
    posterior = vae.encode(x)
    rec = (vae.decode(posterior.sample(generator)) - x).abs().mean()
    kl = posterior.kl().mean()
    return rec + kl_weight * kl, {"rec": rec.item(), "kl": kl.item()}


def latent_scale_factor(latents: torch.Tensor) -> float:
    """1 / std of the training latents, so that scaled latents have unit variance."""
    return float(1.0 / latents.float().std())
