"""QGFace contrastive head against the public formulas (IsidoreSong/QGFace head.py QGFace.forward and
framework.py _dequeue_and_enqueue), written out here in float64 on a hand-built batch and queue."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mrface.losses import QGFaceContrastive

S, THR = 8.0, 0.5


def _unit(x):
    return x / x.norm(dim=1, keepdim=True)


def _public_loss(q, k, zq, zk, labels, queue_e, queue_w, queue_y, proxies, own_only=False):
    """The public step in float64: prepend [k; q] with their proxies, proxy-correct, both directions,
    same-class cosines set to 0, sgn gate on min quality, NLL of column 0, log(129)/log(K+1) rescale."""
    keys = torch.cat([_unit(k), _unit(q)]).detach()
    key_y = torch.cat([labels, labels])
    e = torch.cat([keys, queue_e])
    w_then = torch.cat([proxies[key_y], queue_w])
    y = torch.cat([key_y, queue_y])
    corrected = e + e.norm(dim=1, keepdim=True) / w_then.norm(dim=1, keepdim=True) * (proxies[y] - w_then)
    qn, kn = _unit(q), _unit(k)
    pos = torch.cat([(qn * kn).sum(1), (kn * qn).sum(1)])[:, None]
    neg = torch.cat([qn @ corrected.T, kn @ corrected.T])
    cosine = torch.cat([pos, neg], 1).clamp(-1, 1)
    mask = torch.cat([labels[:, None] == y[None, :]] * 2)
    if own_only:  # each anchor's own two copies (this step's k_i at i, q_i at B + i) only
        b = labels.shape[0]
        own = torch.zeros(b, y.shape[0], dtype=torch.bool)
        own[torch.arange(b), torch.arange(b)] = True
        own[torch.arange(b), b + torch.arange(b)] = True
        mask = torch.cat([own] * 2)
    cosine = torch.where(torch.cat([torch.zeros(mask.shape[0], 1, dtype=torch.bool), mask], 1), 0.0, cosine)
    t = torch.minimum((zq + 1) / 2, (zk + 1) / 2)
    gate = torch.cat([torch.where(t < THR, 1.0, 0.0)] * 2)
    logits = cosine * S * gate[:, None]
    loss = F.nll_loss(F.log_softmax(logits, 1), torch.zeros(logits.shape[0], dtype=torch.long))
    return loss * math.log(129) / math.log(cosine.shape[1]), corrected


def test_contrastive_matches_the_public_formulas_on_a_tiny_batch(generator):
    d, q_size = 3, 8
    proxies = torch.randn(5, d, generator=generator, dtype=torch.float64) * 3
    old_e = _unit(torch.randn(3, d, generator=generator, dtype=torch.float64))
    old_y = torch.tensor([1, 4, 0])
    old_w = proxies[old_y] + torch.randn(3, d, generator=generator, dtype=torch.float64)  # the proxies moved since
    fn = QGFaceContrastive(d, queue_size=q_size, s=S, threshold=THR).double().train()
    fn.queue[:3], fn.queue_labels[:3], fn.queue_proxies[:3] = old_e, old_y, old_w  # 3 entries of past steps
    fn.fill.fill_(3)

    q = torch.randn(2, d, generator=generator, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, d, generator=generator, dtype=torch.float64, requires_grad=True)
    zq, zk = torch.tensor([-0.6, 0.9], dtype=torch.float64), torch.tensor([0.2, 0.5], dtype=torch.float64)
    labels = torch.tensor([1, 3])  # row 0: low quality (gate 1), a same-class entry in the old queue
    loss, logs = fn(q, k, zq, zk, labels, lambda ids: proxies[ids.clamp_min(0)])

    q2, k2 = q.detach().clone().requires_grad_(True), k.detach().clone().requires_grad_(True)
    expected, corrected = _public_loss(q2, k2, zq, zk, labels, old_e, old_w, old_y, proxies)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10)
    assert logs["qgface/pair_gate"].item() == 0.5 and int(fn.fill) == 7
    loss.backward()
    expected.backward()
    torch.testing.assert_close(q.grad, q2.grad)
    torch.testing.assert_close(k.grad, k2.grad)
    assert k.grad[0].abs().sum() > 0 and q.grad[1].abs().sum() == 0  # both views train; gated-off pair does not
    # The queue now holds [k; q] of this step in front of the old entries.
    torch.testing.assert_close(fn.queue[:4], torch.cat([_unit(k), _unit(q)]).detach())
    assert fn.queue_labels[:7].tolist() == [1, 3, 1, 3, 1, 4, 0]


def test_without_same_class_masking_only_the_own_copies_are_zeroed(generator):
    d = 3
    proxies = torch.randn(4, d, generator=generator, dtype=torch.float64) + 2
    old_e = _unit(torch.randn(2, d, generator=generator, dtype=torch.float64))
    old_y, old_w = torch.tensor([1, 1]), proxies[[1, 1]].clone()
    fn = QGFaceContrastive(d, queue_size=8, s=S, threshold=THR, mask_same_class=False).double().train()
    fn.queue[:2], fn.queue_labels[:2], fn.queue_proxies[:2] = old_e, old_y, old_w
    fn.fill.fill_(2)
    q = torch.randn(2, d, generator=generator, dtype=torch.float64)
    k = torch.randn(2, d, generator=generator, dtype=torch.float64)
    z = torch.tensor([-0.5, -0.5], dtype=torch.float64)  # both pairs under the threshold
    labels = torch.tensor([1, 1])  # same class as each other and as the old entries: none of those is zeroed
    loss, _ = fn(q, k, z, z, labels, lambda ids: proxies[ids.clamp_min(0)])
    expected, _ = _public_loss(q, k, z, z, labels, old_e, old_w, old_y, proxies, own_only=True)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10)


def test_drift_correction_on_a_hand_made_centre_move():
    fn = QGFaceContrastive(2, queue_size=4, drift="proxy")
    fn.enqueue(torch.tensor([[1.0, 0.0]]), torch.tensor([2]), torch.tensor([[2.0, 0.0]]))
    # e = (1, 0) stored with w = (2, 0); the class centre moved to (2, 2): e + |e|/|w| (w_now - w) = (1, 1)
    out = fn.corrected_queue(torch.tensor([[2.0, 2.0]]))
    torch.testing.assert_close(out, torch.tensor([[1.0, 1.0]]))  # not renormalised
    fn.drift = "none"
    torch.testing.assert_close(fn.corrected_queue(torch.tensor([[2.0, 2.0]])), torch.tensor([[1.0, 0.0]]))


def test_queue_wraps_around_keeping_the_newest_entries_in_front():
    fn = QGFaceContrastive(2, queue_size=5)
    for step in range(3):  # blocks of 2: labels 10,11 then 20,21 then 30,31
        ids = torch.tensor([10 * (step + 1), 10 * (step + 1) + 1])
        fn.enqueue(torch.randn(2, 2), ids, torch.ones(2, 2))
    # the public cat([new, old])[:size]: the oldest block keeps its first entry
    assert fn.queue_labels.tolist() == [30, 31, 20, 21, 10] and int(fn.fill) == 5
    torch.testing.assert_close(fn.queue.norm(dim=1), torch.ones(5))
    state = {k: v.clone() for k, v in fn.state_dict().items()}
    again = QGFaceContrastive(2, queue_size=5)
    again.load_state_dict(state)
    assert again.queue_labels.tolist() == [30, 31, 20, 21, 10] and int(again.fill) == 5


def test_gates_rescale_and_errors():
    fn = QGFaceContrastive(2, queue_size=4, s=4.0, threshold=0.0).eval()
    z = torch.tensor([1.0, 1.0])
    torch.testing.assert_close(fn.pair_gate(z, z), torch.ones(2))  # threshold 0: no gate
    fn.threshold, fn.gate = 0.5, "linear"
    torch.testing.assert_close(
        fn.pair_gate(torch.tensor([-0.5]), torch.tensor([0.0])), torch.tensor([0.25 / (0.5 + 1e-3)])
    )  # t = min(0.25, 0.5) below 0.5
    with pytest.raises(RuntimeError, match="queue is empty"):
        fn(torch.randn(2, 2), torch.randn(2, 2), z, z, torch.tensor([0, 1]), lambda ids: torch.ones(ids.shape[0], 2))
    with pytest.raises(ValueError, match=r"q and k must both be \(B, 2\)"):
        fn(torch.randn(2, 2), torch.randn(3, 2), z, z, torch.tensor([0, 1]), lambda ids: None)
    with pytest.raises(ValueError, match="gate must be one of"):
        QGFaceContrastive(2, gate="step")
    # Rescale: a gated-off batch gives log(K+1) per row before the factor, log(129) after it.
    fn = QGFaceContrastive(2, queue_size=16, threshold=0.5).train()
    loss, _ = fn(torch.randn(2, 2), torch.randn(2, 2), z, z, torch.tensor([0, 1]), lambda i: torch.ones(i.shape[0], 2))
    assert loss.item() == pytest.approx(math.log(129), rel=1e-6)
