"""margin_softmax Triton kernels: under TRITON_INTERPRET=1 on CPU (tiny shapes, float32/float16) and
compiled on a CUDA device (marker gpu), against the float64 materialising reference.

The half-precision / TF32 re-test of issue 5 on a GPU:
``MRFACE_MARGIN_TRITON_HALF=1 pytest -m gpu tests/ops/test_margin_softmax_triton.py``."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import mrface.ops.margin_softmax as ms
from mrface.losses import get_head, margin_softmax_loss
from mrface.ops import use_backend
from mrface.ops.reference.margin_softmax import (
    margin_softmax_bwd_reference,
    margin_softmax_fwd_reference,
    margin_softmax_loss_reference,
)

sys.path.insert(0, str(Path(__file__).parent))
from test_margin_softmax import MARGINS, assert_matches, make_inputs, make_margin, op_inputs, rel_err, run, truth  # noqa: E402, I001

if importlib.util.find_spec("triton") is None:
    pytest.skip("needs the triton package", allow_module_level=True)

import mrface.kernels.margin_softmax as tk  # noqa: E402

INTERP_MARGINS = [MARGINS[0], MARGINS[1], MARGINS[5], MARGINS[6], MARGINS[7], MARGINS[9]]
INTERP_SHAPES = [(1, 1, 3), (7, 45, 20), (17, 5, 33)]


# ------------------------------------------------------------------------------ interpreter
@pytest.mark.triton_interpreter
@pytest.mark.parametrize("shape", INTERP_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("case", INTERP_MARGINS, ids=[c[0] for c in INTERP_MARGINS])
def test_interpreter_loss_and_gradients_match_float64(case, shape):
    weight, emb, labels = make_inputs(*shape, seed=shape[1])
    margin = make_margin(case)
    ref = truth(margin, weight, emb, labels)
    with use_backend("triton"):
        got = run(margin_softmax_loss, margin, weight, emb, labels)
    assert_matches(got, ref)


@pytest.mark.triton_interpreter
@pytest.mark.parametrize("hard", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_interpreter_ops_match_reference_backend(hard, dtype):
    e, w, target, scale, thr, t, lo, hi = op_inputs(b=19, c=45, d=37, seed=2, hard=hard)
    w = w.to(dtype)
    args = (e.to(dtype).float(), w, target, scale, thr, t, lo, hi)  # emb_hat exact in dtype
    with use_backend("triton"):
        lse, cos_y = torch.ops.mrface.margin_softmax_fwd(*args)
    ref_lse, ref_cos_y = margin_softmax_fwd_reference(*args)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cos_y, ref_cos_y, rtol=1e-5, atol=1e-6)
    g = torch.Generator().manual_seed(4)
    bwd = (torch.rand(19, generator=g), torch.randn(19, generator=g), *args[:6], ref_lse, lo, hi)
    with use_backend("triton"):
        d_e, d_w = torch.ops.mrface.margin_softmax_bwd(*bwd)
    ref_e, ref_w = margin_softmax_bwd_reference(*bwd)
    tol = 1e-5 if dtype == torch.float32 else 2e-3  # float16: G is rounded to float16 for the GEMMs
    assert rel_err(d_e, ref_e) <= tol and rel_err(d_w, ref_w) <= tol


@pytest.mark.triton_interpreter
@pytest.mark.parametrize("case", [MARGINS[0], MARGINS[6]], ids=lambda c: c[0])
def test_interpreter_float16_error_within_reference_error(case):
    weight, emb, labels = make_inputs(9, 40, 24, seed=7)
    weight, emb = weight.float().double(), emb.float().double()
    margin = make_margin(case)
    ref = truth(margin, weight, emb, labels)

    def same_dtype_reference(x, w, y, m):
        return margin_softmax_loss_reference(x, w, y, m, gemm_dtype=torch.float16)

    base = run(same_dtype_reference, margin, weight, emb, labels, dtype=torch.float16)
    with use_backend("triton"):
        got = run(margin_softmax_loss, margin, weight, emb, labels, dtype=torch.float16)
    assert abs(got["loss"] - ref["loss"]).item() <= abs(base["loss"] - ref["loss"]).item() + 1e-3
    for key in ("emb", "weight"):
        assert rel_err(got[key], ref[key]) <= rel_err(base[key], ref[key]) + 1e-3


def _op_case(b, c, d, dtype, hard, seed=2, grad_factor=1.0):
    """Forward/backward op arguments with emb_hat exact in ``dtype`` and the float32 reference results."""
    e, w, target, scale, thr, t, lo, hi = op_inputs(b=b, c=c, d=d, seed=seed, hard=hard)
    w = w.to(dtype)
    args = (e.to(dtype).float(), w, target, scale, thr, t, lo, hi)
    ref_lse, ref_cos_y = margin_softmax_fwd_reference(*args)
    g = torch.Generator().manual_seed(4)
    grads = (torch.rand(b, generator=g) * grad_factor, torch.randn(b, generator=g) * grad_factor)
    bwd = (*grads, *args[:6], ref_lse, lo, hi)
    return args, (ref_lse, ref_cos_y), bwd, margin_softmax_bwd_reference(*bwd)


@pytest.mark.triton_interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("config", tk._CONFIGS, ids=lambda c: "x".join(map(str, c.kwargs.values())))
def test_interpreter_each_autotune_config_matches_reference(config, dtype, monkeypatch):
    """The GPU's autotune configurations (not run by the interpreter otherwise), each forced in turn:
    several row blocks, a partial last one, C not a multiple of BLOCK_C, D not a multiple of BLOCK_D."""
    monkeypatch.setattr(tk, "_FORCED_CONFIG", config)
    args, (ref_lse, ref_cos_y), bwd, (ref_e, ref_w) = _op_case(133, 203, 80, dtype, hard=True)
    with use_backend("triton"):
        lse, cos_y = torch.ops.mrface.margin_softmax_fwd(*args)
        d_e, d_w = torch.ops.mrface.margin_softmax_bwd(*bwd)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cos_y, ref_cos_y, rtol=1e-5, atol=1e-6)
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    assert rel_err(d_e, ref_e) <= tol and rel_err(d_w, ref_w) <= tol


@pytest.mark.triton_interpreter
@pytest.mark.parametrize("factor", [1e-7, 1e-5, 1e5], ids=lambda f: f"x{f:g}")
def test_interpreter_float16_backward_accuracy_does_not_depend_on_gradient_scale(factor):
    """Regression (issue 5): the float16 GEMM operands G / ||w|| and G were plain casts of float32 G, so
    small incoming gradients (a 1/B mean, s = 64 and 10^4 classes put 97% of G below float16's normal
    range) lost their precision or vanished, and large ones (a loss scaler) overflowed to inf. The op
    is linear in (grad_lse, grad_cos_y): its relative error must not depend on their scale."""
    for hard in (True, False):
        _, _, bwd, (ref_e, ref_w) = _op_case(19, 45, 37, torch.float16, hard, grad_factor=factor)
        with use_backend("triton"):
            d_e, d_w = torch.ops.mrface.margin_softmax_bwd(*bwd)
        assert rel_err(d_e, ref_e) <= 2e-3 and rel_err(d_w, ref_w) <= 2e-3


@pytest.mark.triton_interpreter
@pytest.mark.parametrize("stages", [1, None], ids=["not_pipelined", "pipelined"])
def test_interpreter_float16_backward_over_several_d_slices_and_row_blocks(stages, monkeypatch):
    """The loop structure of the failing GPU case (257 x 10007 x 512: 5 row blocks, the last with one row;
    8 D slices; many class tiles per split), scaled to the interpreter: 3 row blocks (last one row),
    5 D slices, 7 class tiles. The backward's inner-loop pipelining (BWD_INNER_STAGES) is a compiler
    schedule: both settings must give the same, correct numbers here; on a GPU only the not-pipelined
    one is trusted (benchmarks/check_margin_half.py compares both)."""
    monkeypatch.setattr(tk, "BWD_INNER_STAGES", stages)
    args, (ref_lse, _), bwd, (ref_e, ref_w) = _op_case(
        33, 103, 80, torch.float16, hard=False, seed=5, grad_factor=1 / 33
    )
    with use_backend("triton"):
        lse, _ = torch.ops.mrface.margin_softmax_fwd(*args)
        d_e, d_w = torch.ops.mrface.margin_softmax_bwd(*bwd)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-5, atol=1e-5)
    assert rel_err(d_e, ref_e) <= 2e-3 and rel_err(d_w, ref_w) <= 2e-3


@pytest.fixture
def restore_tf32():
    """Put ``torch.backends.cuda.matmul.allow_tf32`` back after the test. monkeypatch cannot: the flag is
    a class property, so its undo deletes the attribute from the instance and fails."""
    saved = torch.backends.cuda.matmul.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32 = saved


def test_tensor_core_gate_and_env_override(monkeypatch, restore_tf32):
    """Half-precision CUDA weights go to the chunked path and float32 keeps IEEE dots even with TF32
    allowed, unless MRFACE_MARGIN_TRITON_HALF=1 (no GPU needed: routing only)."""
    cuda = torch.device("cuda")
    monkeypatch.delenv(ms.TENSOR_CORE_ENV, raising=False)
    torch.backends.cuda.matmul.allow_tf32 = True
    w16, w32 = torch.zeros(2, 2, dtype=torch.float16), torch.zeros(2, 2)
    assert ms._pick_backend(cuda, torch.float16) == "chunked" == ms._pick_backend(cuda, torch.bfloat16)
    assert ms._pick_backend(cuda, torch.float32) == "triton"
    assert ms._triton_precision(w32.dtype) == "ieee" and tk._rescale(w16) and not tk._rescale(w32)
    with use_backend("triton"), pytest.raises(RuntimeError, match="half precision failed"):
        ms._pick_backend(cuda, torch.float16)
    monkeypatch.setenv(ms.TENSOR_CORE_ENV, "1")
    assert ms._pick_backend(cuda, torch.float16) == "triton" == ms._pick_backend(cuda, torch.bfloat16)
    assert ms._triton_precision(w32.dtype) == "tf32"
    with use_backend("triton"):
        assert ms._pick_backend(cuda, torch.bfloat16) == "triton"


def test_lifting_the_gate_is_one_default_and_the_env_overrides_it(monkeypatch, restore_tf32):
    """TENSOR_CORES_DEFAULT = True (the one-line lift once a GPU run confirms the fix) routes half precision
    to Triton; MRFACE_MARGIN_TRITON_HALF=0 still keeps it on the chunked path."""
    cuda = torch.device("cuda")
    monkeypatch.delenv(ms.TENSOR_CORE_ENV, raising=False)
    monkeypatch.setattr(ms, "TENSOR_CORES_DEFAULT", True)
    assert ms._pick_backend(cuda, torch.float16) == "triton" == ms._pick_backend(cuda, torch.bfloat16)
    monkeypatch.setenv(ms.TENSOR_CORE_ENV, "0")
    assert ms._pick_backend(cuda, torch.float16) == "chunked" == ms._pick_backend(cuda, torch.bfloat16)
    torch.backends.cuda.matmul.allow_tf32 = True
    assert ms._triton_precision(torch.float32) == "ieee"


# ------------------------------------------------------------------------------------- GPU
GPU_TOL = {torch.float32: 5e-4, torch.float16: 1e-3, torch.bfloat16: 1e-2}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", list(GPU_TOL), ids=str)
@pytest.mark.parametrize("shape", [(1, 1, 3), (33, 1003, 64), (257, 10007, 512)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("case", MARGINS, ids=[c[0] for c in MARGINS])
def test_gpu_error_within_reference_error_plus_tolerance(case, shape, dtype):
    """Compiled Triton kernels: against the float64 ground truth (from the float32 inputs), the
    fused error is at most the materialising reference's error in the same dtype plus the
    tolerance of issue 5 (5e-4 float32, 1e-3 float16, 1e-2 bfloat16)."""
    weight, emb, labels = make_inputs(*shape, seed=shape[1])
    weight, emb = weight.float().double().cuda(), emb.float().double().cuda()
    labels = labels.cuda()
    margin = make_margin(case).cuda()
    ref = truth(margin, weight, emb, labels)

    def same_dtype_reference(x, w, y, m):
        return margin_softmax_loss_reference(x, w, y, m, gemm_dtype=None if dtype == torch.float32 else dtype)

    base = run(same_dtype_reference, margin, weight, emb, labels, dtype=dtype)
    # float32 runs the compiled Triton kernels; half precision too with MRFACE_MARGIN_TRITON_HALF=1 (the
    # re-test of issue 5), else the default CUDA path (chunked), see _TRITON_GPU_DTYPES.
    with use_backend("triton" if dtype in ms._triton_gpu_dtypes() else None):
        got = run(margin_softmax_loss, margin, weight, emb, labels, dtype=dtype)
    tol = GPU_TOL[dtype]
    assert abs(got["loss"] - ref["loss"]).item() <= abs(base["loss"] - ref["loss"]).item() + tol
    for key in ("emb", "weight"):
        assert rel_err(got[key], ref[key]) <= rel_err(base[key], ref[key]) + tol, key
    for k, v in ref["buffers"].items():
        torch.testing.assert_close(got["buffers"][k], v, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, "tf32"], ids=str)
@pytest.mark.parametrize("config", tk._CONFIGS, ids=lambda c: "x".join(map(str, c.kwargs.values())))
def test_gpu_tensor_core_paths_each_config(config, dtype, monkeypatch, restore_tf32):
    """The compiled tensor-core paths (float16/bfloat16 operands, TF32 for float32) with each autotune
    configuration forced, at the shape where the float16 backward failed (issue 5), against the float32
    reference on the same rounded inputs. Needs MRFACE_MARGIN_TRITON_HALF=1 (the gate it re-tests)."""
    if not ms.triton_tensor_cores_enabled():
        pytest.skip(f"{ms.TENSOR_CORE_ENV}=1 runs the tensor-core re-test")
    monkeypatch.setattr(tk, "_FORCED_CONFIG", config)
    torch.backends.cuda.matmul.allow_tf32 = False  # the references stay IEEE
    w_dtype = torch.float32 if dtype == "tf32" else dtype
    e, w, target, scale, thr, t, lo, hi = op_inputs(b=257, c=10007, d=512, seed=1, hard=True)
    args = [
        a.cuda() if isinstance(a, torch.Tensor) else a
        for a in (e.to(w_dtype).float(), (w * 0.05).to(w_dtype), target, scale * 2, thr, t, lo, hi)
    ]
    g = torch.Generator(device="cuda").manual_seed(4)
    grads = (torch.rand(257, generator=g, device="cuda") / 257, torch.randn(257, generator=g, device="cuda") / 4)
    ref_lse, ref_cos_y = margin_softmax_fwd_reference(*args)
    bwd = (*grads, *args[:6], ref_lse, lo, hi)
    ref_e, ref_w = margin_softmax_bwd_reference(*bwd)
    torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
    with use_backend("triton"):
        lse, cos_y = torch.ops.mrface.margin_softmax_fwd(*args)
        d_e, d_w = torch.ops.mrface.margin_softmax_bwd(*bwd)
    torch.backends.cuda.matmul.allow_tf32 = False
    stats_atol, grad_tol = {torch.float16: (1e-3, 2e-3), torch.bfloat16: (1e-3, 1e-2), "tf32": (1e-2, 1e-2)}[dtype]
    torch.testing.assert_close(lse, ref_lse, rtol=1e-4, atol=stats_atol)
    torch.testing.assert_close(cos_y, ref_cos_y, rtol=1e-3, atol=stats_atol)
    errors = rel_err(d_e, ref_e), rel_err(d_w, ref_w)
    assert max(errors) <= grad_tol, errors


@pytest.mark.gpu
@pytest.mark.parametrize("hard", [True, False])
def test_gpu_ops_match_reference_backend(hard):
    args = [a.cuda() if isinstance(a, torch.Tensor) else a for a in op_inputs(b=300, c=5000, d=512, seed=1, hard=hard)]
    with use_backend("triton"):
        lse, cos_y = torch.ops.mrface.margin_softmax_fwd(*args)
    ref_lse, ref_cos_y = margin_softmax_fwd_reference(*args)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(cos_y, ref_cos_y, rtol=1e-5, atol=1e-5)
    g = torch.Generator(device="cuda").manual_seed(4)
    bwd = (
        torch.rand(300, generator=g, device="cuda"),
        torch.randn(300, generator=g, device="cuda"),
        *args[:6],
        ref_lse,
        args[6],
        args[7],
    )
    with use_backend("triton"):
        d_e, d_w = torch.ops.mrface.margin_softmax_bwd(*bwd)
    ref_e, ref_w = margin_softmax_bwd_reference(*bwd)
    assert rel_err(d_e, ref_e) <= 1e-4 and rel_err(d_w, ref_w) <= 1e-4


@pytest.mark.gpu
def test_gpu_partial_fc_default_is_fused_triton_and_matches_unfused():
    torch.manual_seed(0)
    fused = get_head("curricularface", 512, 20011).cuda()
    plain = copy.deepcopy(fused)
    plain.fused = False
    emb = torch.randn(512, 512, device="cuda") * 20
    labels = torch.randint(0, 20011, (512,), device="cuda")
    labels[::7] = -1
    results = []
    for head in (fused, plain):
        x = emb.clone().requires_grad_(True)
        loss, _ = head(x, labels)
        loss.backward()
        results.append((loss.detach(), x.grad, head.weight.grad))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    assert rel_err(results[0][1], results[1][1]) <= 1e-4
    assert rel_err(results[0][2], results[1][2]) <= 1e-4
    from mrface.ops.margin_softmax import _pick_backend

    assert _pick_backend(emb.device) == "triton"
