"""margin_softmax_loss, the loss API: reductions, no valid rows, no-grad mode, autocast and bad input
(the backends against the float64 materialising reference: tests/ops/test_margin_softmax*.py)."""

from __future__ import annotations

import pytest
import torch

from mrface.losses import get_margin, margin_softmax_loss
from mrface.ops.reference.margin_softmax import margin_softmax_loss_reference
from mrface.ops.reference.margin_softmax import sample_margin_inputs as make_inputs


def test_no_valid_rows_gives_zero_loss_and_gradients():
    weight, emb, _ = make_inputs(4, 9, 8, seed=0)
    labels = torch.full((4,), -1)
    x, w = emb.float().requires_grad_(True), weight.float().requires_grad_(True)
    loss = margin_softmax_loss(x, w, labels, get_margin("arcface"))
    loss.backward()
    assert loss.item() == 0.0
    assert (x.grad == 0).all() and (w.grad == 0).all()


def test_reductions_and_no_grad_mode():
    weight, emb, labels = make_inputs(7, 20, 8, seed=1)
    margin = get_margin("cosface")
    per_row = margin_softmax_loss(emb.float(), weight.float(), labels, margin, reduction="none")
    assert per_row.shape == (7,) and per_row[1] == 0
    torch.testing.assert_close(
        margin_softmax_loss(emb.float(), weight.float(), labels, margin, reduction="sum"), per_row.sum()
    )
    mean = margin_softmax_loss(emb.float(), weight.float(), labels, margin)
    torch.testing.assert_close(mean, per_row.sum() / 6)
    with torch.no_grad():
        torch.testing.assert_close(margin_softmax_loss(emb.float(), weight.float(), labels, margin), mean)
    ref = margin_softmax_loss_reference(emb, weight, labels, margin.double())
    torch.testing.assert_close(mean.double(), ref, rtol=1e-5, atol=1e-5)


def test_autocast_computes_in_float32():
    weight, emb, labels = make_inputs(7, 20, 8, seed=2)
    margin = get_margin("arcface")
    plain = margin_softmax_loss(emb.float(), weight.float(), labels, margin)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = margin_softmax_loss(emb.float(), weight.float(), labels, margin)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, plain)


# -------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"embeddings": torch.randn(4)}, r"embeddings must be a floating-point \(B, D\)"),
        ({"embeddings": torch.randint(0, 3, (4, 8))}, r"embeddings must be a floating-point"),
        ({"weight": torch.randn(10, 7)}, r"weight must be a floating-point \(C, D=8\)"),
        ({"labels": torch.tensor([0, 1, 2])}, r"labels must be an int64/int32 tensor of shape \(4,\)"),
        ({"labels": torch.tensor([0.0, 1, 2, 3])}, r"labels must be an int64/int32"),
        ({"labels": torch.tensor([0, 1, 2, 10])}, r"labels must be local columns in \[0, 10\) or -1"),
        ({"labels": torch.tensor([0, 1, -2, 3])}, r"labels must be local columns"),
        ({"margin": None}, r"margin must be a mrface.losses.margins.Margin"),
        ({"valid": torch.ones(4)}, r"valid must be a bool tensor of shape \(4,\)"),
        ({"reduction": "avg"}, r"reduction must be"),
    ],
)
def test_bad_inputs(kwargs, match):
    args = {
        "embeddings": torch.randn(4, 8),
        "weight": torch.randn(10, 8),
        "labels": torch.tensor([0, 1, 2, 3]),
        "margin": get_margin("arcface"),
    } | kwargs
    with pytest.raises((ValueError, TypeError), match=match):
        margin_softmax_loss(**args)
