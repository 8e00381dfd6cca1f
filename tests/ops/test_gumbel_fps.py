"""gumbel_fps: backends against the per-set reference, the reference against plain Python, RNG, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch.library import opcheck

from mrface.ops import gumbel_fps, use_backend
from mrface.ops.backend import compiled_extension
from mrface.ops.gumbel_fps import _gumbel_fps_backward_op, _gumbel_fps_op, batched_gumbel_fps_torch
from mrface.ops.reference.gumbel_fps import (
    gumbel_fps_noise,
    gumbel_fps_one_set,
    gumbel_fps_reference,
    gumbel_fps_uniform,
)

CPU_BACKENDS = ["cpp", "reference"]
MASK = (1 << 64) - 1


def random_padded(sets: int, max_len: int, dim: int, seed: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_len + 1, (sets,), generator=g)
    lengths[0] = max_len
    features = torch.randn(sets, max_len, dim, generator=g, dtype=torch.float64)
    features = torch.nn.functional.normalize(features, dim=-1)
    norms = torch.rand(sets, max_len, generator=g, dtype=torch.float64) * 3 + 0.5
    return features.to(dtype), norms.to(dtype), lengths


def pack(features: torch.Tensor, norms: torch.Tensor, lengths: torch.Tensor):
    rows = [features[b, :n] for b, n in enumerate(lengths.tolist())]
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lengths, 0)])
    return torch.cat(rows), torch.cat([norms[b, :n] for b, n in enumerate(lengths.tolist())]), offsets


def draw_seed(seed: int) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(seed)))


# --------------------------------------------------------------------------------------- RNG
def python_splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def python_uniform(seed: int, set_index: int, step: int, item: int) -> float:
    stream = python_splitmix64(python_splitmix64(python_splitmix64(seed) ^ set_index) ^ step)
    return ((python_splitmix64(stream ^ item) >> 40) + 0.5) / 2**24


@pytest.mark.parametrize("seed", [0, 1, 2**62 - 1, 0x9E3779B97F4A7C15 & (2**63 - 1)])
def test_uniforms_equal_python_integers_in_torch_and_cpp(seed):
    items = torch.arange(50)
    expected = torch.tensor([python_uniform(seed, 7, 3, i) for i in range(50)], dtype=torch.float32)
    torch_u = gumbel_fps_uniform(seed, torch.tensor(7), torch.tensor(3), items)
    cpp_u = torch.from_numpy(compiled_extension().gumbel_fps_uniform(seed, 7, 3, 50))
    assert torch.equal(torch_u, expected)
    assert torch.equal(cpp_u, expected)


def test_noise_is_standard_gumbel():
    noise = gumbel_fps_noise(5, 64, 8, 200).double()  # 102400 draws
    assert abs(noise.mean().item() - 0.5772156649) < 0.02  # Euler-Mascheroni; sd/sqrt(n) ~ 0.004
    assert abs(noise.var().item() - math.pi**2 / 6) < 0.05
    assert len(torch.unique(noise)) > 0.99 * noise.numel()


# -------------------------------------------------------------------- reference vs plain Python
def python_fps(
    features: list[list[float]],
    norms: list[float],
    k: int,
    gamma: float,
    noise=None,
    mask: bool = True,
    scale: float = 1.0,
) -> list[int]:
    """Textbook definition in Python floats: first pick by norm, then the farthest by running min.

    mask=False: earlier picks stay eligible; scale multiplies the score before the noise is added.
    """
    n = len(features)
    length = [math.sqrt(sum(v * v for v in f)) for f in features]
    picked: list[int] = []
    running = [math.inf] * n
    for t in range(min(k, n)):
        if t == 0:
            score = list(norms)
        else:
            c = picked[-1]
            for i in range(n):
                cos = sum(a * b for a, b in zip(features[i], features[c], strict=True)) / (length[i] * length[c])
                running[i] = min(running[i], norms[i] ** gamma * (1 - cos) / 2)
            score = running
        best, best_value = -1, -math.inf
        for i in range(n):
            value = score[i] * scale + (noise[t][i] if noise is not None else 0.0)
            if (not mask or i not in picked) and value > best_value:
                best, best_value = i, value
        picked.append(best)
    return picked + [-1] * (k - len(picked))


@pytest.mark.parametrize("n,k", [(1, 3), (4, 4), (7, 3), (6, 9)])
@pytest.mark.parametrize("training", [False, True])
def test_reference_matches_python_definition(n, k, training):
    g = torch.Generator().manual_seed(n * 10 + k)
    f = torch.randn(n, 5, generator=g, dtype=torch.float64)
    norms = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    noise = gumbel_fps_noise(11, 1, k, n)[0].double() if training else None
    idx, weights, coreset = gumbel_fps_one_set(f, norms, k, 0.7, 1.0, noise)
    expected = python_fps(f.tolist(), norms.tolist(), k, 0.7, None if noise is None else noise.tolist())
    assert idx.tolist() == expected
    for t, i in enumerate(expected):
        if i >= 0:
            assert torch.equal(coreset[t], f[i]) and weights[t].tolist() == [float(j == i) for j in range(n)]
        else:
            assert not coreset[t].any() and not weights[t].any()


def test_unmasked_deterministic_picks_repeat_the_first_item_of_identical_directions():
    """Three items along one axis: every distance is exactly 0, so unmasked arg-max re-picks item 0."""
    features = torch.tensor([[[2.0, 0.0, 0.0], [1.0, 0.0, 0.0], [3.0, 0.0, 0.0]]])
    norms = torch.tensor([[2.0, 1.0, 1.5]])
    lengths = torch.tensor([3])
    for backend in CPU_BACKENDS:
        with use_backend(backend):
            masked = gumbel_fps(features, norms, lengths, 3, gamma=0.0).indices
            unmasked = gumbel_fps(features, norms, lengths, 3, gamma=0.0, mask_picked=False)
        assert masked.tolist() == [[0, 1, 2]]  # largest norm first, then ties (all distances 0): lowest unpicked
        assert unmasked.indices.tolist() == [[0, 0, 0]]
        assert unmasked.weights[0].tolist() == [[1.0, 0.0, 0.0]] * 3
        assert torch.equal(unmasked.coreset[0], features[0, [0, 0, 0]])


@pytest.mark.parametrize("n,k,scale", [(3, 3, 1.0), (4, 6, 1.0), (5, 4, 1e4), (2, 2, 1e4)])
def test_unmasked_noisy_picks_follow_the_python_definition_and_can_repeat(n, k, scale):
    """Near-identical directions: the noise decides, and without the mask an item is drawn again."""
    sets, dim = 40, 4
    g = torch.Generator().manual_seed(n + k)
    base = torch.randn(dim, generator=g, dtype=torch.float64)
    features = base + 1e-3 * torch.randn(sets, n, dim, generator=g, dtype=torch.float64)
    norms = torch.ones(sets, n, dtype=torch.float64) + 1e-6 * torch.rand(sets, n, generator=g, dtype=torch.float64)
    lengths = torch.full((sets,), n)
    noise = gumbel_fps_noise(draw_seed(3), sets, k, n).double()
    expected = [
        python_fps(features[b].tolist(), norms[b].tolist(), k, 0.5, noise[b].tolist(), False, scale)
        for b in range(sets)
    ]
    repeats = sum(len(set(p)) < len(p) - p.count(-1) for p in expected)
    assert repeats > sets // 4  # the mask matters on this data
    for backend in CPU_BACKENDS:
        with use_backend(backend):
            out = gumbel_fps(
                features.float(),
                norms.float(),
                lengths,
                k,
                0.5,
                1.0,
                True,
                torch.Generator().manual_seed(3),
                mask_picked=False,
                logit_scale=scale,
            )
        assert out.indices.tolist() == expected, backend
        picked = out.indices >= 0
        assert torch.equal(out.weights.sum(-1), picked.float())  # one-hot rows, repeats included


def test_public_inference_mode_draws_noise_with_a_large_logit_scale():
    """eval_noise + logit_scale 1e4: the pick is argmax(1e4 * norms + g), not argmax(norms)."""
    sets = 400
    norms = torch.tensor([1.0, 1.0 + 2**-13]).expand(sets, 2).contiguous()  # 1e4 * gap = 1.22: noise decides often
    features = torch.randn(sets, 2, 3, generator=torch.Generator().manual_seed(0))
    lengths = torch.full((sets,), 2)
    seed = draw_seed(6)
    noise = gumbel_fps_noise(seed, sets, 1, 2)[:, 0].double()
    expected = [
        python_fps(features[b].tolist(), norms[b].tolist(), 1, 0.01, [noise[b].tolist()], False, 1e4)[0]
        for b in range(sets)
    ]
    for backend in CPU_BACKENDS:
        with use_backend(backend):
            out = gumbel_fps(
                features,
                norms,
                lengths,
                1,
                0.01,
                1e-10,
                False,
                torch.Generator().manual_seed(6),
                mask_picked=False,
                eval_noise=True,
                logit_scale=1e4,
            )
            plain = gumbel_fps(features, norms, lengths, 1, 0.01, 1e-10, False, mask_picked=False)
        assert out.indices[:, 0].tolist() == expected
        assert plain.indices.eq(1).all()
        freq0 = expected.count(0) / sets  # P(pick 0) = sigmoid(-1e4 * gap) = 0.228
        assert abs(freq0 - 1 / (1 + math.exp(1e4 * 2**-13))) < 4 * math.sqrt(0.25 / sets)


def test_bad_logit_scale_raises():
    features, norms = torch.randn(2, 4, 3), torch.rand(2, 4) + 0.5
    for bad in (0.0, -1.0, float("inf"), True):
        with pytest.raises(ValueError, match="logit_scale must be a positive finite float"):
            gumbel_fps(features, norms, torch.tensor([3, 4]), logit_scale=bad)


def test_reference_straight_through_gradcheck():
    g = torch.Generator().manual_seed(3)
    f = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    norms = (torch.rand(6, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
    gamma = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)
    noise = gumbel_fps_noise(4, 1, 3, 6)[0].double()

    def soft_rows(f_, n_, g_):  # the detached soft probabilities at the current point
        rows = []
        with torch.no_grad():
            idx, w, _ = gumbel_fps_one_set(f_, n_, 3, g_, 0.8, noise)
        allowed = torch.ones(6, dtype=torch.bool)
        # recompute the softs with the same picks (frozen constants for the check)
        running = None
        length = f_.norm(dim=1)
        for t in range(3):
            if t == 0:
                logits = n_
            else:
                c = f_[idx[t - 1]]
                d = n_**g_ * (1 - f_ @ c / (length * c.norm())) / 2
                running = d if running is None else torch.minimum(running, d)
                logits = running
            rows.append(torch.softmax((logits + noise[t]).masked_fill(~allowed, -math.inf) / 0.8, 0).detach())
            allowed[idx[t]] = False
        return rows

    frozen = soft_rows(f.detach(), norms.detach(), gamma.detach())

    def fn(f_, n_, g_):
        _, w, c = gumbel_fps_one_set(f_, n_, 3, g_, 0.8, noise, frozen_soft=frozen)
        return w, c

    assert torch.autograd.gradcheck(fn, (f, norms, gamma), eps=1e-6, atol=1e-6)


# ---------------------------------------------------------------------- backends vs reference
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("sets,max_len,dim,k", [(1, 1, 3, 3), (5, 13, 7, 4), (9, 40, 33, 8), (3, 5, 16, 9)])
def test_picks_equal_reference(backend, training, sets, max_len, dim, k):
    features, norms, lengths = random_padded(sets, max_len, dim, seed=sets + max_len + k)
    with use_backend(backend):
        out = gumbel_fps(features, norms, lengths, k, 0.3, 1.0, training, torch.Generator().manual_seed(8))
    ref = gumbel_fps_reference(features.double(), norms.double(), lengths, k, 0.3, 1.0, training, draw_seed(8))
    assert torch.equal(out.indices, ref[0])
    assert torch.equal(out.weights, ref[1].float())
    assert torch.equal(out.coreset, ref[2].float())
    for b, n in enumerate(lengths.tolist()):
        picks = out.indices[b][out.indices[b] >= 0].tolist()
        assert len(picks) == min(k, n) and len(set(picks)) == len(picks)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_ties_go_to_the_lowest_index(backend):
    dim = 6
    base = torch.nn.functional.normalize(torch.randn(3, dim, generator=torch.Generator().manual_seed(1)), dim=-1)
    # set 0: five copies of one item -> 0, 1, 2; set 1: items 2 and 5 share the largest norm;
    # set 2: items 1 and 4 are copies of each other, as far from item 0 as possible
    features = torch.zeros(3, 6, dim)
    norms = torch.ones(3, 6)
    features[0, :5] = base[0]
    features[1] = base[torch.tensor([0, 1, 0, 1, 2, 2])]
    norms[1] = torch.tensor([1.0, 1.5, 2.0, 1.0, 1.0, 2.0])
    features[2, :5] = torch.stack([base[0], -base[0], base[0], base[0], -base[0]])
    norms[2, :5] = torch.tensor([3.0, 1.0, 1.0, 1.0, 1.0])
    lengths = torch.tensor([5, 6, 5])
    with use_backend(backend):
        idx = gumbel_fps(features, norms, lengths, 3, gamma=0.0).indices
    assert idx[0].tolist() == [0, 1, 2]
    assert idx[1, 0].item() == 2
    assert idx[2, :2].tolist() == [0, 1]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_k_larger_than_n_picks_everything_once(backend):
    features, norms, lengths = random_padded(6, 5, 4, seed=2)
    with use_backend(backend):
        for training in (False, True):
            out = gumbel_fps(features, norms, lengths, 8, 0.1, 1.0, training, torch.Generator().manual_seed(0))
            for b, n in enumerate(lengths.tolist()):
                assert sorted(out.indices[b, :n].tolist()) == list(range(n))
                assert out.indices[b, n:].eq(-1).all()
                assert not out.coreset[b, n:].any() and not out.weights[b, n:].any()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("training", [False, True])
def test_padded_and_packed_agree(backend, training):
    features, norms, lengths = random_padded(7, 11, 9, seed=5)
    pf, pn, offsets = pack(features, norms, lengths)
    with use_backend(backend):
        a = gumbel_fps(features, norms, lengths, 4, 0.2, 1.0, training, torch.Generator().manual_seed(1))
        b = gumbel_fps(pf, pn, offsets, 4, 0.2, 1.0, training, torch.Generator().manual_seed(1))
    assert torch.equal(a.indices, b.indices)
    assert torch.equal(a.coreset, b.coreset)
    for s, n in enumerate(lengths.tolist()):
        start = int(offsets[s])
        assert torch.equal(a.weights[s, :, :n], b.weights[:, start : start + n])
    assert b.weights.sum() == a.weights.sum() == (a.indices >= 0).sum()


def test_same_generator_seed_same_picks_and_generator_advances():
    features, norms, lengths = random_padded(16, 30, 8, seed=9)
    g = torch.Generator().manual_seed(4)
    first = gumbel_fps(features, norms, lengths, 5, training=True, generator=g).indices
    second = gumbel_fps(features, norms, lengths, 5, training=True, generator=g).indices
    again = gumbel_fps(features, norms, lengths, 5, training=True, generator=torch.Generator().manual_seed(4)).indices
    assert torch.equal(first, again)
    assert not torch.equal(first, second)


def test_stochastic_first_pick_follows_softmax_of_norms():
    """Gumbel-max: P(first pick = i) = softmax(norms)_i; every set draws its own noise."""
    norms_one = torch.tensor([0.5, 1.0, 1.5, 2.0])
    sets = 4000
    features = torch.randn(sets, 4, 3, generator=torch.Generator().manual_seed(0))
    idx = gumbel_fps(
        features,
        norms_one.expand(sets, 4).contiguous(),
        torch.full((sets,), 4),
        1,
        training=True,
        generator=torch.Generator().manual_seed(2),
    ).indices[:, 0]
    freq = torch.bincount(idx, minlength=4).double() / sets
    p = torch.softmax(norms_one.double(), 0)
    assert torch.all((freq - p).abs() < 4 * torch.sqrt(p * (1 - p) / sets))


def test_batched_torch_loop_picks_equal_reference():
    features, norms, lengths = random_padded(6, 17, 10, seed=12)
    valid = torch.arange(17)[None] < lengths[:, None]
    noise = gumbel_fps_noise(33, 6, 5, 17)
    idx, w, c, _ = batched_gumbel_fps_torch(
        features * valid[..., None], torch.where(valid, norms, 1.0), valid, 5, torch.tensor(0.4), 1.0, noise
    )
    ref = gumbel_fps_reference(features, norms, lengths, 5, 0.4, 1.0, True, 33)
    assert torch.equal(idx, ref[0])
    assert torch.equal(c, ref[2])


# ------------------------------------------------------------------------------------ gradients
def _loss_grads(fn, features, norms, gamma, weights_probe, coreset_probe):
    f = features.detach().requires_grad_()
    n = norms.detach().requires_grad_()
    g = gamma.detach().requires_grad_()
    _, w, c = fn(f, n, g)
    loss = (w * weights_probe).sum() + (c * coreset_probe).sum()
    return torch.autograd.grad(loss, [f, n, g])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("mask_picked,logit_scale", [(True, 1.0), (False, 2.5)])
def test_gradients_match_reference_autograd(backend, training, dtype, tol, packed, mask_picked, logit_scale):
    features, norms, lengths = random_padded(5, 8, 6, seed=21, dtype=dtype)
    lengths[-1] = 2  # k > n in one set
    gamma = torch.tensor(0.5, dtype=dtype)
    seed, k, tau = 77, 4, 0.6
    if packed:
        features, norms, lengths = pack(features, norms, lengths)
    g = torch.Generator().manual_seed(0)
    probe_w = torch.randn((k, features.shape[0]) if packed else (5, k, 8), generator=g, dtype=dtype)
    probe_c = torch.randn(5, k, 6, generator=g, dtype=dtype)

    def ref(f, n, gm):
        return gumbel_fps_reference(
            f.double(), n.double(), lengths, k, gm.double(), tau, training, seed, mask_picked, logit_scale
        )

    def op(f, n, gm):
        with use_backend(backend):
            w, c, idx = _gumbel_fps_op(f, n, lengths, k, gm, tau, training, seed, mask_picked, logit_scale)
            return idx, w, c

    expected = _loss_grads(ref, features, norms, gamma, probe_w.double(), probe_c.double())
    got = _loss_grads(op, features, norms, gamma, probe_w, probe_c)
    for e, a in zip(expected, got, strict=True):
        assert a.dtype == dtype
        assert torch.allclose(a.double(), e.double(), rtol=tol, atol=tol * e.abs().max().item()), (a, e)
    assert expected[2].abs().item() > 0 and expected[1].abs().max() > 0


def test_gradient_through_public_api_and_parameter_gamma():
    features, norms, lengths = random_padded(3, 6, 5, seed=4)
    features.requires_grad_()
    gamma = torch.nn.Parameter(torch.tensor(0.01))
    out = gumbel_fps(features, norms, lengths, 3, gamma, 1.0, True, torch.Generator().manual_seed(0))
    (out.coreset.sum() + (out.weights * torch.arange(6.0)).sum()).backward()
    assert features.grad is not None and torch.isfinite(features.grad).all()
    assert gamma.grad is not None and gamma.grad.abs() > 0


# ----------------------------------------------------------------------------- torch.library
def test_opcheck_padded_and_packed():
    features, norms, lengths = random_padded(4, 7, 5, seed=6)
    features.requires_grad_()
    norms.requires_grad_()
    gamma = torch.tensor(0.3, requires_grad=True)
    opcheck(_gumbel_fps_op, (features, norms, lengths, 3, gamma, 1.0, True, 123))
    pf, pn, offsets = pack(features.detach(), norms.detach(), lengths)
    opcheck(_gumbel_fps_op, (pf.requires_grad_(), pn.requires_grad_(), offsets, 3, gamma, 0.5, False, 0))
    with torch.no_grad():
        idx = _gumbel_fps_op(features, norms, lengths, 3, gamma, 1.0, True, 123)[2]
    opcheck(
        _gumbel_fps_backward_op,
        (
            torch.randn(4, 3, 7),
            torch.randn(4, 3, 5),
            features.detach(),
            norms.detach(),
            lengths,
            idx,
            gamma.detach(),
            1.0,
            True,
            123,
        ),
    )


def test_torch_compile_matches_eager():
    features, norms, lengths = random_padded(4, 9, 6, seed=8)
    gamma = torch.tensor(0.2)

    def fn(f, n):
        out = gumbel_fps(f, n, lengths, 3, gamma)
        return out.coreset.sum(1), out.indices

    compiled = torch.compile(fn, backend="aot_eager")
    f1, f2 = features.clone().requires_grad_(), features.clone().requires_grad_()
    e_sum, e_idx = fn(f1, norms)
    c_sum, c_idx = compiled(f2, norms)
    assert torch.equal(e_idx, c_idx) and torch.allclose(e_sum, c_sum)
    e_sum.square().sum().backward()
    c_sum.square().sum().backward()
    assert torch.allclose(f1.grad, f2.grad)


def test_half_precision_on_cpu_matches_float32_of_the_same_values():
    features, norms, lengths = random_padded(4, 12, 8, seed=13, dtype=torch.float16)
    out = gumbel_fps(features, norms, lengths, 3)
    ref = gumbel_fps_reference(features.float(), norms.float(), lengths, 3, 0.01, 1.0, False, 0)
    assert out.coreset.dtype == torch.float16 and torch.equal(out.indices, ref[0])


# ----------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda f, n, l: (f, n, torch.tensor([3, 0]), {}), "at least one item"),
        (lambda f, n, l: (f, n, torch.tensor([3, 5]), {}), "N_max=4"),
        (lambda f, n, l: (f, n, torch.tensor([3]), {}), r"lengths of shape \(2,\)"),
        (lambda f, n, l: (f.reshape(8, 3), n.reshape(8), torch.tensor([0, 5, 3, 8]), {}), "strictly increasing"),
        (lambda f, n, l: (f.reshape(8, 3), n.reshape(8), torch.tensor([0, 5, 7]), {}), "from 0 to T=8"),
        (lambda f, n, l: (f.index_put((torch.tensor(0),), torch.tensor(float("nan"))), n, l, {}), "NaN or infinite"),
        (lambda f, n, l: (f, -n, l, {}), "norms must be finite and > 0"),
        (lambda f, n, l: (f, n[:, :3], l, {}), "norms must have shape"),
        (lambda f, n, l: (f, n, l, {"k": 0}), "k must be an int >= 1"),
        (lambda f, n, l: (f, n, l, {"tau": 0.0}), "tau must be a positive float"),
        (lambda f, n, l: (f, n, l.float(), {}), "1-D integer tensor"),
        (lambda f, n, l: (f[0, 0], n, l, {}), "features must be a tensor"),
        (lambda f, n, l: (f, n, l, {"gamma": torch.ones(2)}), "gamma must be one finite number"),
    ],
)
def test_bad_input_raises_clear_errors(mutate, match):
    features, norms = torch.randn(2, 4, 3), torch.rand(2, 4) + 0.5
    f, n, lengths, kwargs = mutate(features, norms, torch.tensor([3, 4]))
    with pytest.raises(ValueError, match=match):
        gumbel_fps(f, n, lengths, **kwargs)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_one_bad_element_in_a_later_set_is_reported(backend, k, bad):
    features, norms, lengths = random_padded(4, 6, 5, seed=3)
    features[2, lengths[2] - 1, 4] = bad  # the last item of set 2, last component
    with use_backend(backend), pytest.raises(ValueError, match="NaN or infinite"):
        gumbel_fps(features, norms, lengths, k)
    if backend == "cpp":  # the kernel confirms a non-finite squared length element by element
        huge = random_padded(4, 6, 5, seed=3)[0] * 1e25  # squares overflow float32, the values are finite
        with use_backend(backend):
            assert gumbel_fps(huge, norms, lengths, k).indices.shape == (4, k)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("packed", [False, True])
def test_backward_kernel_odd_sizes_match_reference_and_zero_padding(backend, packed):
    """Odd D, sets shorter than k, unit probes on weights and coreset: float32 kernel vs float64 autograd."""
    features, norms, lengths = random_padded(6, 13, 37, seed=40)
    lengths[1], lengths[2] = 1, 3
    if packed:
        features, norms, lengths = pack(features, norms, lengths)
    gamma, k, tau, seed = torch.tensor(0.3), 5, 0.9, 19
    g = torch.Generator().manual_seed(1)
    probe_w = torch.randn((k, features.shape[0]) if packed else (6, k, 13), generator=g)
    probe_c = torch.randn(6, k, 37, generator=g)

    def ref(f, n, gm):
        return gumbel_fps_reference(f.double(), n.double(), lengths, k, gm.double(), tau, True, seed)

    def op(f, n, gm):
        with use_backend(backend):
            w, c, idx = _gumbel_fps_op(f, n, lengths, k, gm, tau, True, seed)
            return idx, w, c

    expected = _loss_grads(ref, features, norms, gamma, probe_w.double(), probe_c.double())
    got = _loss_grads(op, features, norms, gamma, probe_w, probe_c)
    for e, a in zip(expected, got, strict=True):
        assert torch.allclose(a.double(), e.double(), rtol=1e-4, atol=1e-4 * e.abs().max().item())
    if not packed:
        pad = torch.arange(13)[None] >= lengths[:, None]
        assert got[0][pad].eq(0).all() and got[1][pad].eq(0).all()


def test_forcing_cuda_on_cpu_tensors_fails_clearly():
    features, norms, lengths = random_padded(2, 4, 3, seed=0)
    with use_backend("cuda"), pytest.raises(RuntimeError, match="backend 'cuda' was forced"):
        gumbel_fps(features, norms, lengths)


# ----------------------------------------------------------------------------------------- CUDA
@pytest.mark.gpu
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("sets,max_len,dim,k", [(1, 1, 3, 3), (33, 50, 512, 8), (4, 300, 100, 3), (7, 5, 64, 9)])
def test_cuda_picks_equal_cpp_and_reference(training, sets, max_len, dim, k):
    features, norms, lengths = random_padded(sets, max_len, dim, seed=sets * max_len)
    with use_backend("cpp"):
        cpu = gumbel_fps(features, norms, lengths, k, 0.3, 1.0, training, torch.Generator().manual_seed(5))
    with use_backend("cuda"):
        gpu = gumbel_fps(
            features.cuda(), norms.cuda(), lengths.cuda(), k, 0.3, 1.0, training, torch.Generator().manual_seed(5)
        )
    ref = gumbel_fps_reference(features.double(), norms.double(), lengths, k, 0.3, 1.0, training, draw_seed(5))
    assert torch.equal(gpu.indices.cpu(), ref[0]) and torch.equal(cpu.indices, ref[0])
    assert torch.equal(gpu.coreset.cpu(), cpu.coreset) and torch.equal(gpu.weights.cpu(), cpu.weights)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "mask_picked,eval_noise,logit_scale,tau", [(False, False, 1.0, 1.0), (False, True, 1e4, 1e-10)]
)
def test_cuda_public_options_pick_like_cpp_and_reference(mask_picked, eval_noise, logit_scale, tau):
    features, norms, lengths = random_padded(17, 30, 64, seed=31)
    options = {"mask_picked": mask_picked, "eval_noise": eval_noise, "logit_scale": logit_scale}
    training = not eval_noise
    with use_backend("cpp"):
        cpu = gumbel_fps(features, norms, lengths, 6, 0.3, tau, training, torch.Generator().manual_seed(5), **options)
    with use_backend("cuda"):
        gpu = gumbel_fps(
            features.cuda(),
            norms.cuda(),
            lengths.cuda(),
            6,
            0.3,
            tau,
            training,
            torch.Generator().manual_seed(5),
            **options,
        )
    ref = gumbel_fps_reference(
        features.double(), norms.double(), lengths, 6, 0.3, tau, True, draw_seed(5), mask_picked, logit_scale
    )
    assert torch.equal(gpu.indices.cpu(), ref[0]) and torch.equal(cpu.indices, ref[0])


@pytest.mark.gpu
@pytest.mark.parametrize("max_len", [5000, 20000])  # past 48 KiB of shared memory; past the opt-in (scratch)
def test_cuda_large_sets_use_bigger_shared_memory_or_scratch(max_len):
    features, norms, lengths = random_padded(3, max_len, 64, seed=1)
    with use_backend("cpp"):
        cpu = gumbel_fps(features, norms, lengths, 6, 0.5, 1.0, True, torch.Generator().manual_seed(2))
    with use_backend("cuda"):
        gpu = gumbel_fps(features.cuda(), norms.cuda(), lengths, 6, 0.5, 1.0, True, torch.Generator().manual_seed(2))
    assert torch.equal(gpu.indices.cpu(), cpu.indices)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_inputs_pick_like_float32_of_the_same_values(dtype):
    features, norms, lengths = random_padded(16, 40, 128, seed=3, dtype=dtype)
    with use_backend("cuda"):
        gpu = gumbel_fps(features.cuda(), norms.cuda(), lengths.cuda(), 5)
    ref = gumbel_fps_reference(features.double(), norms.double(), lengths, 5, 0.01, 1.0, False, 0)
    assert gpu.coreset.dtype == dtype and torch.equal(gpu.indices.cpu(), ref[0])


@pytest.mark.gpu
@pytest.mark.parametrize("packed", [False, True])
def test_cuda_gradients_match_cpu(packed):
    features, norms, lengths = random_padded(6, 20, 32, seed=7)
    if packed:
        features, norms, lengths = pack(features, norms, lengths)
    gamma = torch.tensor(0.4)
    probe_c = torch.randn(6, 4, 32)
    grads = []
    for device, backend in (("cpu", "cpp"), ("cuda", "cuda")):
        f = features.detach().to(device).requires_grad_()
        n = norms.detach().to(device).requires_grad_()
        gm = gamma.detach().to(device).requires_grad_()
        with use_backend(backend):
            out = gumbel_fps(f, n, lengths.to(device), 4, gm, 0.7, True, torch.Generator().manual_seed(9))
        (out.coreset * probe_c.to(device)).sum().backward()
        grads.append([f.grad.cpu(), n.grad.cpu(), gm.grad.cpu()])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
