"""``qgface`` stage: QGFace quality-guided joint training (IsidoreSong/QGFace ``framework.py``
``FaceModel.training_step``; REFERENCE.md §4).

Each sample gives two views (:class:`PairedViews`, the public ``ContrastDataset`` with ``LH_align``): the
clean face H (random flip) and a degraded face L made as the public ``RandomRescale``: down to a side
``int(U(lo, hi) * H)`` with one of five filters, through a JPEG round trip at quality ``qgface.jpeg_quality``
(75 as public; 0 = none) and back up with another filter, drawn independently per image (then its own
random flip). The backbone embeds ``[H; L]`` in one pass; the identity head (Partial FC
with the ``qgface`` margin: AdaFace with the quality gate) trains on both views; the contrastive term
(:class:`~mrface.losses.QGFaceContrastive`) takes L as q and H as k with their normalised norms from
the head, and its queue (the stage's ``extra`` state, saved with the training state, so resumed runs
continue exactly) is filled with the global batch of both views. loss = identity + ``qgface.weight`` ×
contrastive. The recipe's ``augment.kind`` must be ``none``; ``augment.flip`` switches both flips.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from mrface.losses import QGFace, QGFaceContrastive
from mrface.models import get_model
from mrface.ops import degrade_per_sample, degrade_resolution
from mrface.training.augment import step_batch_slice, step_generator
from mrface.training.config import TrainConfig
from mrface.training.data import build_dataset, dataset_classes
from mrface.training.distributed import DistEnv
from mrface.training.stages.base import Stage, freeze_bn, make_head

# The public RandomRescale draws from [BICUBIC, BILINEAR, NEAREST, BOX, LANCZOS] (PIL, antialiased when
# shrinking) for the way down and again for the way up; our filters of the same names. PIL's BOX upscale
# is nearest-neighbour up to ties.
DOWN_FILTERS = ("bicubic_aa", "bilinear_aa", "nearest", "area", "lanczos")
UP_FILTERS = ("bicubic", "bilinear", "nearest", "nearest", "lanczos")
_VIEW_STREAM = 2


def jpeg_roundtrip(x: Tensor, quality: int) -> Tensor:
    """(N, 3, h, w) images normalised as (pixel/255 - 0.5)/0.5 -> JPEG-compressed at ``quality`` (cv2, 4:2:0),
    same shape, dtype and device. The first channel is encoded as red, as PIL encodes the public code's
    images (which hold BGR data): the channels keep the order they come in."""
    pixels = (x.detach().float().cpu() * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8)
    out = []
    for img in pixels.permute(0, 2, 3, 1).numpy():
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise RuntimeError(f"cv2 could not JPEG-encode a {img.shape} image")
        out.append(cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1])
    y = torch.from_numpy(np.ascontiguousarray(np.stack(out))).permute(0, 3, 1, 2)
    return (y.float() / 127.5 - 1.0).to(x)


def _up(x: Tensor, size: tuple[int, int], name: str) -> Tensor:
    """(1, 3, h, w) -> (1, 3, H, W) with an up filter of :data:`UP_FILTERS` (lanczos: cv2 INTER_LANCZOS4)."""
    if name != "lanczos":
        kw = {} if name == "nearest" else {"align_corners": False}
        return F.interpolate(x.float(), size=size, mode=name, **kw).to(x)
    img = x[0].detach().float().cpu().permute(1, 2, 0).numpy()
    up = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_LANCZOS4)
    return torch.from_numpy(up).permute(2, 0, 1)[None].to(x)


class PairedViews:
    """Callable ``(images (B, 3, H, W), step, micro) -> (clean, degraded)``, both (B, 3, H, W).

    Draws (flips, sides, down and up filters) are made for the whole step batch from the step's generator
    (stream 2) and sliced per rank and micro-batch as :class:`~mrface.training.augment.ResolutionAugment`
    does, so they do not depend on the number of ranks and a resumed run draws the same. The degraded view
    comes from one :func:`~mrface.ops.degrade_per_sample` call per up filter drawn in the batch; with
    ``jpeg_quality`` > 0 (the public ``RandomRescale(is_jpeg=True, quality=75)``) each image instead goes
    down with the op, through a cv2 JPEG round trip at its low side, and back up, one image at a time on
    the CPU (:func:`jpeg_roundtrip`).
    """

    def __init__(
        self,
        scale: tuple[float, float],
        flip: bool,
        seed: int,
        rank: int,
        world_size: int,
        accumulate: int,
        jpeg_quality: int = 0,
    ) -> None:
        if not 0 <= jpeg_quality <= 100:
            raise ValueError(f"qgface.jpeg_quality={jpeg_quality}: expected 0 (off) .. 100")
        self.jpeg_quality = int(jpeg_quality)
        self.lo, self.hi = float(scale[0]), float(scale[1])
        self.flip, self.seed, self.rank, self.world_size, self.accumulate = flip, seed, rank, world_size, accumulate

    def draws(self, b: int, height: int, step: int, micro: int) -> dict[str, Tensor]:
        """This micro-batch's draws: flip_clean, flip_low (B,) bool, sides, down, up (B,) int64."""
        total, own = step_batch_slice(b, self.rank, self.world_size, self.accumulate, micro)
        g = step_generator(self.seed, step, _VIEW_STREAM)
        flip_clean = torch.rand(total, generator=g) < 0.5
        flip_low = torch.rand(total, generator=g) < 0.5
        scale = torch.rand(total, generator=g) * (self.hi - self.lo) + self.lo
        sides = (scale * height).long().clamp(1, height)  # int(target_scale * original_size)
        down = torch.randint(0, len(DOWN_FILTERS), (total,), generator=g)
        up = torch.randint(0, len(UP_FILTERS), (total,), generator=g)
        return {
            "flip_clean": flip_clean[own],
            "flip_low": flip_low[own],
            "sides": sides[own],
            "down": down[own],
            "up": up[own],
        }

    def __call__(self, images: Tensor, step: int, micro: int) -> tuple[Tensor, Tensor]:
        b, _, height, _ = images.shape
        d = self.draws(b, height, step, micro)
        low = torch.empty_like(images)
        if self.jpeg_quality:
            for i in range(b):
                small = degrade_resolution(images[i : i + 1], [int(d["sides"][i])], filter=DOWN_FILTERS[d["down"][i]])
                small = jpeg_roundtrip(small.down[0], self.jpeg_quality)
                low[i] = _up(small, tuple(images.shape[-2:]), UP_FILTERS[d["up"][i]])[0]
            return self._flip(images, low, d)
        up_names = torch.tensor([sorted(set(UP_FILTERS)).index(n) for n in UP_FILTERS])[d["up"]]
        for k, name in enumerate(sorted(set(UP_FILTERS))):
            idx = (up_names == k).nonzero()[:, 0]
            if idx.numel():
                dev_idx = idx.to(images.device)
                low[dev_idx] = degrade_per_sample(images[dev_idx], d["sides"][idx], d["down"][idx], DOWN_FILTERS, name)
        return self._flip(images, low, d)

    def _flip(self, images: Tensor, low: Tensor, d: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        clean = images
        if self.flip:
            fc, fl = d["flip_clean"].to(images.device), d["flip_low"].to(images.device)
            clean = torch.where(fc[:, None, None, None], images.flip(-1), images)
            low = torch.where(fl[:, None, None, None], low.flip(-1), low)
        return clean, low


def qgface_stage(cfg: TrainConfig, env: DistEnv, dataset: Dataset | None) -> tuple[Stage, Dataset]:
    """The QGFace stage and its dataset (the recipe's, in the model's colour order, unless given)."""
    model = get_model(cfg.model.name, **dict(cfg.model.args))
    if dataset is None:
        dataset, num_classes = build_dataset(cfg.data, cfg.data.color or model.metadata.color_order)
    else:
        num_classes = dataset_classes(dataset)
    head = make_head(cfg, model.embedding_size, num_classes)
    if not isinstance(head.margin, QGFace):
        raise ValueError(
            f"stage=qgface: head.name={cfg.head.name!r} must be qgface (the quality-gated AdaFace "
            "margin whose normalised norms gate the contrastive pairs)"
        )
    args = {"s": head.margin.s, "threshold": head.margin.gate_threshold, **dict(cfg.qgface.args)}
    try:
        criterion = QGFaceContrastive(model.embedding_size, cfg.qgface.queue_size, **args)
    except TypeError as err:
        raise ValueError(f"qgface.args={dict(cfg.qgface.args)} do not fit QGFaceContrastive: {err}") from None
    views = PairedViews(
        tuple(cfg.qgface.scale),
        cfg.augment.flip,
        cfg.seed,
        env.rank,
        env.world_size,
        cfg.optim.accumulate,
        cfg.qgface.jpeg_quality,
    )
    weight = float(cfg.qgface.weight)

    def loss_fn(net: nn.Module, images: Tensor, labels: Tensor, step: int, micro: int) -> tuple[Tensor, dict]:
        clean, low = views(images, step, micro)
        b = images.shape[0]
        embeddings = net(torch.cat([clean, low]))  # the public order: clean views first
        identity, logs = head(embeddings, torch.cat([labels, labels]))
        z = head.margin.quality(embeddings.detach().float().norm(dim=1))  # the EMAs as the head just left them
        k, q = embeddings.split(b)
        z_k, z_q = z.split(b)
        contrastive, clogs = criterion(q, k, z_q, z_k, labels, head.centres_for)
        logs.update(clogs)
        logs["loss/identity"] = identity.detach()
        return identity + weight * contrastive, logs

    def train_mode() -> None:
        model.train()
        head.train()
        criterion.train()
        if cfg.model.freeze_bn:
            freeze_bn(model)

    return Stage(model, model, head, loss_fn, train_mode, extra=criterion), dataset
