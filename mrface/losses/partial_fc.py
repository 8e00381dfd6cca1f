"""Partial FC: a margin-softmax classifier whose class centres are sharded over the ranks of a
process group (REFERENCE.md §5); with no process group it is the plain single-device head.

Per step: all-gather embeddings (exact backward, see :mod:`mrface.losses._dist`) and labels,
cosines against the local (optionally sampled) centres, margin logits, then a softmax whose row
max and row sum are all-reduced. Every rank returns the same loss, the mean over the valid rows
of the global batch. Gradients: each rank's centre shard receives the exact gradient of that
loss; each rank's embeddings receive W times it, which DDP's averaging over W ranks turns into
the exact backbone gradient.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrface.losses import _dist
from mrface.losses.margin_softmax import margin_softmax_per_row
from mrface.losses.margins import Margin, RowTransform, apply_nontarget

logger = logging.getLogger(__name__)

__all__ = ["PartialFC", "reshard_centres", "reshard_state_dicts", "shard_range"]


def shard_range(num_classes: int, world_size: int, rank: int) -> tuple[int, int]:
    """(start, count) of the classes owned by ``rank``:
    count = C // W + (rank < C % W), start = C // W * rank + min(rank, C % W)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if num_classes < world_size:
        raise ValueError(f"num_classes ({num_classes}) must be >= world_size ({world_size})")
    q, r = divmod(num_classes, world_size)
    return q * rank + min(rank, r), q + int(rank < r)


def reshard_centres(shards: list[Tensor], world_size: int) -> list[Tensor]:
    """Re-split centre shards (in rank order, each (n_r, D)) for another world size."""
    full = torch.cat(list(shards), 0)
    out = []
    for r in range(world_size):
        start, count = shard_range(full.shape[0], world_size, r)
        out.append(full[start : start + count].clone())
    return out


def reshard_state_dicts(state_dicts: list[dict], world_size: int) -> list[dict]:
    """Re-shard :class:`PartialFC` state dicts (rank order) to ``world_size`` ranks.

    The centre shards are re-split; margin buffers (identical on every rank) are taken from rank 0.
    """
    if not state_dicts:
        raise ValueError("state_dicts must hold one state dict per rank, got none")
    extras = [sd["_extra_state"] for sd in state_dicts]
    if [e["rank"] for e in extras] != list(range(len(extras))) or any(e["world_size"] != len(extras) for e in extras):
        raise ValueError("state_dicts must be the complete set of shards in rank order")
    shards = reshard_centres([sd["weight"] for sd in state_dicts], world_size)
    out = []
    for r, w in enumerate(shards):
        sd = {k: v.clone() for k, v in state_dicts[0].items() if k not in ("weight", "_extra_state")}
        start, _ = shard_range(extras[0]["num_classes"], world_size, r)
        sd["weight"] = w
        sd["_extra_state"] = dict(extras[0], rank=r, world_size=world_size, start=start)
        out.append(sd)
    return out


class _ShardedSoftmaxCE(torch.autograd.Function):
    """Per-row cross-entropy over class shards held by different ranks.

    forward(logits (N, K) float32 local shard, target (N,) local column or -1, valid (N,) bool)
    -> (N,) loss per row (0 for invalid rows), identical on every rank. The backward needs no
    communication: d loss_i / d logits_ij = p_ij - [j == target_i] for the local columns.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, valid: Tensor, group) -> Tensor:
        row_max = logits.max(dim=1).values if logits.shape[1] else logits.new_full((logits.shape[0],), -torch.inf)
        row_max = _dist.all_reduce(row_max.clone(), "max", group)
        exp = torch.exp(logits - row_max[:, None])
        row_sum = _dist.all_reduce(exp.sum(dim=1), "sum", group)
        has = target >= 0
        idx = target.clamp_min(0)[:, None]
        tgt = torch.where(has, logits.gather(1, idx)[:, 0] if logits.shape[1] else 0.0, 0.0)
        tgt = _dist.all_reduce(tgt, "sum", group)
        loss = torch.where(valid, torch.log(row_sum) + row_max - tgt, 0.0)
        ctx.save_for_backward(exp.div_(row_sum[:, None]), target, valid)
        return loss

    @staticmethod
    def backward(ctx, grad_loss: Tensor):
        prob, target, valid = ctx.saved_tensors
        g = torch.where(valid, grad_loss, 0.0)
        grad = prob * g[:, None]
        has = target >= 0
        rows = has.nonzero()[:, 0]
        grad[rows, target[rows]] -= g[rows]
        return grad, None, None, None


class PartialFC(nn.Module):
    """Margin-softmax head with class centres sharded over ``process_group``.

    Args:
        embedding_size: D. num_classes: C (all ranks together).
        margin: a :class:`~mrface.losses.margins.Margin` (its buffers are saved with the head).
        sample_rate: fraction of the local classes used per training step; every class present in
            the global batch is kept, the rest is filled with uniformly random negatives up to
            int(sample_rate * num_local). 1.0 is plain model parallel.
        process_group: the group the centres are sharded over; None = default group if
            torch.distributed is initialised, else a single process.
        ignore_index: label value of rows that take no part in the loss.
        fused: compute the softmax with :func:`mrface.losses.margin_softmax.margin_softmax_per_row`,
            which never holds the (N, K) logits (the default); False: the materialising reference
            path (same results up to float32 rounding).
        interclass_filtering_threshold: arcface_torch's option (0 = off, its default): a
            non-target cosine above it is set to 0 before the margin (its logit becomes 0 and gets
            no gradient), for every row (rows whose class lives on another rank included). The
            fused kernels have no such filter: with a threshold > 0 the head computes the
            materialising path (noted once in the log).

    Call: ``loss, logs = head(embeddings, labels)`` with embeddings (B, D) any float dtype and
    labels (B,) int64; B must be the same on every rank. ``loss`` is a float32 scalar.

    Only the v2 semantics (sampled rows selected by indexing, every centre owned by one optimiser
    parameter) are implemented; v1's "momentum only for sampled rows" is not.
    """

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        margin: Margin,
        sample_rate: float = 1.0,
        process_group=None,
        ignore_index: int = -1,
        fused: bool = True,
        interclass_filtering_threshold: float = 0.0,
    ) -> None:
        super().__init__()
        if not (isinstance(embedding_size, int) and embedding_size > 0):
            raise ValueError(f"embedding_size must be a positive int, got {embedding_size!r}")
        if not (isinstance(num_classes, int) and num_classes > 0):
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if not 0 < sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        if not isinstance(margin, Margin):
            raise TypeError(f"margin must be a mrface.losses.margins.Margin, got {type(margin)}")
        if ignore_index >= 0:
            raise ValueError(f"ignore_index must be negative, got {ignore_index}")
        self.group = process_group
        self.world_size, self.rank = _dist.world_size(process_group), _dist.rank(process_group)
        self.embedding_size, self.num_classes = embedding_size, num_classes
        self.class_start, self.num_local = shard_range(num_classes, self.world_size, self.rank)
        self.sample_rate, self.ignore_index = float(sample_rate), ignore_index
        self.fused = bool(fused)
        if not 0 <= interclass_filtering_threshold < 1:
            raise ValueError(f"interclass_filtering_threshold must be in [0, 1), got {interclass_filtering_threshold}")
        self.interclass_filtering_threshold = float(interclass_filtering_threshold)
        self._warned_filter = False
        self.margin = margin
        self.weight = nn.Parameter(torch.normal(0.0, 0.01, (self.num_local, embedding_size)))
        self.last_sampled_index: Tensor | None = None  # local ids used in the last forward

    # -- shard bookkeeping -------------------------------------------------------------------
    def get_extra_state(self) -> dict:
        return {
            "num_classes": self.num_classes,
            "world_size": self.world_size,
            "rank": self.rank,
            "start": self.class_start,
            "embedding_size": self.embedding_size,
        }

    def set_extra_state(self, state: dict) -> None:
        mine = self.get_extra_state()
        if state != mine:
            raise ValueError(
                f"PartialFC shard mismatch: checkpoint has {state}, this head is "
                f"{mine}; use mrface.losses.reshard_state_dicts to re-shard"
            )

    # -- input checks ------------------------------------------------------------------------
    def _local_problem(self, embeddings: Tensor, labels: Tensor) -> str | None:
        if not isinstance(embeddings, Tensor) or embeddings.dim() != 2:
            return f"embeddings must be a (B, D) tensor, got shape {getattr(embeddings, 'shape', None)}"
        if not embeddings.is_floating_point():
            return f"embeddings must be floating point, got {embeddings.dtype}"
        if embeddings.shape[1] != self.embedding_size:
            return f"embeddings must have D={self.embedding_size} columns, got {embeddings.shape[1]}"
        if not isinstance(labels, Tensor) or labels.shape != (embeddings.shape[0],):
            return (
                f"labels must be a (B,) tensor with B={embeddings.shape[0]}, got shape {getattr(labels, 'shape', None)}"
            )
        if labels.dtype not in (torch.int64, torch.int32):
            return f"labels must be int64 or int32, got {labels.dtype}"
        bad = (labels >= self.num_classes) | ((labels < 0) & (labels != self.ignore_index))
        if bool(bad.any()):
            return (
                f"labels must be in [0, {self.num_classes}) or equal ignore_index="
                f"{self.ignore_index}; got {labels[bad][:5].tolist()}"
            )
        return None

    def _check(self, embeddings: Tensor, labels: Tensor) -> None:
        problem = self._local_problem(embeddings, labels)
        if self.world_size == 1:
            if problem:
                raise ValueError(problem)
            return
        # Every rank reaches the same verdict, so no rank is left waiting in a collective.
        b = embeddings.shape[0] if isinstance(embeddings, Tensor) and embeddings.dim() else -1
        dev = self.weight.device
        mine = torch.tensor([b, int(problem is not None)], device=dev)
        every = _dist.all_gather_cat(mine[None], self.group).cpu()
        if problem:
            raise ValueError(f"rank {self.rank}: {problem}")
        if every[:, 1].any():
            bad = every[:, 1].nonzero()[:, 0].tolist()
            raise ValueError(f"bad input on rank(s) {bad}; see the error raised there")
        sizes = every[:, 0].tolist()
        if len(set(sizes)) != 1:
            raise ValueError(f"embeddings must have the same batch size on every rank, got {sizes}")

    # -- sampling ----------------------------------------------------------------------------
    def sample_classes(self, local_labels: Tensor) -> tuple[Tensor, Tensor]:
        """Pick the local classes of this step.

        Args:
            local_labels: (N,) local class id of each global row, -1 where not in this shard.

        Returns:
            index: (K,) sorted local ids, K = max(int(sample_rate * num_local), 1, #positives);
            remapped: (N,) column of each row's class in ``index``, -1 where not in this shard.
        """
        has = local_labels >= 0
        positive = torch.unique(local_labels[has], sorted=True)
        num_sample = max(1, int(self.sample_rate * self.num_local))
        if num_sample > positive.numel():
            score = torch.rand(self.num_local, device=local_labels.device)
            score[positive] = 2.0
            index = torch.topk(score, k=num_sample).indices.sort().values
        else:
            index = positive
        remapped = torch.where(has, torch.searchsorted(index, local_labels.clamp_min(0)), -1)
        return index, remapped

    @torch.no_grad()
    def centres_for(self, labels: Tensor) -> Tensor:
        """(n, D) float32 centres of global class ids ``labels`` (n,), zeros for negative ids.

        Collective under a process group: every rank must call it with the same n.
        """
        out = torch.zeros(labels.shape[0], self.embedding_size, device=self.weight.device)
        mine = (labels >= self.class_start) & (labels < self.class_start + self.num_local)
        out[mine] = self.weight[labels[mine] - self.class_start].float()
        return _dist.all_reduce(out, "sum", self.group)

    # -- forward -----------------------------------------------------------------------------
    def centre_cosines(self, embeddings: Tensor, centres: Tensor) -> tuple[Tensor, Tensor]:
        """float32 (cosines (N, K), norms (N,)) of embeddings (N, D) against centres (K, D)."""
        with torch.autocast(embeddings.device.type, enabled=False):
            e = embeddings.float()
            norms = e.norm(dim=1)
            cos = F.normalize(e, dim=1) @ F.normalize(centres.float(), dim=1).T
        return cos.clamp(-1.0, 1.0), norms

    def _reference_rows(
        self, emb_all: Tensor, weight: Tensor, local_labels: Tensor, valid: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, RowTransform]:
        """Materialising path: per-row loss (N,), target cosines (N,), norms (N,), row transform."""
        group = self.group
        cos, norms = self.centre_cosines(emb_all, weight)
        has = local_labels >= 0
        idx = local_labels.clamp_min(0)[:, None]
        if self.interclass_filtering_threshold > 0:
            target = torch.zeros_like(cos, dtype=torch.bool).scatter(1, idx, has[:, None])
            cos = torch.where((cos > self.interclass_filtering_threshold) & ~target, 0.0, cos)
        cos_y_local = torch.where(has, cos.gather(1, idx)[:, 0], 0.0)
        cos_y = cos_y_local
        if self.world_size > 1:  # every rank needs every row's target cosine (thresholds, EMAs)
            reduced = _dist.all_reduce(cos_y_local.detach().clone(), "sum", group)
            cos_y = cos_y_local + (reduced - cos_y_local.detach())
        rows = self.margin.rows(cos_y, valid, norms if self.margin.needs_norms else None)

        logits = apply_nontarget(cos, rows)
        tgt = torch.where(has, rows.target_logit, logits.gather(1, idx)[:, 0])
        logits = logits.scatter(1, idx, tgt[:, None])
        per_row = _ShardedSoftmaxCE.apply(logits, local_labels, valid, group)
        return per_row, cos_y, norms, rows

    def forward(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        self._check(embeddings, labels)
        labels = labels.long()
        group = self.group
        emb_all = _dist.all_gather_with_grad(embeddings, group)
        labels_all = _dist.all_gather_cat(labels, group)
        valid = labels_all != self.ignore_index

        local = valid & (labels_all >= self.class_start) & (labels_all < self.class_start + self.num_local)
        local_labels = torch.where(local, labels_all - self.class_start, -1)
        weight = self.weight
        if self.sample_rate < 1.0 and self.training:
            index, local_labels = self.sample_classes(local_labels)
            weight = self.weight[index]
            self.last_sampled_index = index
        else:
            self.last_sampled_index = None

        fused = self.fused and self.interclass_filtering_threshold == 0
        if self.fused and not fused and not self._warned_filter:
            logger.info("PartialFC: interclass_filtering_threshold > 0 runs the materialising path")
            self._warned_filter = True
        if fused:
            out = margin_softmax_per_row(emb_all, weight, local_labels, self.margin, valid=valid, process_group=group)
            per_row, cos_y, norms, rows = out.loss, out.cos_y, out.norms, out.rows
        else:
            per_row, cos_y, norms, rows = self._reference_rows(emb_all, weight, local_labels, valid)
        n_valid = valid.sum().clamp_min(1)
        loss = per_row.sum() / n_valid

        logs: dict[str, Tensor] = {
            "loss/ce": loss.detach(),
            "cos/target_mean": (cos_y.detach() * valid).sum() / n_valid,
            "norm/mean": norms.detach().mean(),
        }
        reg = self.margin.regularizer(embeddings.float().norm(dim=1))
        if reg is not None:
            # The local term's gradient is W x the global term's, like the all-gather's backward;
            # its value is replaced by the global mean for the returned loss.
            reg_global = _dist.all_reduce(reg.detach().clone(), "sum", group) / self.world_size
            loss = loss + reg + (reg_global - reg.detach())
            logs["loss/regularizer"] = reg_global
        logs.update(rows.stats)
        if self.last_sampled_index is not None:
            logs["partial_fc/num_sampled"] = torch.tensor(float(self.last_sampled_index.numel()))
        return loss, logs

    def extra_repr(self) -> str:
        return (
            f"embedding_size={self.embedding_size}, num_classes={self.num_classes}, "
            f"shard=[{self.class_start}, {self.class_start + self.num_local}), "
            f"world_size={self.world_size}, sample_rate={self.sample_rate}, fused={self.fused}, "
            f"interclass_filtering_threshold={self.interclass_filtering_threshold}"
        )
