"""Plain-PyTorch reference of Gumbel farthest point sampling (FaceCoresetNet, REFERENCE.md §6).

One set at a time, one pick at a time, autograd does the backward. Per set (features f (n, D),
norms (n,)) and pick t:

- logits: ``norms`` for t = 0; for t >= 1 the running minimum over earlier centres c of
  ``norms**gamma * (1 - cos(f_i, c)) / 2``;
- the score is ``z = logit_scale * logits + noise[t]``; the pick is its arg-max (ties: lowest index)
  over the eligible items; ``noise`` is Gumbel(0, 1) when noise is drawn and 0 otherwise;
- eligible items: with ``mask_picked`` (the default) the items not picked yet, so k >= n picks every
  item once; without it every item of the set at every step (an item can be drawn again), as the
  public FaceCoresetNet code does (``net_template.py``: ``gumbel_softmax`` over all N each step);
- soft = softmax(z / tau) over the eligible items; the straight-through weight is
  ``hard + (soft - soft.detach())`` (value: the one-hot pick), the centre is ``weight @ f``.

Public FaceCoresetNet modes (ligaripash/FaceCoresetNet, ``differential_farthest_point_sample``):
training draws noise with ``logit_scale = 1``, ``tau = 1``; inference still draws noise, with
``logit_scale = 1e4`` and ``tau = 1e-10`` (``gumbel_softmax(logits * 1e4, tau=1e-10)``), so the pick
is the arg-max of ``1e4 * logits + g`` rather than of the logits; neither mode masks earlier picks.
The defaults here (mask, no noise at inference, scale 1) are mrface's; the model chooses.

The noise is a counter-based hash of (seed, set, step, item) (``splitmix64``, as in
csrc/include/mrface/gumbel_fps.h), so every backend draws the same noise for the same seed.
"""

from __future__ import annotations

import torch

EPS = 1e-12
_MASK64 = (1 << 64) - 1


def _int64(c: int) -> int:
    """An unsigned 64-bit constant as the int64 with the same bits."""
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLDEN, _MIX1, _MIX2 = _int64(0x9E3779B97F4A7C15), _int64(0xBF58476D1CE4E5B9), _int64(0x94D049BB133111EB)


def _shift_right(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch's >> is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64 finaliser on int64 tensors holding uint64 bit patterns (wrapping arithmetic)."""
    x = x + _GOLDEN
    x = (x ^ _shift_right(x, 30)) * _MIX1
    x = (x ^ _shift_right(x, 27)) * _MIX2
    return x ^ _shift_right(x, 31)


def gumbel_fps_uniform(seed: int, sets: torch.Tensor, steps: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Uniforms in (0, 1), float32, for broadcastable int64 tensors of set, step and item indices."""
    seed_t = torch.tensor(_int64(seed & _MASK64), dtype=torch.int64, device=sets.device)
    stream = splitmix64(splitmix64(splitmix64(seed_t) ^ sets) ^ steps)
    bits = _shift_right(splitmix64(stream ^ items), 40)
    return (bits.to(torch.float32) + 0.5) * (1.0 / 16777216.0)


def gumbel_fps_noise(seed: int, num_sets: int, k: int, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Gumbel(0, 1) noise (num_sets, k, n) float32 of sets 0..num_sets-1, steps 0..k-1, items 0..n-1."""
    ar = lambda size: torch.arange(size, dtype=torch.int64, device=device)  # noqa: E731
    u = gumbel_fps_uniform(seed, ar(num_sets)[:, None, None], ar(k)[None, :, None], ar(n)[None, None, :])
    return -torch.log(-torch.log(u))


def gumbel_fps_one_set(
    features: torch.Tensor,
    norms: torch.Tensor,
    k: int,
    gamma: torch.Tensor | float,
    tau: float,
    noise: torch.Tensor | None = None,
    frozen_soft: list[torch.Tensor] | None = None,
    mask_picked: bool = True,
    logit_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Coreset of one set.

    Args:
        features: (n, D) float; norms: (n,) float > 0; gamma: scalar (tensor for a gradient);
        noise: (>= min(k, n), n) Gumbel noise, or None for deterministic picks.
        mask_picked: earlier picks are not eligible (False: every item is, at every step).
        logit_scale: the logits are multiplied by it before the noise is added.
        frozen_soft: constants used in place of ``soft.detach()`` (for gradcheck: the straight-through
            gradient is the true derivative of the function with the detached terms frozen).
    Returns:
        indices (k,) int64 (-1 past n), weights (k, n) straight-through, coreset (k, D) (zeros past n).
    """
    n, dim = features.shape
    picks = min(k, n)
    indices = torch.full((k,), -1, dtype=torch.int64)
    weights = features.new_zeros(k, n)
    coreset = features.new_zeros(k, dim)
    allowed = torch.ones(n, dtype=torch.bool, device=features.device)
    norm_power = norms**gamma
    lengths = features.norm(dim=1).clamp_min(EPS)
    running = None
    rows_w, rows_c = [], []
    for t in range(picks):
        if t == 0:
            logits = norms
        else:
            centre = rows_c[-1]
            cos = (features @ centre) / (lengths * centre.norm().clamp_min(EPS))
            distance = norm_power * (1 - cos) / 2
            running = distance if running is None else torch.minimum(running, distance)
            logits = running
        z = logits * logit_scale
        z = z if noise is None else z + noise[t]
        z = z.masked_fill(~allowed, float("-inf"))
        best = z.detach().max()
        pick = int(torch.nonzero(z.detach() == best)[0, 0])
        soft = torch.softmax(z / tau, dim=0)
        hard = torch.zeros_like(soft)
        hard[pick] = 1
        w = hard + (soft - (soft.detach() if frozen_soft is None else frozen_soft[t]))
        rows_w.append(w)
        rows_c.append(w @ features)
        indices[t] = pick
        if mask_picked:
            allowed[pick] = False
    if picks:
        weights = torch.cat([torch.stack(rows_w), weights[picks:]])
        coreset = torch.cat([torch.stack(rows_c), coreset[picks:]])
    return indices, weights, coreset


def gumbel_fps_set_noise(seed: int, set_index: int, k: int, n: int) -> torch.Tensor:
    """Gumbel noise (k, n) float32 of one set (the rows of :func:`gumbel_fps_noise` for that set)."""
    ar = lambda size: torch.arange(size, dtype=torch.int64)  # noqa: E731
    u = gumbel_fps_uniform(seed, torch.tensor(set_index), ar(k)[:, None], ar(n)[None, :])
    return -torch.log(-torch.log(u))


def gumbel_fps_reference(
    features: torch.Tensor,
    norms: torch.Tensor,
    lengths_or_offsets: torch.Tensor,
    k: int,
    gamma: torch.Tensor | float,
    tau: float,
    training: bool,
    seed: int,
    mask_picked: bool = True,
    logit_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every set through :func:`gumbel_fps_one_set`, in the layout of ``mrface.ops.gumbel_fps``.

    ``training``: draw the noise (of ``seed``); ``mask_picked``, ``logit_scale``: as in
    :func:`gumbel_fps_one_set`.
    Padded: features (B, N_max, D), norms (B, N_max), lengths (B,) -> weights (B, k, N_max).
    Packed: features (T, D), norms (T,), offsets (B + 1,) -> weights (k, T).
    Returns (indices (B, k) int64, weights, coreset (B, k, D)); differentiable by autograd.
    """
    packed = features.dim() == 2
    bounds = lengths_or_offsets.tolist()
    num_sets = len(bounds) - 1 if packed else len(bounds)
    all_idx, all_w, all_c = [], [], []
    for b in range(num_sets):
        if packed:
            start, n = bounds[b], bounds[b + 1] - bounds[b]
            f, nrm = features[start : start + n], norms[start : start + n]
        else:
            n = bounds[b]
            f, nrm = features[b, :n], norms[b, :n]
        noise = gumbel_fps_set_noise(seed, b, k, n).to(f) if training else None
        idx, w, c = gumbel_fps_one_set(f, nrm, k, gamma, tau, noise, None, mask_picked, logit_scale)
        all_idx.append(idx)
        all_w.append(w)
        all_c.append(c)
    indices = torch.stack(all_idx) if all_idx else torch.empty(0, k, dtype=torch.int64)
    coreset = torch.stack(all_c) if all_c else features.new_zeros(0, k, features.shape[-1])
    if packed:
        weights = torch.cat(all_w, dim=1) if all_w else features.new_zeros(k, 0)
    else:
        pad = features.shape[1]
        weights = torch.stack([torch.nn.functional.pad(w, (0, pad - w.shape[1])) for w in all_w])
    return indices, weights, coreset
