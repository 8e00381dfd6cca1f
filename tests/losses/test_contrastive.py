"""QGFace contrastive term with the proxy-corrected queue against a float64 closed form."""

from __future__ import annotations

import pytest
import torch

from mrface.losses import QGFaceContrastive


def _unit(x):
    return x / x.norm(dim=1, keepdim=True)


def test_contrastive_closed_form_and_enqueue(generator):
    d, q_size, tau = 4, 6, 0.1
    centres_now = torch.randn(10, d, generator=generator, dtype=torch.float64)
    fn = QGFaceContrastive(d, queue_size=q_size, temperature=tau).train()
    entries = _unit(torch.randn(q_size, d, generator=generator, dtype=torch.float64))
    qlabels = torch.tensor([-1, 2, 5, 7, 2, 9])
    then = _unit(centres_now[qlabels.clamp_min(0)].clone())
    then[3] = _unit(torch.randn(1, d, generator=generator, dtype=torch.float64))[0]  # drifted
    then[5] = _unit(torch.randn(1, d, generator=generator, dtype=torch.float64))[0]  # drifted
    fn.queue.copy_(entries)
    fn.queue_labels.copy_(qlabels)
    fn.queue_centres.copy_(then)
    fn.ptr.fill_(5)

    lq = torch.randn(3, d, generator=generator, dtype=torch.float64)
    hq = torch.randn(3, d, generator=generator, dtype=torch.float64)
    labels = torch.tensor([2, 5, -1])
    lq_t, hq_t = lq.float().requires_grad_(True), hq.float().requires_grad_(True)
    loss, logs = fn(lq_t, hq_t, labels, lambda ids: centres_now[ids.clamp_min(0)].float())

    corrected = _unit(entries + _unit(centres_now[qlabels.clamp_min(0)]) - then)
    torch.testing.assert_close(corrected[1], entries[1])  # no drift: entry unchanged
    q, k = _unit(lq), _unit(hq)
    per_row = []
    for i in range(2):  # row 2 is ignored
        negs = [j for j in range(q_size) if qlabels[j] >= 0 and qlabels[j] != labels[i]]
        logits = torch.cat([(q[i] @ k[i])[None], q[i] @ corrected[negs].T]) / tau
        per_row.append(torch.logsumexp(logits, 0) - logits[0])
    expected = torch.stack(per_row).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)

    loss.backward()
    assert hq_t.grad is None and lq_t.grad.abs().sum() > 0
    assert lq_t.grad[2].abs().sum() == 0

    # Enqueued at 5, 0, 1 (wrap-around): unit keys, labels and unit centres at enqueue time.
    torch.testing.assert_close(fn.queue[[5, 0, 1]].double(), k, rtol=1e-6, atol=1e-6)
    assert fn.queue_labels[[5, 0, 1]].tolist() == [2, 5, -1]
    torch.testing.assert_close(fn.queue_centres[[5, 0]].double(), _unit(centres_now[[2, 5]]),
                               rtol=1e-6, atol=1e-6)
    assert fn.ptr.item() == 2
    assert fn.queue_labels[[2, 3, 4]].tolist() == [5, 7, 2]


def test_contrastive_eval_does_not_enqueue_and_bad_shapes():
    fn = QGFaceContrastive(4, queue_size=8).eval()
    fn(torch.randn(2, 4), torch.randn(2, 4), torch.tensor([0, 1]), lambda ids: torch.zeros(
        ids.shape[0], 4))
    assert (fn.queue_labels == -1).all() and fn.ptr.item() == 0
    with pytest.raises(ValueError, match=r"lq and hq must both be \(B, 4\)"):
        fn(torch.randn(2, 4), torch.randn(3, 4), torch.tensor([0, 1]), lambda ids: None)
    with pytest.raises(ValueError, match="temperature"):
        QGFaceContrastive(4, temperature=0.0)
