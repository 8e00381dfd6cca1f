"""``dcr`` stage: DCR coupled-branch training on a frozen trunk (REFERENCE.md §3, public CS7319E1G16 ``branch``).

The trunk (a trunk run, checkpoint or weights file: ``dcr.trunk``) is loaded into the trunk of a
:class:`~mrface.models.DCR` (``model.name`` = ``dcr_tiny``, ``dcr_iresnet50``, ...) and frozen in eval
mode. Each batch (after the recipe's ``augment``, normally a flip only) is the HR face x; for every
branch resolution k (8/12/16/20 px) x is resized down to k with ``dcr.filter`` and back up to the
trunk's input size with ``dcr.up`` (:func:`mrface.ops.degrade_resolution`; public: Lanczos down from the
aligned crop, bilinear up). The HR branch (branch 0) sees x, branch k its LR view; the loss is the public
CMLoss (:func:`mrface.models.dcr.dcr_loss`)::

    mean_s CE(logits_s, y) + 0.008 * mean_s mse(e_s, c_s[y]) + 0.008 * sum_s mse(e_HR, e_s)

with one centre table per scale (N(0, 2/C) from the run's seed), each moved at rate 0.6 with the global
batch before its loss term. Specialised initialisation: identity ``mapping`` (``model.args.identity_init``)
and, with ``dcr.classifier_init=trunk``, the trunk run's classifier (unit rows times
``dcr.classifier_scale``, the trunk head's s; zero bias) copied into every branch classifier. Only the
branches train; the centres are the stage's ``extra`` state (saved with the training state, so a resumed
run continues exactly). There is no Partial FC head.
"""

from __future__ import annotations

import dataclasses

import torch
from safetensors.torch import load_file
from torch import Tensor, nn
from torch.utils.data import Dataset

from mrface.models import DCR, get_model
from mrface.models.dcr import DCRCentres, DCROutput, dcr_loss
from mrface.ops import degrade_resolution
from mrface.training.checkpoint import CheckpointNotFound, read_manifest, resolve_checkpoint
from mrface.training.config import TrainConfig
from mrface.training.data import build_dataset, dataset_classes
from mrface.training.distributed import DistEnv
from mrface.training.stages.base import Stage, make_augment
from mrface.training.stages.frozen import load_frozen, trunk_arguments, trunk_weights


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


def trunk_classifier(trunk: str, num_classes: int, embedding_size: int) -> Tensor:
    """The full classifier weight (C, E) of a trunk run or checkpoint (its Partial FC shards, rank order)."""
    try:
        ckpt = resolve_checkpoint(trunk)
    except CheckpointNotFound:
        raise ValueError(
            f"dcr.classifier_init=trunk: {trunk} is not a trunk run or checkpoint holding its "
            "classifier (head_rank*.safetensors); use one, or set dcr.classifier_init=random"
        ) from None
    manifest = read_manifest(ckpt)
    if manifest.get("num_classes") != num_classes or manifest.get("embedding_size") != embedding_size:
        raise ValueError(
            f"{ckpt}: trunk classifier is {manifest.get('num_classes')} x {manifest.get('embedding_size')}"
            f", the branches need {num_classes} x {embedding_size}"
        )
    shards = [load_file(str(ckpt / f"head_rank{r}.safetensors"))["weight"] for r in range(manifest["world_size"])]
    return torch.cat(shards, 0).float()


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
    model.metadata = dataclasses.replace(
        model.metadata,
        color_order=trunk_meta.color_order,
        mean=trunk_meta.mean,
        std=trunk_meta.std,
        alignment=trunk_meta.alignment,
    )
    load_frozen(model.trunk, state, source)

    if cfg.dcr.classifier_init == "trunk":
        weight = trunk_classifier(cfg.dcr.trunk, num_classes, model.embedding_size)
        model.init_classifiers(torch.nn.functional.normalize(weight, dim=1) * cfg.dcr.classifier_scale)
    scales = ([model.hr_resolution] if model.hr_resolution is not None else []) + list(model.resolutions)
    criterion = DCRCentres(scales, num_classes, model.embedding_size, cfg.dcr.centre_rate, seed=cfg.seed)
    augment = make_augment(cfg, env, trunk_meta)
    resolutions = model.resolutions

    def loss_fn(net: nn.Module, images: Tensor, labels: Tensor, step: int, micro: int) -> tuple[Tensor, dict]:
        hr = augment(images, step, micro)
        out = net(hr, low_resolution_views(hr, resolutions, cfg.dcr.filter, cfg.dcr.up))
        loss, logs = dcr_loss(out, labels, criterion, cfg.dcr.centre_weight, cfg.dcr.coupling_weight)
        for k in out.logits:
            logs[f"dcr/accuracy_{k}"] = (out.logits[k].detach().argmax(1) == labels).float().mean()
        return loss, logs

    def train_mode() -> None:
        model.train()
        model.trunk.eval()
        criterion.train()

    return Stage(model, CoupledBranches(model), None, loss_fn, train_mode, extra=criterion), dataset
