"""DiT, the Diffusion Transformer of Peebles & Xie (2023), as an ε-predictor with the UNet's interface.

Patchify (a p×p conv with stride p) → tokens plus a fixed 2-D sin-cos position embedding → ``depth``
adaLN-Zero blocks conditioned on c = t_emb + y_emb → a final adaLN layer → unpatchify. The adaLN
modulations and the final projection start at zero, so the untrained model outputs exactly zero and every
block starts as the identity. Class labels use a learned embedding table with a null row (index
``num_classes``) for classifier-free guidance; label dropout is the training loop's job. Attention is
``F.scaled_dot_product_attention``.

``out_channels`` defaults to ``in_channels`` (ε only); the paper's learned-σ variant has twice as many and is
what its parameter counts (Table 4) refer to.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.nets.embeddings import check_conditioning, timestep_embedding
from core.nets.zoo import DIT_CONFIGS

FREQUENCY_EMBEDDING_SIZE = 256  # sinusoidal timestep features fed to the timestep MLP (paper, App. A)


def sincos_pos_embed_2d(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding, shape (grid², dim), tokens in row-major order.

    Channels [0, dim/2) encode the token's row and [dim/2, dim) its column, each as [sin(pos·ω), cos(pos·ω)]
    with ω_k = 10000^(−k/(dim/4)), k < dim/4 (MAE/ViT convention used by DiT).
    """
    if dim % 4:
        raise ValueError(f"DiT hidden_size must be divisible by 4 for the 2-D position embedding, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    coords = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")

    def embed_1d(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1) * omega[None]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)

    return torch.cat([embed_1d(rows), embed_1d(cols)], dim=1).float()


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: per-sample shift and scale of normalised tokens x (N, T, D); shift, scale are (N, D)."""
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """Pre-norm transformer block whose LayerNorms are modulated (shift, scale) and residuals gated by c."""

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
        # shift/scale/gate for attention and for the MLP, regressed from c; zero-initialised by DiT
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        modulation = self.adaLN_modulation(c).chunk(6, dim=1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = modulation
        x = x + gate_msa[:, None] * self.attention(modulate(self.norm1(x), shift_msa, scale_msa))
        return x + gate_mlp[:, None] * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class DiT(nn.Module):
    """Diffusion Transformer ε-predictor: ``model(x, t, y=None)`` → a tensor of x's shape.

    Conditional models (``num_classes`` > 0) treat ``y=None`` as the null class ``num_classes`` (the
    unconditional branch of classifier-free guidance); unconditional models raise ValueError if given labels.
    """

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
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 = unconditional), got {num_classes}")
        self.input_size, self.patch_size = input_size, patch_size
        self.in_channels = in_channels
        self.out_channels = in_channels if out_channels is None else out_channels
        self.num_classes = num_classes
        self.grid = input_size // patch_size
        self.x_embedder = nn.Conv2d(in_channels, hidden_size, patch_size, stride=patch_size)
        # fixed, not learned: a buffer (recomputed on construction, so not stored in checkpoints)
        self.register_buffer("pos_embed", sincos_pos_embed_2d(hidden_size, self.grid)[None], persistent=False)
        self.t_embedder = nn.Sequential(
            nn.Linear(FREQUENCY_EMBEDDING_SIZE, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )
        # row num_classes is the learned null class of classifier-free guidance
        self.y_embedder = nn.Embedding(num_classes + 1, hidden_size) if num_classes > 0 else None
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.final_linear = nn.Linear(hidden_size, patch_size * patch_size * self.out_channels)
        self.final_adaLN = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT's initialisation: xavier-uniform linears (the patch embedding viewed as one), zero biases,
        N(0, 0.02²) label and timestep-MLP weights, zero adaLN modulations and final projection."""
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
        zero_init = [*(b.adaLN_modulation[-1] for b in self.blocks), self.final_adaLN[-1], self.final_linear]
        for layer in zero_init:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) → (N, T, p²·C), token features ordered (row in patch, column in patch, channel).

        The inverse of ``unpatchify`` for C = out_channels; the model itself patchifies with its conv."""
        n, c, p, g = x.shape[0], x.shape[1], self.patch_size, self.grid
        return x.reshape(n, c, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(n, g * g, p * p * c)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, T, p²·C) → (N, C, H, W) with C = out_channels."""
        n, p, c, g = tokens.shape[0], self.patch_size, self.out_channels, self.grid
        x = tokens.reshape(n, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(n, c, g * p, g * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(f"DiT built for {self.input_size}² inputs got {tuple(x.shape[-2:])}")
        h = self.x_embedder(x).flatten(2).transpose(1, 2) + self.pos_embed
        c = self.t_embedder(timestep_embedding(t, FREQUENCY_EMBEDDING_SIZE))
        y = check_conditioning(self.num_classes, y, x.shape[0], x.device)
        if y is not None:
            c = c + self.y_embedder(y)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_adaLN(c).chunk(2, dim=1)
        return self.unpatchify(self.final_linear(modulate(self.norm_final(h), shift, scale)))


def build_dit(
    name_or_dict: str | dict[str, Any], input_size: int, in_channels: int, num_classes: int, **overrides: Any
) -> DiT:
    """A DiT from a zoo name (``DiT-B/2``, ``ref-12``, …) or a dict of its sizes (patch_size, hidden_size,
    depth, num_heads, optionally mlp_ratio); ``overrides`` (e.g. ``out_channels``, ``mlp_ratio``) win."""
    if isinstance(name_or_dict, str):
        if name_or_dict not in DIT_CONFIGS:
            raise ValueError(f"unknown DiT configuration {name_or_dict!r}; known: {sorted(DIT_CONFIGS)}")
        name_or_dict = DIT_CONFIGS[name_or_dict]
    settings = {**name_or_dict, **overrides}
    return DiT(input_size=input_size, in_channels=in_channels, num_classes=num_classes, **settings)
