"""DiT, the Diffusion Transformer of Peebles & Xie (2023), as an ε-predictor with the UNet's interface.

Patchify (a p×p conv with stride p) → tokens plus a fixed 2-D sin-cos position embedding → ``depth``
adaLN-Zero blocks conditioned on c = t_emb + y_emb → a final adaLN layer → unpatchify. The adaLN
modulations and the final projection start at zero, so the untrained model outputs exactly zero. Class
labels use a learned embedding table with a null row (index ``num_classes``) for classifier-free guidance;
label dropout is the training loop's job. Attention is ``F.scaled_dot_product_attention``.

``out_channels`` defaults to ``in_channels`` (ε only); the paper's learned-σ variant has twice as many and is
what its parameter counts refer to.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.unet import check_conditioning, timestep_embedding

# The paper's model zoo (Table 1) and the reference study's configurations.
DIT_CONFIGS: dict[str, dict[str, int]] = {
    **{
        f"DiT-{size}/{p}": {"depth": d, "hidden_size": w, "num_heads": h, "patch_size": p}
        for size, (d, w, h) in {
            "S": (12, 384, 6),
            "B": (12, 768, 12),
            "L": (24, 1024, 16),
            "XL": (28, 1152, 16),
        }.items()
        for p in (2, 4, 8)
    },
    "ref-12": {"depth": 12, "hidden_size": 768, "num_heads": 12, "patch_size": 2},
    "ref-8": {"depth": 8, "hidden_size": 512, "num_heads": 8, "patch_size": 2},
    "pixel-ref": {"depth": 8, "hidden_size": 512, "num_heads": 8, "patch_size": 16},
}


def sincos_pos_embed_2d(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sin-cos embedding (grid², dim): half the channels encode the row, half the column."""
    if dim % 4:
        raise ValueError(f"DiT hidden_size must be divisible by 4 for the 2-D position embedding, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    coords = torch.arange(grid, dtype=torch.float64)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")

    def embed(pos: torch.Tensor) -> torch.Tensor:
        out = pos.reshape(-1, 1) * omega[None]
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    return torch.cat([embed(yy), embed(xx)], dim=1).float()


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"DiT hidden_size {dim} is not divisible by num_heads = {num_heads}")
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa[:, None] * self.attention(modulate(self.norm1(x), shift_msa, scale_msa))
        return x + gate_mlp[:, None] * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class DiT(nn.Module):
    def __init__(
        self,
        input_size: int,
        patch_size: int,
        in_channels: int,
        hidden_size: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        num_classes: int = 0,
        out_channels: int | None = None,
    ) -> None:
        super().__init__()
        if input_size % patch_size:
            raise ValueError(f"DiT input_size {input_size} is not divisible by patch_size {patch_size}")
        self.in_channels, self.out_channels = in_channels, out_channels or in_channels
        self.patch_size, self.num_classes = patch_size, num_classes
        self.grid = input_size // patch_size
        self.x_embedder = nn.Conv2d(in_channels, hidden_size, patch_size, stride=patch_size)
        self.register_buffer("pos_embed", sincos_pos_embed_2d(hidden_size, self.grid)[None], persistent=False)
        self.t_embedder = nn.Sequential(nn.Linear(256, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))
        self.y_embedder = nn.Embedding(num_classes + 1, hidden_size) if num_classes > 0 else None
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.final_linear = nn.Linear(hidden_size, patch_size * patch_size * self.out_channels)
        self.final_adaLN = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.x_embedder.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.bias)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.weight, std=0.02)
        nn.init.normal_(self.t_embedder[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder[2].weight, std=0.02)
        for layer in [*(b.adaLN_modulation[-1] for b in self.blocks), self.final_adaLN[-1], self.final_linear]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, T, p²·C) → (N, C, H, W)."""
        n, p, c, g = tokens.shape[0], self.patch_size, self.out_channels, self.grid
        x = tokens.reshape(n, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(n, c, g * p, g * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.x_embedder(x).flatten(2).transpose(1, 2) + self.pos_embed
        c = self.t_embedder(timestep_embedding(t, 256))
        y = check_conditioning(self.num_classes, y, x.shape[0], x.device)
        if y is not None:
            c = c + self.y_embedder(y)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_adaLN(c).chunk(2, dim=1)
        return self.unpatchify(self.final_linear(modulate(self.norm_final(h), shift, scale)))


def build_dit(config: str | dict, input_size: int, in_channels: int, num_classes: int, **extra: float) -> DiT:
    """A DiT from a zoo name (``DiT-B/2``, ``ref-12``, …) or an explicit dict of its settings."""
    if isinstance(config, str):
        if config not in DIT_CONFIGS:
            raise ValueError(f"unknown DiT configuration {config!r}; known: {sorted(DIT_CONFIGS)}")
        config = DIT_CONFIGS[config]
    return DiT(input_size=input_size, in_channels=in_channels, num_classes=num_classes, **config, **extra)
