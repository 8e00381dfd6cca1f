"""FaceCoresetNet set aggregator (REFERENCE.md §6): the public ``TemplateAggregateModel`` network.

Input: unit features (B, N, D) of a frozen backbone, their norms (B, N) and set lengths (B,). Per set:

1. raw features ``x_i = |f_i| f_i`` (the norm carries the face quality);
2. a coreset of ``K' = min(K, n)`` raw features by :func:`mrface.ops.gumbel_fps` (highest norm first, then
   the farthest point in ``norm**gamma * (1 - cos) / 2``, ``gamma`` learned);
3. norm encodings ``LayerNorm(enc(|x|))`` of every item and of every pick, ``enc`` the interleaved
   sinusoid of :func:`norm_encoding` (scale 2π, temperature 10000); one LayerNorm serves both;
4. one decoder layer: ``q = c + e_c``; ``q = norm_self(q + drop(SelfAttn(q, q, q)))``;
   ``delta = norm_cross(c + drop(CrossAttn(q, x + e_x, x)))`` — the cross-attention residual is the raw
   pick ``c``, not ``q``;
5. the refined picks ``c + delta`` are averaged: the template ``t``; the output is ``(t / |t|, |t|)``, so
   the template's norm carries the set's quality to the AdaFace head.

Padding (items past a set's length, pick slots past K') is never attended to and never averaged, so a
padded set gives what the public code gives for that set alone.

Sampling (``sampling``): ``"public"`` (default) draws as the public code — training: Gumbel noise, picks
not masked (an item can be drawn again), scale 1, temperature ``tau``; inference: Gumbel noise on
``1e4 * logits`` with temperature 1e-10, picks not masked. ``"masked"``: mrface's alternative — an item is
picked at most once, inference is the noise-free arg-max (deterministic).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mrface.ops.gumbel_fps import gumbel_fps

SAMPLING_MODES = ("public", "masked")
PUBLIC_EVAL_LOGIT_SCALE = 1e4  # public inference: gumbel_softmax(logits * 1e4, tau=1e-10)
PUBLIC_EVAL_TAU = 1e-10


def norm_encoding(
    norms: torch.Tensor, dim: int, temperature: float = 10000.0, scale: float = 2 * math.pi
) -> torch.Tensor:
    """Sinusoidal encoding (..., dim) of scalar norms (...), float32.

    ``out[2j] = sin(scale * x / temperature**(2j / dim))``, ``out[2j + 1] = cos(same angle)``
    (sine and cosine interleaved, one frequency per pair), as the public ``get_proposal_pos_embed``.
    """
    if dim % 2:
        raise ValueError(f"norm_encoding: dim must be even, got {dim}")
    pair = torch.arange(dim // 2, device=norms.device, dtype=torch.float32)
    angles = norms.float()[..., None] * scale / temperature ** (2 * pair / dim)
    return torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).flatten(-2)


class FaceCoresetNet(nn.Module):
    """Aggregate a padded batch of face sets into one embedding per set (public TemplateAggregateModel).

    Args:
        dim: feature size D (512 for iResNet trunks); heads: attention heads (8 in the public code).
        k: coreset size K (public recipe 3); gamma: initial norm exponent of the FPS distance (learned,
        public 0.01); tau: Gumbel-softmax temperature while training (public 1.0); dropout: attention
        and residual dropout of the decoder layer (public 0.1); sampling: ``"public"`` or ``"masked"``
        (module docstring).
    """

    def __init__(
        self,
        dim: int = 512,
        k: int = 3,
        heads: int = 8,
        gamma: float = 0.01,
        tau: float = 1.0,
        dropout: float = 0.1,
        sampling: str = "public",
    ) -> None:
        super().__init__()
        if dim % heads or dim % 2:
            raise ValueError(f"FaceCoresetNet: dim={dim} must be even and divisible by heads={heads}")
        if k < 1:
            raise ValueError(f"FaceCoresetNet: k must be >= 1, got {k}")
        if sampling not in SAMPLING_MODES:
            raise ValueError(f"FaceCoresetNet: sampling={sampling!r}, expected one of {SAMPLING_MODES}")
        self.dim, self.k, self.tau, self.sampling = dim, k, tau, sampling
        self.gamma = nn.Parameter(torch.tensor(float(gamma)))
        self.norm_encoding = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_self = nn.LayerNorm(dim)
        self.norm_cross = nn.LayerNorm(dim)
        self.dropout_self = nn.Dropout(dropout)
        self.dropout_cross = nn.Dropout(dropout)

    def select(self, raw: torch.Tensor, norms: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator | None):
        """The Gumbel-FPS coreset of the raw features (:class:`mrface.ops.gumbel_fps.CoresetSelection`)."""
        public = self.sampling == "public"
        if self.training:
            return gumbel_fps(
                raw, norms, lengths, self.k, self.gamma, self.tau, True, generator, mask_picked=not public
            )
        if public:
            return gumbel_fps(
                raw,
                norms,
                lengths,
                self.k,
                self.gamma,
                PUBLIC_EVAL_TAU,
                False,
                generator,
                mask_picked=False,
                eval_noise=True,
                logit_scale=PUBLIC_EVAL_LOGIT_SCALE,
            )
        return gumbel_fps(raw, norms, lengths, self.k, self.gamma, self.tau, False)

    def forward(
        self,
        features: torch.Tensor,
        norms: torch.Tensor,
        lengths: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """features: (B, N, D) unit features; norms: (B, N) > 0; lengths: (B,) in [1, N].

        Returns (embedding (B, D) unit vectors, norm (B,)). Gumbel noise (training, and public inference)
        comes from ``generator`` (the default CPU generator when None).
        """
        if features.dim() != 3 or features.shape[-1] != self.dim:
            raise ValueError(f"FaceCoresetNet: features must be (B, N, {self.dim}), got {tuple(features.shape)}")
        num_items = features.shape[1]
        valid = torch.arange(num_items, device=features.device)[None] < lengths.to(features.device)[:, None]
        raw = features * norms[..., None] * valid[..., None]
        sel = self.select(raw, norms, lengths, generator)
        picked = sel.indices >= 0
        core = sel.coreset
        enc_items = self.norm_encoding(norm_encoding(norms, self.dim).to(raw.dtype))
        enc_core = self.norm_encoding(norm_encoding(core.norm(dim=-1), self.dim).to(raw.dtype))

        q = core + enc_core
        attended, _ = self.self_attn(q, q, q, key_padding_mask=~picked, need_weights=False)
        q = self.norm_self(q + self.dropout_self(attended))
        attended, _ = self.cross_attn(q, raw + enc_items, raw, key_padding_mask=~valid, need_weights=False)
        delta = self.norm_cross(core + self.dropout_cross(attended))

        refined = torch.where(picked[..., None], core + delta, torch.zeros_like(core))
        template = refined.sum(1) / picked.sum(1, keepdim=True).to(refined.dtype)
        norm = template.norm(dim=-1)
        return template / norm.clamp_min(1e-12)[:, None], norm
