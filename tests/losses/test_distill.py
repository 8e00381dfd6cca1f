"""BTNet distillation against closed forms (REFERENCE.md §2)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from mrface.losses import BTNetDistillLoss, get_head


def test_btnet_loss_closed_form_and_frozen_classifier(generator):
    d, c, b = 16, 11, 6
    head = get_head("curricularface", d, c)
    head.margin.t.fill_(0.2)
    frozen = copy.deepcopy(head).eval()
    fn = BTNetDistillLoss(head).train()
    fs = torch.randn(b, 8, 7, 7, generator=generator, dtype=torch.float64)
    ft = torch.randn(b, 8, 7, 7, generator=generator, dtype=torch.float64)
    es = torch.randn(b, d, generator=generator, dtype=torch.float64) * 20
    et = torch.randn(b, d, generator=generator, dtype=torch.float64) * 20
    labels = torch.randint(0, c, (b,), generator=generator)
    xs, xe = fs.float().requires_grad_(True), es.float().requires_grad_(True)
    tf, te = ft.float().requires_grad_(True), et.float().requires_grad_(True)
    loss, logs = fn(xs, tf, xe, te, labels)
    loss.backward()

    e = es.float()
    cos = F.normalize(e, dim=1) @ F.normalize(frozen.weight.detach(), dim=1).T
    # BTNet's frozen head runs in train mode: t <- 0.99 t + 0.01 mean(cos_y), updated before use
    t_new = 0.99 * 0.2 + 0.01 * cos[torch.arange(b), labels].mean().item()
    frozen.margin.t.fill_(t_new)
    ce = F.cross_entropy(frozen.margin(cos, labels), labels).double()
    expected = ce + 0.5 * ((fs - ft) ** 2).mean() + 0.5 * ((es - et) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(xs.grad.double(), 0.5 * 2 * (fs - ft) / fs.numel(), rtol=1e-5, atol=1e-9)
    assert tf.grad is None and te.grad is None
    assert head.weight.grad is None and not head.weight.requires_grad
    assert head.margin.t.item() == pytest.approx(t_new, abs=1e-7)  # the margin state keeps updating
    still = BTNetDistillLoss(copy.deepcopy(frozen), update_margin_state=False).train()
    still(xs.detach(), tf.detach(), xe.detach(), te.detach(), labels)
    assert still.classifier.margin.t.item() == pytest.approx(t_new, abs=1e-7)  # option: frozen state
    assert logs["distill/feature_mse"].item() == pytest.approx(((fs - ft) ** 2).mean().item(), rel=1e-5)


def test_btnet_bad_shapes():
    fn = BTNetDistillLoss(get_head("arcface", 4, 3))
    with pytest.raises(ValueError, match="student_feature and teacher_feature"):
        fn(
            torch.zeros(2, 3, 7, 7),
            torch.zeros(2, 3, 14, 14),
            torch.zeros(2, 4),
            torch.zeros(2, 4),
            torch.zeros(2, dtype=torch.long),
        )
