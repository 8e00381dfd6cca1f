"""QGFace's contrastive term: low-quality views against their clean view, with negatives from a
queue of past clean embeddings corrected by the drift of their class centre (proxy correction).

For a queued embedding e stored when its class centre was w_then, the corrected entry is
``normalize(e + normalize(w_now) - normalize(w_then))``: the queue follows the classifier as it
moves instead of going stale. Defaults (the public configs omit them, REFERENCE.md §4):
queue_size 4096, temperature 0.1, keys (clean views) detached as in MoCo; queue entries with the
anchor's label are excluded from the negatives. The queue is per rank.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["QGFaceContrastive"]


class QGFaceContrastive(nn.Module):
    """InfoNCE with a proxy-corrected queue.

    Args:
        embedding_size: D. queue_size: Q entries. temperature: tau of the InfoNCE logits.
        detach_key: whether the clean view gets no gradient from this loss.

    Call: ``loss, logs = module(lq, hq, labels, centres_for)`` with lq, hq (B, D) embeddings of the
    degraded and clean views, labels (B,) (negative = ignored row, never enqueued as a negative),
    and ``centres_for(ids (n,)) -> (n, D)`` returning the current class centres (e.g.
    :meth:`mrface.losses.PartialFC.centres_for`). In training mode the clean views are enqueued.
    Buffers: ``queue`` (Q, D), ``queue_labels`` (Q,) (-1 = empty), ``queue_centres`` (Q, D), ``ptr``.
    """

    def __init__(self, embedding_size: int, queue_size: int = 4096, temperature: float = 0.1,
                 detach_key: bool = True) -> None:
        super().__init__()
        if not (isinstance(embedding_size, int) and embedding_size > 0):
            raise ValueError(f"embedding_size must be a positive int, got {embedding_size!r}")
        if not (isinstance(queue_size, int) and queue_size > 0):
            raise ValueError(f"queue_size must be a positive int, got {queue_size!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature, self.detach_key = float(temperature), detach_key
        self.register_buffer("queue", torch.zeros(queue_size, embedding_size))
        self.register_buffer("queue_labels", torch.full((queue_size,), -1, dtype=torch.long))
        self.register_buffer("queue_centres", torch.zeros(queue_size, embedding_size))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def corrected_queue(self, centres_now: Tensor) -> Tensor:
        """(Q, D) unit queue entries moved by their class centre's drift; centres_now (Q, D)."""
        drift = F.normalize(centres_now.float(), dim=1) - self.queue_centres
        return F.normalize(self.queue + drift, dim=1)

    def forward(self, lq: Tensor, hq: Tensor, labels: Tensor,
                centres_for: Callable[[Tensor], Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        d = self.queue.shape[1]
        if lq.dim() != 2 or lq.shape[1] != d or hq.shape != lq.shape:
            raise ValueError(f"lq and hq must both be (B, {d}), got {tuple(lq.shape)} and "
                             f"{tuple(hq.shape)}")
        if labels.shape != (lq.shape[0],):
            raise ValueError(f"labels must be (B,) with B={lq.shape[0]}, got {tuple(labels.shape)}")
        q = F.normalize(lq.float(), dim=1)
        k = F.normalize(hq.float(), dim=1)
        if self.detach_key:
            k = k.detach()
        queue = self.corrected_queue(centres_for(self.queue_labels))
        pos = (q * k).sum(1, keepdim=True) / self.temperature
        neg = q @ queue.T / self.temperature
        excluded = (self.queue_labels[None, :] < 0) | (self.queue_labels[None, :] == labels[:, None])
        neg = neg.masked_fill(excluded, -torch.inf)
        per_row = torch.logsumexp(torch.cat([pos, neg], 1), dim=1) - pos[:, 0]
        valid = labels >= 0
        loss = (per_row * valid).sum() / valid.sum().clamp_min(1)
        logs = {"qgface/contrastive": loss.detach(), "qgface/pos_cos": pos.detach().mean()
                * self.temperature, "qgface/queue_fill": (self.queue_labels >= 0).float().mean()}
        if self.training:
            self._enqueue(k.detach(), labels, centres_for(labels))
        return loss, logs

    @torch.no_grad()
    def _enqueue(self, keys: Tensor, labels: Tensor, centres: Tensor) -> None:
        n, size = keys.shape[0], self.queue.shape[0]
        pos = (self.ptr + torch.arange(n, device=keys.device)) % size
        keep = slice(max(0, n - size), n)  # a batch larger than the queue keeps its last rows
        pos = pos[keep]
        self.queue[pos] = keys[keep]
        self.queue_labels[pos] = labels[keep].long()
        self.queue_centres[pos] = F.normalize(centres[keep].float(), dim=1)
        self.ptr.copy_((self.ptr + n) % size)
