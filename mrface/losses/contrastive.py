"""QGFace's contrastive term (IsidoreSong/QGFace ``head.py`` ``QGFace``, ``framework.py``
``FaceModel._dequeue_and_enqueue``): degraded views against their clean view, negatives from a queue of
recent embeddings moved by the drift of their class proxy.

Per step, with q (B, D) the degraded views, k (B, D) the clean views and their AdaFace normalised norms
z_q, z_k (the identity head's ``margin_scaler``), in training mode:

1. **Enqueue first.** The unit embeddings of the global batch, ``[k of every rank; q of every rank]``
   (2·B·W rows), their labels and their class proxies (raw, un-normalised classifier rows) are put at
   the front of the queue; the oldest entries beyond ``queue_size`` fall off. The queue therefore holds
   this step's own embeddings (detached) when the loss is computed.
2. **Proxy correction** of every entry e stored with proxy w_then: ``e + ‖e‖ / ‖w_then‖ · (w_now − w_then)``
   (not renormalised; the cosines are clamped to [−1, 1] afterwards).
3. **Cosines**, both directions (public ``pair_coupling="D2N"``): rows ``[q; k]`` (2B), column 0 the
   positive ``q·k`` / ``k·q`` (both views trainable), columns 1..K the K filled queue entries.
4. **Same-class entries** (the anchor's label, its own copies included) get cosine 0 (public
   ``mask_same_class=True``): they stay in the softmax with logit 0.
5. **Pair quality gate** from ``t = min((z_q + 1)/2, (z_k + 1)/2)``: ``sgn`` gives 1 where t < threshold and 0
   elsewhere (threshold 0: always 1), so only low-quality pairs train; a row with gate 0 has all logits 0
   (loss log(K+1), no gradient) and still counts in the mean.
6. **Loss** ``NLL(log_softmax(cos · s · gate), 0)`` averaged over the 2B rows, then multiplied by
   ``log(129) / log(K + 1)`` (public ``rescale``).

Distributed (public ``sync_GPU``): every rank enqueues the whole global batch, so the queues are equal on
every rank; each rank's loss covers its own rows and DDP's gradient averaging makes the update that of
the global batch. The public code puts the local rank's keys first in each enqueued block; we keep the
global-batch order, which is the same set of entries (the loss does not depend on the order) whenever
``queue_size`` is a multiple of 2·B·W, and makes W ranks equal to one process for every queue size.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrface.losses import _dist

__all__ = ["QGFaceContrastive"]


def _f32(x: Tensor) -> Tensor:
    """float32 (float64 kept: the ground truth of the tests)."""
    return x if x.dtype == torch.float64 else x.float()


_EPS = 1e-3  # SoftmaxFace.eps of the public head (the cos / linear gates divide by threshold + eps)


class QGFaceContrastive(nn.Module):
    """The public QGFace contrastive head with the proxy-updated queue (see the module docstring).

    Args:
        embedding_size: D. queue_size: Q, the most entries kept (public ``contrast.queue.queue_size``).
        s: logit scale (the identity head's s). threshold: pair quality threshold (public ``quality_scale``).
        gate: ``sgn`` | ``cos`` | ``linear`` (public ``quality_scale_method``); gate_range ``half`` | ``whole``.
        pair_quality: ``low`` | ``mean`` | ``high``: how the pair's two qualities combine.
        both_directions: public ``pair_coupling`` starting with "D" (default) vs. the degraded view only.
        detach_pos: no gradient through the other view of the positive (public option, off).
        mask_same_class: same-class queue entries get cosine 0 (public runs need it: see FIDELITY.md).
        margin: ``none`` | ``static`` (m) | ``dynamic`` (the EMA of positive minus hardest negative).
        t_alpha: rate of that EMA (``batch_mean``, a statistic even without a margin).
        rescale: multiply by log(129) / log(K + 1).
        drift: ``proxy`` (public correction) or ``none`` (plain queue).
        process_group: group whose global batch is enqueued (None = default group when initialised).

    Call: ``loss, logs = module(q, k, z_q, z_k, labels, proxies_for)`` with q, k (B, D) embeddings (any
    norm) of the degraded and clean views, z_q, z_k (B,) AdaFace z_hat in [-1, 1], labels (B,) int64
    class ids, and ``proxies_for(ids (n,)) -> (n, D)`` the current raw class proxies (collective under a
    process group, e.g. :meth:`mrface.losses.PartialFC.centres_for`). Training mode enqueues.
    Buffers: ``queue`` (Q, D) unit embeddings newest first, ``queue_proxies`` (Q, D), ``queue_labels``
    (Q,) (-1 = empty), ``fill`` (), ``batch_mean`` ().
    """

    def __init__(
        self,
        embedding_size: int,
        queue_size: int = 8192,
        s: float = 64.0,
        threshold: float = 0.25,
        gate: str = "sgn",
        gate_range: str = "half",
        pair_quality: str = "low",
        both_directions: bool = True,
        detach_pos: bool = False,
        mask_same_class: bool = True,
        margin: str = "none",
        m: float = 0.4,
        t_alpha: float = 0.01,
        rescale: bool = True,
        drift: str = "proxy",
        process_group=None,
    ) -> None:
        super().__init__()
        if not (isinstance(embedding_size, int) and embedding_size > 0):
            raise ValueError(f"embedding_size must be a positive int, got {embedding_size!r}")
        if not (isinstance(queue_size, int) and queue_size > 0):
            raise ValueError(f"queue_size must be a positive int, got {queue_size!r}")
        if not (math.isfinite(s) and s > 0):
            raise ValueError(f"s must be a positive finite number, got {s!r}")
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
        for name, value, choices in (
            ("gate", gate, ("sgn", "cos", "linear")),
            ("gate_range", gate_range, ("half", "whole")),
            ("pair_quality", pair_quality, ("low", "mean", "high")),
            ("margin", margin, ("none", "static", "dynamic")),
            ("drift", drift, ("proxy", "none")),
        ):
            if value not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {value!r}")
        self.s, self.threshold, self.gate, self.gate_range = float(s), float(threshold), gate, gate_range
        self.pair_quality, self.both_directions, self.detach_pos = pair_quality, bool(both_directions), bool(detach_pos)
        self.mask_same_class, self.margin = bool(mask_same_class), margin
        self.m, self.t_alpha = float(m), float(t_alpha)
        self.rescale, self.drift, self.group = bool(rescale), drift, process_group
        self.register_buffer("queue", torch.zeros(queue_size, embedding_size))
        self.register_buffer("queue_proxies", torch.zeros(queue_size, embedding_size))
        self.register_buffer("queue_labels", torch.full((queue_size,), -1, dtype=torch.long))
        self.register_buffer("fill", torch.zeros((), dtype=torch.long))
        self.register_buffer("batch_mean", torch.zeros(()))

    # -- queue -------------------------------------------------------------------------------
    @torch.no_grad()
    def enqueue(self, keys: Tensor, labels: Tensor, proxies: Tensor) -> None:
        """Put keys (n, D) (normalised here), labels (n,) and proxies (n, D) at the front of the queue."""
        size = self.queue.shape[0]
        for buf, new in (
            (self.queue, F.normalize(_f32(keys), dim=1)),
            (self.queue_labels, labels.long()),
            (self.queue_proxies, _f32(proxies)),
        ):
            buf.copy_(torch.cat([new.to(buf), buf])[:size])
        self.fill.fill_(min(int(self.fill) + keys.shape[0], size))

    @torch.no_grad()
    def corrected_queue(self, proxies_now: Tensor) -> Tensor:
        """(K, D) filled entries moved by their proxy's drift; proxies_now (K, D) current proxies."""
        k = int(self.fill)
        e, then = self.queue[:k], self.queue_proxies[:k]
        if self.drift == "none":
            return e.clone()
        return e + e.norm(dim=1, keepdim=True) / then.norm(dim=1, keepdim=True) * (proxies_now.to(then) - then)

    # -- gate --------------------------------------------------------------------------------
    def pair_gate(self, z_q: Tensor, z_k: Tensor) -> Tensor:
        """(B,) gate of each (degraded, clean) pair from the views' z_hat (B,)."""
        nq, nk = (_f32(z_q.detach()) + 1) / 2, (_f32(z_k.detach()) + 1) / 2
        t = {"low": torch.minimum(nq, nk), "mean": (nq + nk) / 2, "high": torch.maximum(nq, nk)}[self.pair_quality]
        thr = self.threshold
        if thr == 0:
            return torch.ones_like(t)
        s2 = torch.zeros_like(t)
        if self.gate == "sgn":
            s1 = torch.ones_like(t)
            if self.gate_range == "whole":
                s2 = torch.ones_like(t)
        elif self.gate == "cos":
            s1 = (1 - torch.cos(math.pi / (thr + _EPS) * t)) / 2
            if self.gate_range == "whole":
                s2 = torch.cos(math.pi / (1 - thr + _EPS) / 2 * (t - thr + (1 - thr))) + 1
        else:
            s1 = t / (thr + _EPS)
            if self.gate_range == "whole":
                s2 = (t - 1) / (thr - 1 + _EPS)
        return torch.where(t < thr, s1, s2)

    # -- loss --------------------------------------------------------------------------------
    def forward(
        self, q: Tensor, k: Tensor, z_q: Tensor, z_k: Tensor, labels: Tensor, proxies_for: Callable[[Tensor], Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        d = self.queue.shape[1]
        b = q.shape[0]
        if q.dim() != 2 or q.shape[1] != d or k.shape != q.shape:
            raise ValueError(f"q and k must both be (B, {d}), got {tuple(q.shape)} and {tuple(k.shape)}")
        if labels.shape != (b,) or z_q.shape != (b,) or z_k.shape != (b,):
            raise ValueError(
                f"labels, z_q and z_k must be (B,) with B={b}, got {tuple(labels.shape)}, "
                f"{tuple(z_q.shape)}, {tuple(z_k.shape)}"
            )
        if bool((labels < 0).any()):
            raise ValueError(f"labels must be class ids >= 0, got {labels[labels < 0][:5].tolist()}")
        labels = labels.long()
        with torch.autocast(q.device.type, enabled=False):
            qn, kn = F.normalize(_f32(q), dim=1), F.normalize(_f32(k), dim=1)
            if self.training:
                keys = torch.cat(
                    [_dist.all_gather_cat(kn.detach(), self.group), _dist.all_gather_cat(qn.detach(), self.group)]
                )
                key_labels = torch.cat([_dist.all_gather_cat(labels, self.group)] * 2)
                self.enqueue(keys, key_labels, proxies_for(key_labels))
            if int(self.fill) == 0:
                raise RuntimeError("QGFaceContrastive: the queue is empty (evaluate after a training step)")
            n_filled = int(self.fill)
            queue_labels = self.queue_labels[:n_filled]
            queue = self.corrected_queue(proxies_for(self.queue_labels)[:n_filled])

            other_k = kn.detach() if self.detach_pos else kn
            pos = [(qn * other_k).sum(1, keepdim=True)]
            neg = [qn @ queue.T]
            if self.both_directions:
                other_q = qn.detach() if self.detach_pos else qn
                pos.append((kn * other_q).sum(1, keepdim=True))
                neg.append(kn @ queue.T)
            cosine = torch.cat([torch.cat(pos), torch.cat(neg)], 1).clamp(-1, 1)  # (R, K + 1)
            rows = cosine.shape[0] // b
            if self.mask_same_class:
                same = torch.cat([labels[:, None] == queue_labels[None, :]] * rows)
                cosine = cosine.masked_fill(F.pad(same, (1, 0)), 0.0)
            else:  # the public else-branch: each anchor's own copy among the newest entries only
                own = torch.zeros(b, n_filled, dtype=torch.bool, device=q.device)
                rank, w = _dist.rank(self.group), _dist.world_size(self.group)
                for view in range(2):
                    cols = view * b * w + rank * b + torch.arange(b, device=q.device)
                    own[torch.arange(b, device=q.device)[cols < n_filled], cols[cols < n_filled]] = True
                cosine = cosine.masked_fill(F.pad(torch.cat([own] * rows), (1, 0)), 0.0)

            margin_gap = self._update_margin_stat(cosine.detach())
            if self.margin != "none":
                m = self.m if self.margin == "static" else float(self.batch_mean)
                cosine = torch.cat([cosine[:, :1] - m, cosine[:, 1:]], 1)
            gate = torch.cat([self.pair_gate(z_q, z_k)] * rows)
            logits = cosine * self.s * gate[:, None]
            loss = -F.log_softmax(logits, dim=1)[:, 0].mean()
            if self.rescale:
                loss = loss * (math.log(129) / math.log(n_filled + 1))

        w = _dist.world_size(self.group)
        value = loss.detach().clone()
        if w > 1:  # the reported value is the global-batch mean; the gradient stays this rank's rows
            value = _dist.all_reduce(value, "sum", self.group) / w
            loss = loss + (value - loss.detach())
        logs = {
            "qgface/contrastive": value,
            "qgface/pos_cos": torch.cat(pos).detach().mean(),
            "qgface/pair_gate": gate.detach().mean(),
            "qgface/queue_fill": self.fill.float() / self.queue.shape[0],
            "qgface/margin_gap": margin_gap,
        }
        return loss, logs

    @torch.no_grad()
    def _update_margin_stat(self, cosine: Tensor) -> Tensor:
        """EMA of mean(positive - hardest negative) over the rows (public ``_m_hot``); returns the batch value."""
        neg = cosine[:, 1:]
        hardest = neg.max(1).values if neg.shape[1] else torch.zeros_like(cosine[:, 0])
        # the public code zeroes the positive column and takes the row max, so 0 bounds the hardest negative
        gap = (cosine[:, 0] - hardest.clamp_min(0.0)).mean()
        w = _dist.world_size(self.group)
        if w > 1:
            gap = _dist.all_reduce(gap.clone(), "sum", self.group) / w
        if self.training:
            self.batch_mean.copy_(self.t_alpha * gap + (1 - self.t_alpha) * self.batch_mean)
        return gap

    def extra_repr(self) -> str:
        return (
            f"queue_size={self.queue.shape[0]}, s={self.s}, threshold={self.threshold}, gate={self.gate}, "
            f"gate_range={self.gate_range}, pair_quality={self.pair_quality}, "
            f"both_directions={self.both_directions}, mask_same_class={self.mask_same_class}, "
            f"margin={self.margin}, rescale={self.rescale}, drift={self.drift}"
        )
