"""One configurable UNet ε-predictor for both studies (Ho et al. 2020; Dhariwal & Nichol 2021 layout).

Stages at widths ``base_channels × channel_mult[i]``, each with ``num_res_blocks`` residual blocks
(GroupNorm → SiLU → conv, time embedding added, dropout) and multi-head self-attention where the feature
map's side is in ``attention_resolutions``; a middle ResBlock–attention–ResBlock; a mirrored decoder with
skip connections. The timestep enters as a sinusoidal embedding → MLP (width 4 × base); class labels, when
``num_classes`` > 0, enter as a learned embedding (``num_classes`` + 1 rows, the last one the null class
of classifier-free guidance) added to the time embedding.

Interface shared by every denoiser here: ``model(x, t, y=None) -> ε̂`` of x's shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from core.nets.embeddings import check_conditioning, timestep_embedding


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H·W positions, residual, output projection zero-initialised.

    q, k and v are projected on (B, H·W, C) tokens so that each head's features are contiguous: that lets
    ``scaled_dot_product_attention`` use its fused kernels (2× faster per block on CPU than strided heads;
    bench/RESULTS.md)."""

    def __init__(self, channels: int, num_heads: int, groups: int) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention: {channels} channels are not divisible by num_heads = {num_heads}")
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        qkv = self.qkv(tokens).reshape(b, h * w, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, HW, C/heads)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, h * w, c)
        return x + self.proj(out).transpose(1, 2).reshape(b, c, h, w)


class UNet(nn.Module):
    def __init__(
        self,
        image_size: int,
        in_channels: int = 3,
        base_channels: int = 128,
        channel_mult: Sequence[int] = (1, 2, 2, 4),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (16,),
        dropout: float = 0.0,
        num_classes: int = 0,
        num_heads: int = 4,
        norm_groups: int = 32,
    ) -> None:
        super().__init__()
        widths = [base_channels * m for m in channel_mult]
        for c in {base_channels, *widths}:
            if c % norm_groups:
                raise ValueError(f"UNet width {c} is not divisible by norm_groups = {norm_groups}")
        if image_size % 2 ** (len(channel_mult) - 1):
            raise ValueError(f"image_size {image_size} is not divisible by 2^{len(channel_mult) - 1} (channel_mult)")
        self.image_size, self.in_channels, self.num_classes = image_size, in_channels, num_classes
        emb_dim = 4 * base_channels
        self.base_channels = base_channels
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes > 0 else None
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        def block(c_in: int, c_out: int, res: int) -> nn.ModuleList:
            layers = nn.ModuleList([ResBlock(c_in, c_out, emb_dim, dropout, norm_groups)])
            if res in attention_resolutions:
                layers.append(AttentionBlock(c_out, num_heads, norm_groups))
            return layers

        self.down = nn.ModuleList()
        skips, ch, res = [base_channels], base_channels, image_size
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                self.down.append(block(ch, width, res))
                ch = width
                skips.append(ch)
            if level < len(widths) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(ch, ch, 3, stride=2, padding=1)]))
                skips.append(ch)
                res //= 2
        self.mid = nn.ModuleList(
            [
                ResBlock(ch, ch, emb_dim, dropout, norm_groups),
                AttentionBlock(ch, num_heads, norm_groups),
                ResBlock(ch, ch, emb_dim, dropout, norm_groups),
            ]
        )
        self.up = nn.ModuleList()
        for level, width in reversed(list(enumerate(widths))):
            for i in range(num_res_blocks + 1):
                layers = block(ch + skips.pop(), width, res)
                ch = width
                if level > 0 and i == num_res_blocks:
                    layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
                    layers.append(nn.Conv2d(ch, ch, 3, padding=1))
                    res *= 2
                self.up.append(layers)
        self.norm_out = nn.GroupNorm(norm_groups, ch)
        self.conv_out = nn.Conv2d(ch, in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @staticmethod
    def _run(layers: nn.ModuleList, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in layers:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return h

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.base_channels))
        y = check_conditioning(self.num_classes, y, x.shape[0], x.device)
        if y is not None:
            emb = emb + self.class_emb(y)
        h = self.conv_in(x)
        hs = [h]
        for layers in self.down:
            h = self._run(layers, h, emb)
            hs.append(h)
        h = self._run(self.mid, h, emb)
        for layers in self.up:
            h = self._run(layers, torch.cat([h, hs.pop()], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))
