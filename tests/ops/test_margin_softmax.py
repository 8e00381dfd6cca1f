"""margin_softmax: the chunked CPU path and the op-level reference backend against the materialising
reference (margin logits + F.cross_entropy) in float64, every margin, odd sizes, chunk boundaries,
mixed precision, no (B, C) tensor, opcheck, torch.compile and bad input."""

from __future__ import annotations

import copy
import zlib

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import mrface.ops.chunked.margin_softmax as ms
from mrface.losses import get_margin, margin_softmax_loss
from mrface.ops import use_backend
from mrface.ops.reference.margin_softmax import (
    margin_softmax_bwd_reference,
    margin_softmax_fwd_reference,
    margin_softmax_loss_reference,
    transformed_logits,
)
from mrface.ops.reference.margin_softmax import sample_margin_inputs as make_inputs

# (id, head name, margin kwargs, margin buffers)
MARGINS = [
    ("arcface", "arcface", {}, {}),
    ("arcface_st", "arcface", {"gradient": "straight_through"}, {}),
    ("arcface_easy", "arcface", {"fallback": "easy"}, {}),
    ("cosface", "cosface", {}, {}),
    ("combined", "combined", {}, {}),
    ("curricularface", "curricularface", {}, {"t": 0.3}),
    ("adaface", "adaface", {}, {"batch_mean": 25.0, "batch_std": 10.0}),
    ("magface", "magface", {}, {}),
    ("mag_cosface", "magface", {"kind": "cos", "l_m": 0.35, "lambda_g": 150.0}, {}),
    ("qgface", "qgface", {}, {"batch_mean": 30.0, "batch_std": 8.0}),
]
SHAPES = [(1, 1, 3), (7, 5, 64), (33, 1003, 3), (33, 1003, 512), (1, 5, 512), (7, 1003, 64)]


def make_margin(case):
    _, name, kw, buffers = case
    margin = get_margin(name, **kw)
    for k, v in buffers.items():
        getattr(margin, k).fill_(v)
    return margin


def run(fn, margin, weight, emb, labels, dtype=torch.float32, **kw):
    """Loss and gradients of fn(emb, weight, labels, margin) for inputs cast to ``dtype``."""
    m = copy.deepcopy(margin)
    x = emb.detach().to(dtype).clone().requires_grad_(True)
    w = weight.detach().to(dtype).clone().requires_grad_(True)
    loss = fn(x, w, labels, m, **kw)
    loss.backward()
    return {
        "loss": loss.detach().double(),
        "emb": x.grad.double(),
        "weight": w.grad.double(),
        "buffers": {k: v.double() for k, v in m.named_buffers()},
    }


def truth(margin, weight, emb, labels):
    return run(margin_softmax_loss_reference, copy.deepcopy(margin).double(), weight, emb, labels, dtype=torch.float64)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def assert_matches(got, ref, loss_atol=1e-5, grad_rtol=1e-4):
    assert abs(got["loss"].item() - ref["loss"].item()) <= loss_atol + 1e-5 * abs(ref["loss"].item())
    assert rel_err(got["emb"], ref["emb"]) <= grad_rtol
    assert rel_err(got["weight"], ref["weight"]) <= grad_rtol
    for k, v in ref["buffers"].items():
        torch.testing.assert_close(got["buffers"][k], v, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------- chunked path vs reference
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("case", MARGINS, ids=[c[0] for c in MARGINS])
@pytest.mark.parametrize("backend", ["chunked", "reference"])
def test_every_margin_matches_float64_cross_entropy(case, shape, backend):
    weight, emb, labels = make_inputs(*shape, seed=zlib.crc32(f"{case[0]}{shape}".encode()))
    margin = make_margin(case)
    ref = truth(margin, weight, emb, labels)
    with use_backend(backend):
        got = run(margin_softmax_loss, margin, weight, emb, labels)
    assert_matches(got, ref)
    if shape[1] > 1 and (labels >= 0).any():
        assert got["weight"].abs().sum() > 0 and got["emb"].abs().sum() > 0


def test_curricular_inputs_exercise_hard_negatives_and_fallback():
    """The shared inputs reach CurricularFace's hard branch and ArcFace's theta + m > pi fallback."""
    weight, emb, labels = make_inputs(33, 1003, 64, seed=5)
    w5 = F.normalize(weight[labels[5]], dim=0)
    emb[5] = 30 * F.normalize(-w5 + 0.1 * F.normalize(emb[5], dim=0), dim=0)  # cos_y ~ -0.99: fallback
    margin = make_margin(MARGINS[5])
    cos = F.normalize(emb, dim=1) @ F.normalize(weight, dim=1).T
    rows = copy.deepcopy(margin).double().rows(cos[torch.arange(33), labels.clamp_min(0)], labels >= 0)
    z, _, _ = transformed_logits(
        F.normalize(emb, dim=1), weight, rows.row_scale, rows.hard_threshold, rows.hard_t, rows.cos_lo, rows.cos_hi
    )
    assert int((cos > rows.hard_threshold[:, None]).sum()) > 0
    assert bool((cos[5, labels[5]] < -0.9).item())
    ref = truth(margin, weight, emb, labels)
    with use_backend("chunked"):
        assert_matches(run(margin_softmax_loss, margin, weight, emb, labels), ref)
    assert torch.isfinite(z).all()


@pytest.mark.parametrize("case", [MARGINS[0], MARGINS[5], MARGINS[7], MARGINS[9]], ids=lambda c: c[0])
def test_chunk_boundaries_split_targets(case, monkeypatch):
    """Tiles of 7 columns: targets on the first and last column of a tile, a tile holding only
    targets, and the last partial tile."""
    monkeypatch.setattr(ms, "default_chunk", lambda b, c: 7)
    weight, emb, labels = make_inputs(12, 45, 16, seed=3)
    labels[:] = torch.tensor([0, 6, 7, 13, 14, 44, 42, -1, 20, 21, 22, 27])
    margin = make_margin(case)
    ref = truth(margin, weight, emb, labels)
    with use_backend("chunked"):
        assert_matches(run(margin_softmax_loss, margin, weight, emb, labels), ref)


# --------------------------------------------------------------------------- mixed precision
@pytest.mark.parametrize("dtype, tol", [(torch.float16, 1e-3), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("case", [MARGINS[0], MARGINS[6]], ids=lambda c: c[0])
def test_half_inputs_error_within_reference_error_plus_tolerance(case, dtype, tol):
    """Against the float32-input ground truth, the fused error is at most the error of the
    materialising reference fed the same rounded inputs (GEMM in that dtype) plus ``tol``."""
    weight, emb, labels = make_inputs(33, 1003, 64, seed=11)
    weight, emb = weight.float().double(), emb.float().double()
    margin = make_margin(case)
    ref = truth(margin, weight, emb, labels)

    def same_dtype_reference(x, w, y, m):
        return margin_softmax_loss_reference(x, w, y, m, gemm_dtype=dtype)

    base = run(same_dtype_reference, margin, weight, emb, labels, dtype=dtype)
    with use_backend("chunked"):
        got = run(margin_softmax_loss, margin, weight, emb, labels, dtype=dtype)
    assert abs(got["loss"] - ref["loss"]).item() <= abs(base["loss"] - ref["loss"]).item() + tol
    for key in ("emb", "weight"):
        assert rel_err(got[key], ref[key]) <= rel_err(base[key], ref[key]) + tol


# ------------------------------------------------------------------------------- memory bound
class _LargestOutput(TorchDispatchMode):
    """Records the largest numel of any tensor an aten op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest, self.op = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.numel() > self.largest:
                self.largest, self.op = t.numel(), func
        return out


@pytest.mark.parametrize("case", [MARGINS[0], MARGINS[5], MARGINS[9]], ids=lambda c: c[0])
def test_no_batch_by_classes_tensor_in_forward_or_backward(case, monkeypatch):
    b, c, d = 64, 3000, 16  # C x D (the weight gradient) < B x C / 10
    monkeypatch.setattr(ms, "_CHUNK_ELEMENTS", b * c // 16)
    weight, emb, labels = make_inputs(b, c, d, seed=4)
    x, w = emb.float().requires_grad_(True), weight.float().requires_grad_(True)
    with use_backend("chunked"), _LargestOutput() as mode:
        margin_softmax_loss(x, w, labels, make_margin(case)).backward()
    assert mode.largest <= max(c * d, b * c // 16), (mode.largest, mode.op)
    assert x.grad is not None and w.grad.shape == (c, d)


# ---------------------------------------------------------------------------- op-level checks
def op_inputs(b=6, c=11, d=5, seed=0, hard=True):
    g = torch.Generator().manual_seed(seed)
    e = F.normalize(torch.randn(b, d, generator=g), dim=1)
    w = torch.randn(c, d, generator=g)
    target = torch.randint(0, c, (b,), generator=g)
    target[0] = -1
    scale = torch.rand(b, generator=g) * 30 + 10
    thr = torch.rand(b, generator=g) - 0.5 if hard else torch.full((b,), torch.inf)
    return e, w, target, scale, thr, torch.tensor(0.2), -1 + 1e-3, 1 - 1e-3


@pytest.mark.parametrize("hard", [True, False])
def test_op_backends_match(hard):
    args = op_inputs(hard=hard)
    ref = margin_softmax_fwd_reference(*args)
    with use_backend("chunked"):
        got = torch.ops.mrface.margin_softmax_fwd(*args)
    for a, r in zip(got, ref, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)
    g = torch.Generator().manual_seed(9)
    grads = (torch.rand(6, generator=g), torch.randn(6, generator=g))
    e, w, target, scale, thr, t, lo, hi = args
    bwd_args = (*grads, e, w, target, scale, thr, t, ref[0], lo, hi)
    with use_backend("chunked"):
        got_b = torch.ops.mrface.margin_softmax_bwd(*bwd_args)
    for a, r in zip(got_b, margin_softmax_bwd_reference(*bwd_args), strict=True):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("hard", [True, False])
def test_op_gradients_against_autograd_of_materialised_lse(hard):
    """d(sum(a * lse + b * cos_y)) by the op's backward equals autograd through logsumexp; row 1 has
    a non-target centre parallel to it (cosine 1, cut by the clamp to 1 - 1e-3: no gradient there)."""
    e, w, target, scale, thr, t, lo, hi = op_inputs(seed=3, hard=hard)
    w[(int(target[1]) + 1) % 11] = 2 * e[1]
    e64, w64 = e.double().requires_grad_(True), w.double().requires_grad_(True)
    cos = (e64 @ F.normalize(w64, dim=1).T).clamp(-1, 1)
    c = cos.clamp(lo, hi)
    z = torch.where(c > thr.double()[:, None], c * (t.double() + c), c) * scale.double()[:, None]
    assert bool((cos > hi).any())
    is_t = torch.arange(11)[None, :] == target[:, None]
    lse = torch.logsumexp(z.masked_fill(is_t, -torch.inf), 1)
    cos_y = (cos * is_t).sum(1)
    a, b = torch.rand(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    (a * lse + b * cos_y).sum().backward()
    ef, wf = e.clone().requires_grad_(True), w.clone().requires_grad_(True)
    with use_backend("chunked"):
        lse_f, cos_y_f = torch.ops.mrface.margin_softmax_fwd(ef, wf, target, scale, thr, t, lo, hi)
    (a.float() * lse_f + b.float() * cos_y_f).sum().backward()
    torch.testing.assert_close(lse_f.double(), lse.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ef.grad.double(), e64.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(wf.grad.double(), w64.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", ["chunked", "reference"])
def test_opcheck(backend):
    e, w, target, scale, thr, t, lo, hi = op_inputs()
    e.requires_grad_(True)
    w.requires_grad_(True)
    with use_backend(backend):
        torch.library.opcheck(torch.ops.mrface.margin_softmax_fwd.default, (e, w, target, scale, thr, t, lo, hi))
        lse, _ = torch.ops.mrface.margin_softmax_fwd(e, w, target, scale, thr, t, lo, hi)
        torch.library.opcheck(
            torch.ops.mrface.margin_softmax_bwd.default,
            (torch.rand(6), torch.randn(6), e.detach(), w.detach(), target, scale, thr, t, lse.detach(), lo, hi),
        )


def test_torch_compile_fullgraph():
    e, w, target, scale, thr, t, lo, hi = op_inputs()

    def loss_fn(e, w):
        lse, cos_y = torch.ops.mrface.margin_softmax_fwd(e, w, target, scale, thr, t, lo, hi)
        z = 40.0 * cos_y
        return (torch.logaddexp(lse, z) - z).mean()

    compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")
    e1, w1 = e.clone().requires_grad_(True), w.clone().requires_grad_(True)
    e2, w2 = e.clone().requires_grad_(True), w.clone().requires_grad_(True)
    with use_backend("chunked"):
        eager = loss_fn(e1, w1)
        eager.backward()
        got = compiled(e2, w2)
        got.backward()
    torch.testing.assert_close(got, eager)
    torch.testing.assert_close(e2.grad, e1.grad)
    torch.testing.assert_close(w2.grad, w1.grad)


def test_forcing_an_unavailable_backend_raises():
    args = (torch.randn(4, 8), torch.randn(10, 8), torch.tensor([0, 1, 2, 3]), get_margin("arcface"))
    with use_backend("cuda"), pytest.raises(RuntimeError, match="no CUDA-extension kernel"):
        margin_softmax_loss(*args)
    with use_backend("cpp"), pytest.raises(RuntimeError, match=r"no C\+\+-extension kernel.*chunked"):
        margin_softmax_loss(*args)


# ------------------------------------------------------------------------- thread choice under load
def test_chunked_cpu_threads_follow_the_load_and_the_pin(monkeypatch):
    monkeypatch.delenv("MRFACE_CHUNKED_THREADS", raising=False)
    monkeypatch.setattr(ms.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(ms.os, "getloadavg", lambda: (2.1, 0.0, 0.0))  # only this process's 2 threads
    assert ms.chunked_cpu_threads(2) == 2
    monkeypatch.setattr(ms.os, "getloadavg", lambda: (4.3, 0.0, 0.0))  # two other busy processes
    assert ms.chunked_cpu_threads(2) == 1
    assert ms.chunked_cpu_threads(1) == 1
    monkeypatch.setenv("MRFACE_CHUNKED_THREADS", "3")
    assert ms.chunked_cpu_threads(2) == 3
    monkeypatch.setenv("MRFACE_CHUNKED_THREADS", "two")
    with pytest.raises(ValueError, match="MRFACE_CHUNKED_THREADS"):
        ms.chunked_cpu_threads(2)


def test_single_threaded_tile_loop_restores_threads_and_matches(monkeypatch):
    """Oversubscribed: the loop runs on one thread, gives the same loss and gradients, restores threads."""
    monkeypatch.delenv("MRFACE_CHUNKED_THREADS", raising=False)
    monkeypatch.setattr(ms.os, "cpu_count", lambda: 2)
    seen = []
    real_set = torch.set_num_threads
    monkeypatch.setattr(ms.torch, "set_num_threads", lambda n: (seen.append(n), real_set(n))[1])
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(16, 8, generator=g)
    weight = torch.randn(300, 8, generator=g)
    labels = torch.randint(0, 300, (16,), generator=g)
    margin = get_margin("cosface")
    original = torch.get_num_threads()
    real_set(2)
    results = []
    try:
        for load in (0.0, 100.0):
            monkeypatch.setattr(ms.os, "getloadavg", lambda load=load: (load, 0.0, 0.0))
            e, w = emb.clone().requires_grad_(), weight.clone().requires_grad_()
            loss = margin_softmax_loss(e, w, labels, margin)
            loss.backward()
            assert torch.get_num_threads() == 2
            results.append((loss.detach(), e.grad, w.grad))
    finally:
        real_set(original)
    assert 1 in seen  # the oversubscribed call switched to one thread (and back)
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
