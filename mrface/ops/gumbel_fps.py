"""``mrface.ops.gumbel_fps``: batched Gumbel-softmax farthest point sampling (FaceCoresetNet coreset).

Many sets at once, padded ``(B, N_max, D)`` + lengths ``(B,)`` or packed ``(T, D)`` + offsets
``(B + 1,)``. Per set, the first pick maximises the norm, each further pick the running minimum of
``norm**gamma * (1 - cos(f_i, c)) / 2`` over earlier picks c (scaled by ``logit_scale``, plus Gumbel
noise when drawn); ties go to the lowest index. By default picked items are never picked again, so
k >= n picks all n items once; ``mask_picked=False`` keeps them eligible (the public FaceCoresetNet
code). The semantics are spelled out in :mod:`mrface.ops.reference.gumbel_fps`.

Forward: one kernel (C++: a set per OpenMP thread; CUDA: a set per block) writes the indices; the
straight-through weights (value: one-hot) and the coreset features are gathered from them. The
forward saves only its inputs and the indices (B, K).
Backward: one kernel call for the whole batch (C++: a set per OpenMP thread; CUDA: a set per block;
see csrc/include/mrface/gumbel_fps.h) replays each set's selection for the known picks (soft
probabilities (K, n), cosines and running-minimum tie weights (K - 1, n)) and propagates the
straight-through gradient by hand through the K steps in reverse: softmax, running minimum, cosine
distance, norm power and the centres, in float32. float64 inputs and the reference backend use the
same recompute written with batched tensor ops (:func:`_straight_through_backward`). Both sit in
their own custom op, so the op works under ``torch.compile`` and ``opcheck``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from mrface.ops.backend import choose_backend, compiled_extension, forced_backend
from mrface.ops.reference.gumbel_fps import EPS, gumbel_fps_noise, gumbel_fps_one_set, gumbel_fps_set_noise

_SUPPORTED = ("cuda", "cpp", "reference")
_DTYPE_TAGS = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


class CoresetSelection(NamedTuple):
    """Result of :func:`gumbel_fps`.

    indices: (B, K) int64, picks as indices inside each set; -1 in slots past a set's length.
    weights: straight-through selection weights, one-hot in value; padded input: (B, K, N_max),
        packed input: (K, T) (column j is row j of the packed features).
    coreset: (B, K, D) the picked features (zeros in unused slots), differentiable.
    """

    indices: torch.Tensor
    weights: torch.Tensor
    coreset: torch.Tensor


# ------------------------------------------------------------------------------------ layouts
def _starts_lengths(features: torch.Tensor, lengths_or_offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First row (in the (rows, D) view of features) and length of every set, int64 on features.device."""
    bounds = lengths_or_offsets.to(device=features.device, dtype=torch.int64)
    if features.dim() == 2:
        return bounds[:-1].contiguous(), (bounds[1:] - bounds[:-1]).contiguous()
    num_sets, max_len = features.shape[0], features.shape[1]
    starts = torch.arange(num_sets, device=features.device, dtype=torch.int64) * max_len
    return starts, bounds.contiguous()


def _max_len(features: torch.Tensor, lengths: torch.Tensor) -> int:
    if features.dim() == 3:
        return features.shape[1]
    return max(int(lengths.max()), 1) if lengths.numel() else 1


def _padded_rows(starts: torch.Tensor, lengths: torch.Tensor, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (B, max_len) of item i of set b in the (rows, D) view (0 past the end) and the valid mask."""
    items = torch.arange(max_len, device=starts.device, dtype=torch.int64)
    valid = items[None, :] < lengths[:, None]
    return starts[:, None] + torch.where(valid, items[None, :], 0), valid


# ---------------------------------------------------------------------- batched torch version
def batched_gumbel_fps_torch(
    features: torch.Tensor,
    norms: torch.Tensor,
    valid: torch.Tensor,
    k: int,
    gamma: torch.Tensor,
    tau: float,
    noise: torch.Tensor | None,
    indices: torch.Tensor | None = None,
    keep: bool = False,
    mask_picked: bool = True,
    logit_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """The K-step loop vectorised over sets (the "PyTorch loop" the kernels replace), autograd-able.

    Args:
        features: (B, N, D), zeros past each length; norms: (B, N), 1 past each length;
        valid: (B, N) bool; noise: (B, k, N) Gumbel noise or None; indices: (B, k) picks to
        replay (None: pick by arg-max); keep: also return the intermediates the backward needs;
        mask_picked, logit_scale: as in :mod:`mrface.ops.reference.gumbel_fps`.
    Returns:
        indices (B, k), weights (B, k, N) straight-through, coreset (B, k, D), intermediates.
    """
    num_sets, n, _ = features.shape
    lengths = valid.sum(1)
    steps = torch.arange(k, device=features.device)
    active = steps[None, :] < lengths[:, None]
    if indices is not None:
        active = indices >= 0
    length = features.norm(dim=-1)
    radius = length.clamp_min(EPS)
    log_norm = torch.log(norms)
    norm_power = torch.exp(gamma * log_norm)
    allowed = valid.clone()
    picks, weights, centres = [], [], []
    saved: dict = {"soft": [], "cos": [], "dist": [], "prev_min": [], "rho": [], "rho_raw": []}
    running = None
    for t in range(k):
        if t == 0:
            logits = norms
        else:
            centre = centres[-1]
            rho_raw = centre.norm(dim=-1)
            rho = rho_raw.clamp_min(EPS)
            cos = torch.bmm(features, centre[:, :, None])[..., 0] / (radius * rho[:, None])
            dist = norm_power * (1 - cos) / 2
            if keep:
                saved["cos"].append(cos)
                saved["dist"].append(dist)
                saved["prev_min"].append(running)
                saved["rho"].append(rho)
                saved["rho_raw"].append(rho_raw)
            running = dist if running is None else torch.minimum(running, dist)
            logits = running
        z = logits * logit_scale
        z = z if noise is None else z + noise[:, t]
        act = active[:, t]
        z = torch.where(act[:, None], z.masked_fill(~allowed, float("-inf")), 0)
        if indices is None:
            pick = torch.where(act, torch.argmax(z.detach(), dim=-1), -1)
        else:
            pick = indices[:, t]
        soft = torch.softmax(z / tau, dim=-1) * act[:, None]
        hard = torch.zeros_like(soft).scatter_(1, pick.clamp_min(0)[:, None], act[:, None].to(soft.dtype))
        weight = hard + (soft - soft.detach())
        picks.append(pick)
        weights.append(weight)
        centres.append(torch.bmm(weight[:, None, :], features)[:, 0])
        if mask_picked:
            allowed = allowed & ~hard.bool()
        if keep:
            saved["soft"].append(soft.detach())
    if keep:
        saved.update(radius=radius, length=length, norm_power=norm_power, log_norm=log_norm, active=active)
    return torch.stack(picks, 1), torch.stack(weights, 1), torch.stack(centres, 1), saved


def _straight_through_backward(
    features: torch.Tensor,
    norms: torch.Tensor,
    valid: torch.Tensor,
    gamma: torch.Tensor,
    tau: float,
    noise: torch.Tensor | None,
    indices: torch.Tensor,
    grad_weights: torch.Tensor,
    grad_coreset: torch.Tensor,
    mask_picked: bool = True,
    logit_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (features (B, N, D), norms (B, N), gamma ()) of <grad_weights, W> + <grad_coreset, C>.

    Replays the forward for the known picks (soft probabilities, cosines, distances) without autograd,
    then walks the K steps backwards: C_t = W_t F and the straight-through W_t = hard + soft - sg(soft)
    pass the weight gradient to the softmax; its logits are the norms (t = 0) or the running minimum
    (ties split the gradient in half, as torch.minimum does); the distance d = norm**gamma (1 - cos)/2
    with cos = F_i . C_{t-1} / (|F_i| |C_{t-1}|) feeds F, the norms, gamma and the previous centre.
    """
    k = indices.shape[1]
    with torch.no_grad():
        _, _, centres, s = batched_gumbel_fps_torch(
            features, norms, valid, k, gamma, tau, noise, indices, True, mask_picked, logit_scale
        )
    active = s["active"]
    radius, length, norm_power = s["radius"], s["length"], s["norm_power"]
    grad_f = torch.zeros_like(features)
    grad_norms = torch.zeros_like(norms)
    grad_power = torch.zeros_like(norms)
    grad_min = torch.zeros_like(norms)
    grad_centre_next = torch.zeros_like(centres[:, 0])
    picks = indices.clamp_min(0)
    for t in range(k - 1, -1, -1):
        act = active[:, t, None].to(features.dtype)
        g_centre = (grad_coreset[:, t] + grad_centre_next) * act
        g_weight = grad_weights[:, t] * act + torch.bmm(features, g_centre[:, :, None])[..., 0]
        grad_f.scatter_add_(1, picks[:, t, None, None].expand(-1, 1, features.shape[2]), g_centre[:, None, :])
        soft = s["soft"][t]
        g_logits = soft * (g_weight - (soft * g_weight).sum(-1, keepdim=True)) * (logit_scale / tau)
        if t == 0:
            grad_norms += g_logits
            break
        grad_min = grad_min + g_logits
        dist, prev = s["dist"][t - 1], s["prev_min"][t - 1]
        if prev is None:
            g_dist, grad_min = grad_min, torch.zeros_like(grad_min)
        else:
            to_dist = torch.where(dist < prev, 1.0, torch.where(dist == prev, 0.5, 0.0)).to(dist.dtype)
            g_dist, grad_min = grad_min * to_dist, grad_min * (1 - to_dist)
        cos, rho, rho_raw = s["cos"][t - 1], s["rho"][t - 1], s["rho_raw"][t - 1]
        centre = centres[:, t - 1]
        grad_power += g_dist * (1 - cos) / 2
        g_cos = -g_dist * norm_power / 2
        g_dot = g_cos / (radius * rho[:, None])
        grad_f += g_dot[..., None] * centre[:, None, :]
        g_centre_prev = torch.bmm(g_dot[:, None, :], features)[:, 0]
        g_radius = torch.where(length > EPS, -g_cos * cos / radius, 0)
        grad_f += (g_radius / length.clamp_min(EPS))[..., None] * features
        g_rho = torch.where(rho_raw > EPS, -(g_cos * cos).sum(-1) / rho, 0)
        grad_centre_next = g_centre_prev + (g_rho / rho)[:, None] * centre
    grad_power = grad_power * valid
    grad_gamma = (grad_power * norm_power * s["log_norm"]).sum()
    grad_norms = (grad_norms + grad_power * norm_power * gamma / norms) * valid
    return grad_f * valid[..., None], grad_norms, grad_gamma


# ------------------------------------------------------------------------------------ backends
def _kernel_indices(
    backend: str,
    rows2d: torch.Tensor,
    norms: torch.Tensor,
    starts: torch.Tensor,
    lengths: torch.Tensor,
    max_len: int,
    k: int,
    gamma: torch.Tensor,
    training: bool,
    seed: int,
    mask_picked: bool,
    logit_scale: float,
    padded: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Indices (B, k); on C++ with float32 features also the coreset and the weights, written by the kernel
    (which also checks every row it reads for NaN / infinity), else None for both."""
    ext = compiled_extension()
    dtype = rows2d.dtype if backend == "cuda" and rows2d.dtype in _DTYPE_TAGS else torch.float32
    work = rows2d.to(dtype).contiguous()
    nrm = norms.reshape(-1).to(torch.float32).contiguous()
    g = gamma.detach().reshape(1).to(device=rows2d.device, dtype=torch.float32).contiguous()
    num_sets, dim = starts.shape[0], rows2d.shape[1]
    indices = torch.empty(num_sets, k, dtype=torch.int64, device=rows2d.device)
    if num_sets == 0:
        return indices, None, None
    args = (
        work.data_ptr(),
        _DTYPE_TAGS[dtype],
        nrm.data_ptr(),
        dim,
        starts.data_ptr(),
        lengths.data_ptr(),
        num_sets,
        max_len,
        k,
        g.data_ptr(),
        training,
        seed,
        mask_picked,
        logit_scale,
        indices.data_ptr(),
    )
    if backend == "cuda":
        limit = torch.cuda.get_device_properties(rows2d.device).shared_memory_per_block_optin
        scratch = None
        if ext.gumbel_fps_cuda_shared_bytes(max_len, dim) > limit:
            scratch = torch.empty(num_sets * 3 * max_len, dtype=torch.float32, device=rows2d.device)
        stream = torch.cuda.current_stream(rows2d.device).cuda_stream
        ext.gumbel_fps_cuda(*args, 0 if scratch is None else scratch.data_ptr(), stream)
        return indices, None, None
    fill = rows2d.dtype == torch.float32
    coreset = rows2d.new_empty(num_sets, k, dim) if fill else None
    if not fill:
        weights = None
    elif padded:
        weights = rows2d.new_empty(num_sets, k, max_len)
    else:
        weights = rows2d.new_empty(k, rows2d.shape[0])
    w_strides = (k * max_len, 0, max_len) if padded else (0, 1, rows2d.shape[0])
    nonfinite = torch.empty(num_sets, dtype=torch.int32)
    ext.gumbel_fps_cpu(
        *args,
        torch.get_num_threads(),
        0 if coreset is None else coreset.data_ptr(),
        0 if weights is None else weights.data_ptr(),
        *w_strides,
        nonfinite.data_ptr(),
    )
    if bool(nonfinite.any()):
        raise ValueError("gumbel_fps: features contain NaN or infinite values")
    return indices, weights, coreset


def _kernel_backward(
    backend: str,
    grad_weights: torch.Tensor,
    grad_coreset: torch.Tensor,
    features: torch.Tensor,
    norms: torch.Tensor,
    starts: torch.Tensor,
    lengths: torch.Tensor,
    max_len: int,
    indices: torch.Tensor,
    gamma: torch.Tensor,
    tau: float,
    training: bool,
    seed: int,
    mask_picked: bool,
    logit_scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The C++ / CUDA backward kernel (float32): one call for every set, no loop over the K steps."""
    ext = compiled_extension()
    dim = features.shape[-1]
    num_sets, k = indices.shape
    work = features.reshape(-1, dim).to(torch.float32).contiguous()
    nrm = norms.reshape(-1).to(torch.float32).contiguous()
    g = gamma.detach().reshape(1).to(device=features.device, dtype=torch.float32).contiguous()
    g_w = grad_weights.to(torch.float32).contiguous()
    g_c = grad_coreset.to(torch.float32).contiguous()
    idx = indices.contiguous()
    grad_f = torch.empty_like(work)
    grad_n = torch.empty_like(nrm)
    grad_gamma = torch.zeros(num_sets, dtype=torch.float32, device=features.device)
    padded = features.dim() == 3
    # grad_weights element (set, step, item): padded (B, k, N); packed (k, T), item i of set b at column start_b + i
    strides = (k * max_len, 0, max_len) if padded else (0, 1, work.shape[0])
    if num_sets:
        args = (
            work.data_ptr(),
            nrm.data_ptr(),
            dim,
            starts.data_ptr(),
            lengths.data_ptr(),
            num_sets,
            max_len,
            k,
            g.data_ptr(),
            training,
            seed,
            mask_picked,
            logit_scale,
            idx.data_ptr(),
            tau,
            g_w.data_ptr(),
            *strides,
            g_c.data_ptr(),
            grad_f.data_ptr(),
            padded,
            grad_n.data_ptr(),
            grad_gamma.data_ptr(),
        )
        if backend == "cuda":
            per_set = ext.gumbel_fps_backward_cuda_scratch_floats(max_len, k, dim)
            scratch = torch.empty(num_sets * per_set, dtype=torch.float32, device=features.device)
            stream = torch.cuda.current_stream(features.device).cuda_stream
            ext.gumbel_fps_backward_cuda(args[0], 0, *args[1:], scratch.data_ptr(), stream)
        else:
            ext.gumbel_fps_backward_cpu(*args, torch.get_num_threads())
    return grad_f, grad_n, grad_gamma.sum()


def _reference_indices(
    rows2d: torch.Tensor,
    norms: torch.Tensor,
    starts: torch.Tensor,
    lengths: torch.Tensor,
    k: int,
    gamma: torch.Tensor,
    tau: float,
    training: bool,
    seed: int,
    mask_picked: bool,
    logit_scale: float,
) -> torch.Tensor:
    out = []
    flat_norms = norms.reshape(-1)
    for b, (start, n) in enumerate(zip(starts.tolist(), lengths.tolist(), strict=True)):
        f, nrm = rows2d[start : start + n], flat_norms[start : start + n]
        noise = gumbel_fps_set_noise(seed, b, k, n).to(f) if training else None
        out.append(gumbel_fps_one_set(f, nrm, k, gamma.to(f.dtype), tau, noise, None, mask_picked, logit_scale)[0])
    return torch.stack(out).to(rows2d.device) if out else torch.empty(0, k, dtype=torch.int64, device=rows2d.device)


# --------------------------------------------------------------------------------- custom ops
@torch.library.custom_op("mrface::gumbel_fps", mutates_args=())
def _gumbel_fps_op(
    features: torch.Tensor,
    norms: torch.Tensor,
    lengths_or_offsets: torch.Tensor,
    k: int,
    gamma: torch.Tensor,
    tau: float,
    training: bool,
    seed: int,
    mask_picked: bool = True,
    logit_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (weights, coreset, indices): the integer output last, as opcheck's autograd test expects.

    ``training``: draw the Gumbel noise of ``seed`` (the public API also sets it for ``eval_noise``).
    """
    dim = features.shape[-1]
    rows2d = features.reshape(-1, dim)
    starts, lengths = _starts_lengths(features, lengths_or_offsets)
    max_len = _max_len(features, lengths)
    backend = choose_backend("gumbel_fps", features.device, _SUPPORTED)
    if backend == "reference":
        indices = _reference_indices(
            rows2d, norms, starts, lengths, k, gamma, tau, training, seed, mask_picked, logit_scale
        )
    else:
        indices, weights, coreset = _kernel_indices(
            backend,
            rows2d,
            norms,
            starts,
            lengths,
            max_len,
            k,
            gamma,
            training,
            seed,
            mask_picked,
            logit_scale,
            features.dim() == 3,
        )
        if weights is not None:
            return weights, coreset, indices
    picked = indices >= 0
    rows = starts[:, None] + indices.clamp_min(0)
    coreset = rows2d[rows] * picked[..., None].to(features.dtype)
    if features.dim() == 3:
        weights = features.new_zeros(features.shape[0], k, features.shape[1])
        weights.scatter_(2, indices.clamp_min(0)[..., None], picked[..., None].to(features.dtype))
    else:
        weights = features.new_zeros(k, features.shape[0])
        steps = torch.arange(k, device=features.device).expand_as(indices)
        weights.index_put_((steps[picked], rows[picked]), features.new_ones(()))
    return weights, coreset, indices


@_gumbel_fps_op.register_fake
def _(features, norms, lengths_or_offsets, k, gamma, tau, training, seed, mask_picked=True, logit_scale=1.0):
    num_sets = features.shape[0] if features.dim() == 3 else lengths_or_offsets.shape[0] - 1
    indices = features.new_empty(num_sets, k, dtype=torch.int64)
    if features.dim() == 3:
        weights = features.new_empty(num_sets, k, features.shape[1])
    else:
        weights = features.new_empty(k, features.shape[0])
    return weights, features.new_empty(num_sets, k, features.shape[-1]), indices


@torch.library.custom_op("mrface::gumbel_fps_backward", mutates_args=())
def _gumbel_fps_backward_op(
    grad_weights: torch.Tensor,
    grad_coreset: torch.Tensor,
    features: torch.Tensor,
    norms: torch.Tensor,
    lengths_or_offsets: torch.Tensor,
    indices: torch.Tensor,
    gamma: torch.Tensor,
    tau: float,
    training: bool,
    seed: int,
    mask_picked: bool = True,
    logit_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dim = features.shape[-1]
    starts, lengths = _starts_lengths(features, lengths_or_offsets)
    max_len = _max_len(features, lengths)
    backend = choose_backend("gumbel_fps", features.device, _SUPPORTED)
    if backend != "reference" and features.dtype != torch.float64:
        g_f, g_n, g_gamma = _kernel_backward(
            backend,
            grad_weights,
            grad_coreset,
            features,
            norms,
            starts,
            lengths,
            max_len,
            indices,
            gamma,
            tau,
            training,
            seed,
            mask_picked,
            logit_scale,
        )
        return (
            g_f.reshape(features.shape).to(features.dtype),
            g_n.reshape(norms.shape).to(norms.dtype),
            g_gamma.reshape(gamma.shape).to(gamma.dtype),
        )
    # float64 (and the reference backend): the batched PyTorch recompute path in the input precision
    rows, valid = _padded_rows(starts, lengths, max_len)
    compute = torch.float64 if features.dtype == torch.float64 else torch.float32
    f = features.reshape(-1, dim)[rows].to(compute) * valid[..., None]
    nrm = torch.where(valid, norms.reshape(-1)[rows].to(compute), 1.0)
    num_sets, k = indices.shape
    noise = gumbel_fps_noise(seed, num_sets, k, max_len, features.device).to(compute) if training else None
    if features.dim() == 3:
        g_w = grad_weights.to(compute)
    else:
        g_w = grad_weights.to(compute)[:, rows].permute(1, 0, 2) * valid[:, None, :]
    g_f, g_n, g_gamma = _straight_through_backward(
        f, nrm, valid, gamma.to(compute), tau, noise, indices, g_w, grad_coreset.to(compute), mask_picked, logit_scale
    )
    flat = rows[valid]
    grad_features = torch.zeros(features.reshape(-1, dim).shape, dtype=compute, device=features.device)
    grad_features.index_add_(0, flat, g_f[valid])
    grad_norms = torch.zeros(norms.numel(), dtype=compute, device=features.device).index_add_(0, flat, g_n[valid])
    return (
        grad_features.reshape(features.shape).to(features.dtype),
        grad_norms.reshape(norms.shape).to(norms.dtype),
        g_gamma.reshape(gamma.shape).to(gamma.dtype),
    )


@_gumbel_fps_backward_op.register_fake
def _(
    grad_weights,
    grad_coreset,
    features,
    norms,
    lengths_or_offsets,
    indices,
    gamma,
    tau,
    training,
    seed,
    mask_picked=True,
    logit_scale=1.0,
):
    return torch.empty_like(features), torch.empty_like(norms), torch.empty_like(gamma)


def _setup_context(ctx, inputs, output) -> None:
    features, norms, lengths_or_offsets, k, gamma, tau, training, seed, *options = inputs
    ctx.save_for_backward(features, norms, lengths_or_offsets, gamma, output[2])
    ctx.tau, ctx.training, ctx.seed = tau, training, seed
    ctx.options = tuple(options)  # (mask_picked, logit_scale) when given
    ctx.weights_shape, ctx.coreset_shape = output[0].shape, output[1].shape


def _backward(ctx, grad_weights, grad_coreset, grad_indices):
    features, norms, lengths_or_offsets, gamma, indices = ctx.saved_tensors
    if grad_weights is None:
        grad_weights = features.new_zeros(ctx.weights_shape)
    if grad_coreset is None:
        grad_coreset = features.new_zeros(ctx.coreset_shape)
    g_f, g_n, g_gamma = _gumbel_fps_backward_op(
        grad_weights,
        grad_coreset,
        features,
        norms,
        lengths_or_offsets,
        indices,
        gamma,
        ctx.tau,
        ctx.training,
        ctx.seed,
        *ctx.options,
    )
    return (g_f, g_n, None, None, g_gamma, None, None, None) + (None,) * len(ctx.options)


_gumbel_fps_op.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------- public API
def _check_inputs(
    features: object,
    norms: object,
    lengths_or_offsets: object,
    k: object,
    tau: object,
    logit_scale: object,
    check_features_finite: bool = True,
) -> None:
    op = "gumbel_fps"
    if not isinstance(features, torch.Tensor) or features.dim() not in (2, 3):
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(f"{op}: features must be a tensor (B, N_max, D) padded or (T, D) packed, got {shape}")
    if not features.dtype.is_floating_point:
        raise TypeError(f"{op}: features must be floating point, got {features.dtype}")
    if features.shape[-1] == 0:
        raise ValueError(f"{op}: features must have D >= 1, got shape {tuple(features.shape)}")
    if not isinstance(norms, torch.Tensor) or norms.shape != features.shape[:-1]:
        got = tuple(norms.shape) if isinstance(norms, torch.Tensor) else type(norms).__name__
        raise ValueError(f"{op}: norms must have shape {tuple(features.shape[:-1])} (features without D), got {got}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"{op}: k must be an int >= 1, got {k!r}")
    if not isinstance(tau, (int, float)) or not tau > 0:
        raise ValueError(f"{op}: tau must be a positive float, got {tau!r}")
    if (
        isinstance(logit_scale, bool)
        or not isinstance(logit_scale, (int, float))
        or not (0 < logit_scale < float("inf"))
    ):
        raise ValueError(f"{op}: logit_scale must be a positive finite float, got {logit_scale!r}")
    if (
        not isinstance(lengths_or_offsets, torch.Tensor)
        or lengths_or_offsets.dim() != 1
        or (lengths_or_offsets.dtype.is_floating_point)
    ):
        raise ValueError(f"{op}: lengths_or_offsets must be a 1-D integer tensor")
    bounds = lengths_or_offsets.to(device="cpu", dtype=torch.int64)
    if features.dim() == 3:
        num_sets, max_len = features.shape[:2]
        if bounds.shape[0] != num_sets:
            raise ValueError(f"{op}: padded input needs lengths of shape ({num_sets},), got {tuple(bounds.shape)}")
        if num_sets and int(bounds.min()) < 1:
            raise ValueError(f"{op}: every set needs at least one item (lengths >= 1); got min {int(bounds.min())}")
        if num_sets and int(bounds.max()) > max_len:
            raise ValueError(f"{op}: lengths must be <= N_max={max_len}; got max {int(bounds.max())}")
    else:
        if bounds.shape[0] < 1 or int(bounds[0]) != 0 or int(bounds[-1]) != features.shape[0]:
            raise ValueError(f"{op}: packed input needs offsets (B + 1,) from 0 to T={features.shape[0]}")
        if bounds.shape[0] > 1 and not bool((bounds[1:] > bounds[:-1]).all()):
            raise ValueError(f"{op}: offsets must be strictly increasing (every set needs at least one item)")
    # One reduction pass; the element-wise check only runs when the sum is not finite (or overflowed).
    if check_features_finite and not bool(torch.isfinite(features.sum())) and not bool(torch.isfinite(features).all()):
        raise ValueError(f"{op}: features contain NaN or infinite values")
    if not bool((torch.isfinite(norms) & (norms > 0)).all()):
        raise ValueError(f"{op}: norms must be finite and > 0")


def gumbel_fps(
    features: torch.Tensor,
    norms: torch.Tensor,
    lengths_or_offsets: torch.Tensor,
    k: int = 3,
    gamma: torch.Tensor | float = 0.01,
    tau: float = 1.0,
    training: bool = False,
    generator: torch.Generator | None = None,
    *,
    mask_picked: bool = True,
    eval_noise: bool = False,
    logit_scale: float = 1.0,
) -> CoresetSelection:
    """Pick a coreset of k items per set by Gumbel-softmax farthest point sampling (REFERENCE.md §6).

    Args:
        features: (B, N_max, D) padded or (T, D) packed float features (unit vectors f_i / |f_i| in
            FaceCoresetNet; the cosine normalises anyway).
        norms: (B, N_max) or (T,) feature norms |f_i| > 0 (quality).
        lengths_or_offsets: padded: lengths (B,) in [1, N_max]; packed: offsets (B + 1,) from 0 to T,
            strictly increasing.
        k: picks per set; sets with n < k pick all n items and leave -1 / zeros in the rest.
        gamma: norm exponent of the distance; a tensor (e.g. an ``nn.Parameter``) gets a gradient.
        tau: softmax temperature of the straight-through gradient (> 0).
        training: add Gumbel noise drawn from a seed taken from ``generator`` (the default CPU
            generator when None); the same seed gives the same picks on every backend. False: arg-max
            (unless ``eval_noise``).
        mask_picked: True (default): an item is picked at most once per set. False: every item stays
            eligible at every step and can be drawn again (the public FaceCoresetNet code); the soft
            probabilities then run over all items of the set.
        eval_noise: draw the Gumbel noise in inference too (``training=False``), as the public code does.
        logit_scale: the logits (norms, then the running minimum) are multiplied by it before the noise
            is added: pick = argmax(logit_scale * logits + g), soft = softmax((logit_scale * logits + g) / tau).
            Public FaceCoresetNet: training ``logit_scale=1, tau=1``; inference ``eval_noise=True,
            logit_scale=1e4, tau=1e-10``, both with ``mask_picked=False``.
    Returns:
        :class:`CoresetSelection` (indices (B, k), weights, coreset (B, k, D)); weights and coreset are
        differentiable w.r.t. features, norms and gamma (straight-through).
    """
    # The C++ kernel checks the rows it reads (every item within the lengths) for NaN / infinity itself.
    kernel_checks = (
        not torch.compiler.is_compiling()
        and isinstance(features, torch.Tensor)
        and features.device.type == "cpu"
        and features.dtype == torch.float32
        and choose_backend("gumbel_fps", features.device, _SUPPORTED) == "cpp"
    )
    _check_inputs(features, norms, lengths_or_offsets, k, tau, logit_scale, not kernel_checks)
    if not isinstance(gamma, torch.Tensor):
        gamma = torch.tensor(float(gamma), dtype=torch.float32, device=features.device)
    if gamma.numel() != 1 or not bool(torch.isfinite(gamma).all()):
        raise ValueError(f"gumbel_fps: gamma must be one finite number, got shape {tuple(gamma.shape)}")
    noisy = bool(training or eval_noise)
    seed = 0
    if noisy:
        device = generator.device if generator is not None else "cpu"
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device))
    if forced_backend() is not None:
        choose_backend("gumbel_fps", features.device, _SUPPORTED)  # fail before the op for a clear error
    weights, coreset, indices = _gumbel_fps_op(
        features,
        norms,
        lengths_or_offsets,
        k,
        gamma.reshape(()),
        float(tau),
        noisy,
        seed,
        bool(mask_picked),
        float(logit_scale),
    )
    return CoresetSelection(indices, weights, coreset)
