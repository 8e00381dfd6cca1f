"""``dcr`` stage: DCR coupled-branch training on a frozen trunk (REFERENCE.md §3).

The trunk (a trunk run, checkpoint or weights file: ``dcr.trunk``) is loaded into the trunk of a
:class:`~mrface.models.DCR` (``model.name`` = ``dcr_tiny``, ``dcr_iresnet50``, ...) and frozen in eval
mode. Each batch (after the recipe's ``augment``, normally a flip only) is the HR face x; for every
branch resolution k (8/12/16/20 px) x is resized down to k with ``dcr.filter`` and back up to the
trunk's input size with ``dcr.up`` (:func:`mrface.ops.degrade_resolution`). Branch k maps the trunk
embedding of its LR face to e_k and classifies it; the loss (:class:`~mrface.losses.DCRLoss`) is::

    mean_k [ CE(classifier_k(e_k), y) + 0.008 * ||e_k - c_y||^2 ] + 0.008 * sum_k ||e_HR - e_k||^2

with e_HR the frozen trunk's embedding of x and centres c updated at rate 0.6 over the global batch.
Only the branches train; the centres are the stage's ``extra`` state (saved per rank with the
training state, so a resumed run continues exactly). There is no Partial FC head.
"""

from __future__ import annotations

import dataclasses

from torch import Tensor, nn
from torch.utils.data import Dataset

from mrface.losses import DCRLoss
from mrface.models import DCR, get_model
from mrface.models.dcr import DCROutput
from mrface.ops import degrade_resolution
from mrface.training.augment import ResolutionAugment
from mrface.training.config import TrainConfig
from mrface.training.data import build_dataset, dataset_classes
from mrface.training.distributed import DistEnv
from mrface.training.frozen import load_frozen, trunk_arguments, trunk_weights
from mrface.training.stages import Stage


class CoupledBranches(nn.Module):
    """``forward(x_hr (B, 3, S, S), lows [(B, 3, S, S)] one per branch)`` -> DCROutput (the module DDP wraps)."""

    def __init__(self, model: DCR) -> None:
        super().__init__()
        self.model = model

    def forward(self, x_hr: Tensor, lows: list[Tensor]) -> DCROutput:
        return self.model.branch_outputs(x_hr, dict(zip(self.model.resolutions, lows, strict=True)))


def low_resolution_views(images: Tensor, resolutions: tuple[int, ...], filter: str, up: str) -> list[Tensor]:
    """(B, 3, S, S) HR faces -> one (B, 3, S, S) batch per resolution k: down to k x k, then back up to S."""
    return degrade_resolution(images, [int(k) for k in resolutions], filter=filter, up=up).up


def build_dcr_model(cfg: TrainConfig, num_classes: int, trunk_args: dict) -> DCR:
    """``get_model(model.name)`` with the trunk's arguments, ``dcr.resolutions`` and ``num_classes`` classes."""
    args = {**trunk_args, **dict(cfg.model.args)}
    given = args.pop("num_classes", None)
    if given is not None and int(given) != num_classes:
        raise ValueError(f"model.args.num_classes={given}, but the data has {num_classes} classes")
    args.pop("resolutions", None)
    expected = f"stage=dcr: model.name={cfg.model.name!r} is not a DCR model (e.g. dcr_tiny, dcr_iresnet50)"
    try:
        model = get_model(cfg.model.name, num_classes=num_classes, resolutions=list(cfg.dcr.resolutions), **args)
    except TypeError as err:
        raise ValueError(f"{expected} or its arguments do not fit: {err}") from None
    if not isinstance(model, DCR):
        raise ValueError(expected)
    return model


def dcr_stage(cfg: TrainConfig, env: DistEnv, dataset: Dataset | None) -> tuple[Stage, Dataset]:
    """The DCR branch stage and its dataset (the recipe's, in the trunk's colour order, unless given)."""
    state, trunk_meta, source = trunk_weights(cfg.dcr.trunk)
    if dataset is None:
        dataset, num_classes = build_dataset(cfg.data, cfg.data.color or trunk_meta.color_order)
    else:
        num_classes = dataset_classes(dataset)
    model = build_dcr_model(cfg, num_classes, trunk_arguments(trunk_meta))
    # The trunk sees the pixels: the saved model describes its input as the trunk's metadata does.
    model.metadata = dataclasses.replace(model.metadata, color_order=trunk_meta.color_order, mean=trunk_meta.mean,
                                         std=trunk_meta.std, alignment=trunk_meta.alignment)  # fmt: skip
    load_frozen(model.trunk, state, source)

    criterion = DCRLoss(num_classes, model.embedding_size, cfg.dcr.centre_weight, cfg.dcr.coupling_weight,
                        cfg.dcr.centre_rate, detach_hr=True)  # fmt: skip
    augment = ResolutionAugment(cfg.augment, cfg.seed, env.rank, env.world_size, cfg.optim.accumulate)
    resolutions = model.resolutions

    def loss_fn(net: nn.Module, images: Tensor, labels: Tensor, step: int, micro: int) -> tuple[Tensor, dict]:
        hr = augment(images, step, micro)
        out = net(hr, low_resolution_views(hr, resolutions, cfg.dcr.filter, cfg.dcr.up))
        loss, logs = criterion([out.embeddings[k] for k in resolutions], [out.logits[k] for k in resolutions],
                               out.e_hr, labels)  # fmt: skip
        for k in resolutions:
            logs[f"dcr/accuracy_{k}"] = (out.logits[k].detach().argmax(1) == labels).float().mean()
        return loss, logs

    def train_mode() -> None:
        model.train()
        model.trunk.eval()
        criterion.train()

    return Stage(model, CoupledBranches(model), None, loss_fn, train_mode, extra=criterion), dataset
