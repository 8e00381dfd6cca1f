"""BTNet distillation, centre loss and DCR coupling against closed forms (REFERENCE.md §2-3)."""

from __future__ import annotations

import copy

import losses_dist_worker as cases
import pytest
import torch
import torch.nn.functional as F

from mrface.losses import BTNetDistillLoss, CentreLoss, DCRLoss, get_head


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


def _centre_update_closed_form(centres, x, y, alpha):
    out = centres.clone()
    for j in y.unique().tolist():
        sel = x[y == j]
        out[j] = centres[j] - alpha * (centres[j] - sel).sum(0) / (1 + sel.shape[0])
    return out


def test_centre_loss_and_update_closed_form(generator):
    centres = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    x = torch.randn(7, 5, generator=generator, dtype=torch.float64)
    y = torch.tensor([0, 3, 3, 5, 0, 3, 1])
    fn = CentreLoss(6, 5, alpha=0.6)
    fn.centres.copy_(centres)
    xf = x.float().requires_grad_(True)
    loss = fn(xf, y)
    assert loss.item() == pytest.approx(((x - centres[y]) ** 2).sum(1).mean().item(), rel=1e-6)
    loss.backward()
    torch.testing.assert_close(xf.grad.double(), 2 * (x - centres[y]) / 7, rtol=1e-5, atol=1e-8)
    fn.update(x.float(), y)
    torch.testing.assert_close(
        fn.centres.double(), _centre_update_closed_form(centres, x, y, 0.6), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match=r"labels must be in \[0, 6\)"):
        fn(x.float(), torch.tensor([0, 1, 2, 3, 4, 5, 6]))
    with pytest.raises(ValueError, match=r"embeddings must be \(B, 5\)"):
        fn(torch.zeros(7, 4), y)


def test_dcr_loss_closed_form(generator):
    c, d, b = 5, 4, 6
    fn = DCRLoss(c, d).train()
    centres = torch.randn(c, d, generator=generator, dtype=torch.float64)
    fn.centre.centres.copy_(centres)
    embs = [torch.randn(b, d, generator=generator, dtype=torch.float64) for _ in range(2)]
    logits = [torch.randn(b, c, generator=generator, dtype=torch.float64) for _ in range(2)]
    hr = torch.randn(b, d, generator=generator, dtype=torch.float64)
    y = torch.randint(0, c, (b,), generator=generator)
    hr_t = hr.float().requires_grad_(True)
    emb_t = [e.float().requires_grad_(True) for e in embs]
    loss, _ = fn(emb_t, [z.float() for z in logits], hr_t, y)

    def ce(z):
        return (torch.logsumexp(z, 1) - z[torch.arange(b), y]).mean()

    expected = sum(ce(z) + 0.008 * ((e - centres[y]) ** 2).sum(1).mean() for e, z in zip(embs, logits, strict=True)) / 2
    expected = expected + 0.008 * sum(((hr - e) ** 2).sum(1).mean() for e in embs)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert hr_t.grad is None  # the trunk's HR embedding is a fixed target
    for e, et in zip(embs, emb_t, strict=True):  # d/de of the centre and coupling terms
        g = 0.008 * 2 * (e - centres[y]) / b / 2 - 0.008 * 2 * (hr - e) / b
        torch.testing.assert_close(et.grad.double(), g, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(
        fn.centre.centres.double(),
        _centre_update_closed_form(centres, torch.cat(embs), y.repeat(2), 0.6),
        rtol=1e-5,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="as many branch_logits"):
        fn(embs[:1], logits, hr, y)


@pytest.mark.distributed
def test_centre_update_two_gloo_ranks_equals_one_process(two_rank_results):
    centres, emb, labels = cases.centre_inputs()
    expected = cases.centre_update(centres, emb, labels)
    torch.testing.assert_close(
        expected.double(), _centre_update_closed_form(centres.double(), emb.double(), labels, 0.6), rtol=1e-5, atol=1e-6
    )
    for res in two_rank_results:
        torch.testing.assert_close(res["centres"], expected)
