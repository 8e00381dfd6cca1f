"""FaceCoresetNet set aggregator (REFERENCE.md §6): coreset pick, attention, one template embedding.

Takes precomputed features of any frozen backbone: unit features (B, N, D) and their norms (B, N)
plus set lengths. Picks K items per set with :func:`mrface.ops.gumbel_fps` (quality first, then
diversity), encodes the norms sinusoidally into queries/keys, refines the picks by self-attention
over the K picks and cross-attention of the picks over all N items (cost linear in N), adds
residuals, averages the picks and returns a unit template embedding and its norm (the quality an
AdaFace head consumes).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mrface.ops.gumbel_fps import gumbel_fps


def sinusoidal_norm_encoding(norms: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Encoding (..., dim) of scalar norms (...): [sin(x w_j), cos(x w_j)], w_j = max_period**(-2j/dim)."""
    if dim % 2:
        raise ValueError(f"sinusoidal_norm_encoding: dim must be even, got {dim}")
    freqs = torch.exp(-math.log(max_period) * torch.arange(0, dim, 2, device=norms.device, dtype=torch.float32) / dim)
    angles = norms.float()[..., None] * freqs
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1).to(norms.dtype)


class FaceCoresetNet(nn.Module):
    """Aggregate a padded batch of face sets into one embedding per set.

    Args:
        dim: feature size D (512 for iResNet trunks); heads: attention heads (D divisible by it).
        k: coreset size; gamma: initial norm exponent of the FPS distance (learned); tau: Gumbel
        temperature; dropout: attention dropout.
    """

    def __init__(self, dim: int = 512, k: int = 3, heads: int = 8, gamma: float = 0.01, tau: float = 1.0,
                 dropout: float = 0.0) -> None:  # fmt: skip
        super().__init__()
        if dim % heads or dim % 2:
            raise ValueError(f"FaceCoresetNet: dim={dim} must be even and divisible by heads={heads}")
        if k < 1:
            raise ValueError(f"FaceCoresetNet: k must be >= 1, got {k}")
        self.dim, self.k, self.tau = dim, k, tau
        self.gamma = nn.Parameter(torch.tensor(float(gamma)))
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_self = nn.LayerNorm(dim)
        self.norm_cross = nn.LayerNorm(dim)

    def forward(
        self, features: torch.Tensor, norms: torch.Tensor, lengths: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """features: (B, N, D) unit features; norms: (B, N) > 0; lengths: (B,) in [1, N].

        Returns (embedding (B, D) unit vectors, norm (B,)). Padding past each length is never attended
        to; training mode draws Gumbel noise from ``generator``.
        """
        if features.dim() != 3 or features.shape[-1] != self.dim:
            raise ValueError(f"FaceCoresetNet: features must be (B, N, {self.dim}), got {tuple(features.shape)}")
        sel = gumbel_fps(features, norms, lengths, self.k, self.gamma, self.tau, self.training, generator)
        num_items = features.shape[1]
        valid = torch.arange(num_items, device=features.device)[None] < lengths.to(features.device)[:, None]
        picked = sel.indices >= 0
        norm_pos = sinusoidal_norm_encoding(norms, self.dim)
        core_norms = torch.einsum("bkn,bn->bk", sel.weights, norms)  # straight-through: gradient to norms
        core_pos = sinusoidal_norm_encoding(core_norms, self.dim)
        core = sel.coreset

        q = core + core_pos
        h, _ = self.self_attn(q, q, core, key_padding_mask=~picked, need_weights=False)
        h = self.norm_self(core + h)
        x, _ = self.cross_attn(h + core_pos, features + norm_pos, features, key_padding_mask=~valid,
                               need_weights=False)  # fmt: skip
        h = self.norm_cross(h + x)

        weight = picked.to(h.dtype)[..., None]
        template = (h * weight).sum(1) / weight.sum(1)
        norm = template.norm(dim=-1)
        return template / norm.clamp_min(1e-12)[:, None], norm
