"""``coreset`` stage: FaceCoresetNet set aggregation on a frozen backbone (REFERENCE.md §6).

The backbone (``model.name`` + ``model.args``, weights from ``coreset.backbone``: a run, checkpoint
or weights file) is frozen in eval mode. Training data are templates: each holds 1..``max_size``
images of one identity, drawn by :class:`~mrface.training.templates.TemplateBatchSampler`
(deterministic under the seed, exact on resume). Per micro-batch of B padded templates
(images (B, W, 3, S, S), labels (B, W) with -1 at padding) the recipe's ``augment`` runs on the
images, the backbone embeds the real ones without gradient, and the
:class:`~mrface.models.FaceCoresetNet` aggregator (the public TemplateAggregateModel: Gumbel-FPS
coreset of K=3 raw features, norm encodings, self- and cross-attention refining the picks, their mean)
turns each template into one embedding; its unit vector times its norm goes to
an AdaFace head (s=48, m=0.8, h=0.333 in the paper recipe) that reads the norm as quality. The
aggregator and the head train. Gumbel noise and the decoder's dropout masks come from generators seeded by
(seed, step, micro-batch, rank), so resumed runs draw the same picks and masks.

The saved model (:class:`~mrface.models.CoresetModel`, registered architecture ``facecoresetnet``)
is backbone + aggregator; :func:`mrface.models.load_model` rebuilds it.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from mrface.models import FaceModel, get_model
from mrface.models.coreset_template_model import ARCHITECTURE, CoresetModel
from mrface.training.config import TrainConfig
from mrface.training.data import build_dataset, dataset_classes
from mrface.training.distributed import DistEnv
from mrface.training.stages.base import Stage, make_augment, make_head
from mrface.training.stages.frozen import load_frozen, trunk_arguments, trunk_weights
from mrface.training.templates import PAD_LABEL, TemplateBatchSampler, TemplateDataset, seeded_generator

_GUMBEL_STREAM = 3
_DROPOUT_STREAM = 4


def coreset_arguments(cfg: TrainConfig, backbone: FaceModel) -> dict[str, Any]:
    """The JSON arguments that rebuild a CoresetModel (:func:`build_coreset_model`)."""
    meta = backbone.metadata
    c = cfg.coreset
    return {
        "backbone": meta.architecture,
        "backbone_args": dict(meta.arguments),
        "k": c.k,
        "heads": c.heads,
        "gamma": c.gamma,
        "tau": c.tau,
        "dropout": c.dropout,
        "sampling": c.sampling,
    }


def build_coreset_model(arguments: dict[str, Any]) -> CoresetModel:
    """A CoresetModel (random aggregator, backbone as built by get_model) with its metadata attached.

    Same as ``get_model("facecoresetnet", **arguments)``.
    """
    model = get_model(ARCHITECTURE, **arguments)
    assert isinstance(model, CoresetModel)
    return model


def coreset_stage(cfg: TrainConfig, env: DistEnv, dataset: Dataset | None) -> tuple[Stage, Dataset]:
    """The set-training stage and its template dataset (over the recipe's data unless ``dataset`` is given)."""
    state, meta, source = trunk_weights(cfg.coreset.backbone)
    backbone = get_model(cfg.model.name, **{**trunk_arguments(meta), **dict(cfg.model.args)})
    model = build_coreset_model(coreset_arguments(cfg, backbone))
    load_frozen(model.backbone, state, source)
    if dataset is None:
        dataset, num_classes = build_dataset(cfg.data, cfg.data.color or model.metadata.color_order)
    else:
        num_classes = dataset_classes(dataset)
    templates = TemplateDataset(dataset, num_classes)
    head = make_head(cfg, model.embedding_size, num_classes)
    meta = model.metadata
    augment = make_augment(cfg, env, meta)

    def loss_fn(net: nn.Module, images: Tensor, labels: Tensor, step: int, micro: int) -> tuple[Tensor, dict]:
        """images (B, W, 3, S, S), labels (B, W) (-1 at padding) -> AdaFace loss of the B template embeddings."""
        b, w = labels.shape
        images = augment(images.flatten(0, 1), step, micro).unflatten(0, (b, w))
        lengths = (labels != PAD_LABEL).sum(1)
        generator = seeded_generator(cfg.seed, _GUMBEL_STREAM, step, micro, env.rank)
        # Decoder dropout draws from the global RNG: seed it per (step, micro-batch, rank) inside a fork so the
        # masks are exact on resume and the caller's RNG stream is untouched.
        dropout_seed = int(
            torch.randint(0, 2**62, (1,), generator=seeded_generator(cfg.seed, _DROPOUT_STREAM, step, micro, env.rank))
        )
        devices = [env.device] if env.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, device_type=env.device.type if devices else "cuda"):
            torch.manual_seed(dropout_seed)
            loss, logs = head(net(images, lengths, generator), labels[:, 0])
        logs["coreset/gamma"] = model.aggregator.gamma.detach()
        logs["coreset/template_size"] = lengths.float().mean()
        return loss, logs

    def train_mode() -> None:
        model.train()
        model.backbone.eval()
        head.train()

    sampler = functools.partial(TemplateBatchSampler, templates.index, cfg.coreset.max_size, cfg.coreset.size_mode)
    return Stage(model, model, head, loss_fn, train_mode, sampler=sampler), templates
