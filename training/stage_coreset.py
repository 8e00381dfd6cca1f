"""``coreset`` stage: FaceCoresetNet set aggregation on a frozen backbone (REFERENCE.md §6).

The backbone (``model.name`` + ``model.args``, weights from ``coreset.backbone``: a run, checkpoint
or weights file) is frozen in eval mode. Training data are templates: each holds 1..``max_size``
images of one identity, drawn by :class:`~mrface.training.templates.TemplateBatchSampler`
(deterministic under the seed, exact on resume). Per micro-batch of B padded templates
(images (B, W, 3, S, S), labels (B, W) with -1 at padding) the recipe's ``augment`` runs on the
images, the backbone embeds the real ones without gradient, and the
:class:`~mrface.models.FaceCoresetNet` aggregator (Gumbel-FPS coreset of K=3, self- and
cross-attention) turns each template into one embedding; its unit vector times its norm goes to
an AdaFace head (s=48, m=0.8, h=0.333 in the paper recipe) that reads the norm as quality. The
aggregator and the head train. Gumbel noise comes from a generator seeded by (seed, step,
micro-batch, rank), so resumed runs draw the same picks.

The saved model (:class:`CoresetModel`, architecture ``facecoresetnet``) is backbone + aggregator;
rebuild it with :func:`load_coreset_model`.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from mrface.models import FaceCoresetNet, FaceModel, ModelMetadata, get_model, load_weights
from mrface.models.checkpoint import read_metadata
from mrface.training.augment import ResolutionAugment
from mrface.training.config import TrainConfig
from mrface.training.data import build_dataset, dataset_classes
from mrface.training.distributed import DistEnv
from mrface.training.frozen import load_frozen, trunk_arguments, trunk_weights
from mrface.training.stages import Stage, _make_head
from mrface.training.templates import PAD_LABEL, TemplateBatchSampler, TemplateDataset, seeded_generator

ARCHITECTURE = "facecoresetnet"
_GUMBEL_STREAM = 3


class CoresetModel(FaceModel):
    """A frozen face backbone + a FaceCoresetNet aggregator: a template of images -> one embedding.

    ``forward(x, lengths=None, generator=None)``: x (B, N, 3, S, S) padded templates with ``lengths``
    (B,) in [1, N] (slots past a length are ignored), or (B, 3, S, S) single faces (templates of one)
    -> (B, D) template embeddings: the aggregator's unit vector times its norm (the quality an AdaFace
    head reads). ``generator`` draws the Gumbel noise in training mode.
    """

    def __init__(self, backbone: FaceModel, aggregator: FaceCoresetNet) -> None:
        super().__init__()
        if aggregator.dim != backbone.embedding_size:
            raise ValueError(f"aggregator dim {aggregator.dim} != backbone embedding size {backbone.embedding_size}")
        self.backbone, self.aggregator = backbone, aggregator
        self.input_size, self.embedding_size = backbone.input_size, backbone.embedding_size

    @torch.no_grad()
    def image_features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """images (M, 3, S, S) -> (unit features (M, D) float32, norms (M,) float32 > 0); no gradient."""
        features = self.backbone(images).float()
        norms = features.norm(dim=1).clamp_min(1e-6)
        return features / norms[:, None], norms

    def forward(self, x: Tensor, lengths: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        if x.dim() == 4:
            x, lengths = x[:, None], torch.ones(x.shape[0], dtype=torch.int64, device=x.device)
        if x.dim() != 5 or lengths is None:
            raise ValueError(f"CoresetModel: need (B, N, 3, S, S) + lengths or (B, 3, S, S), got {tuple(x.shape)}")
        b, n = x.shape[:2]
        valid = torch.arange(n, device=x.device)[None] < lengths.to(x.device)[:, None]
        unit, norms = self.image_features(x[valid])
        features = unit.new_zeros(b, n, unit.shape[1])
        features[valid] = unit
        all_norms = norms.new_ones(b, n)  # padding: norm 1, never picked or attended to
        all_norms[valid] = norms
        template, norm = self.aggregator(features, all_norms, lengths, generator)
        return template * norm[:, None]


def coreset_arguments(cfg: TrainConfig, backbone: FaceModel) -> dict[str, Any]:
    """The JSON arguments that rebuild a CoresetModel (:func:`build_coreset_model`)."""
    meta = backbone.metadata
    c = cfg.coreset
    return {"backbone": meta.architecture, "backbone_args": dict(meta.arguments), "k": c.k, "heads": c.heads,
            "gamma": c.gamma, "tau": c.tau, "dropout": c.dropout}  # fmt: skip


def build_coreset_model(arguments: dict[str, Any]) -> CoresetModel:
    """A CoresetModel (random aggregator, backbone as built by get_model) with its metadata attached."""
    args = dict(arguments)
    backbone = get_model(args.pop("backbone"), **args.pop("backbone_args"))
    model = CoresetModel(backbone, FaceCoresetNet(backbone.embedding_size, **args))
    meta = backbone.metadata
    model.metadata = ModelMetadata(architecture=ARCHITECTURE, arguments=dict(arguments), input_size=meta.input_size,
                                   color_order=meta.color_order, mean=meta.mean, std=meta.std,
                                   embedding_size=model.embedding_size, normalized_output=False,
                                   alignment=meta.alignment, resolutions=(meta.input_size,))  # fmt: skip
    return model


def load_coreset_model(path: str | os.PathLike) -> CoresetModel:
    """A trained CoresetModel from its ``model.safetensors`` (CPU, eval mode)."""
    meta = read_metadata(path)
    if meta.architecture != ARCHITECTURE:
        raise ValueError(f"{path}: holds a {meta.architecture!r} model, not {ARCHITECTURE!r}")
    model = build_coreset_model(meta.arguments)
    load_weights(model, path)
    return model.eval()


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
    head = _make_head(cfg, model.embedding_size, num_classes)
    augment = ResolutionAugment(cfg.augment, cfg.seed, env.rank, env.world_size, cfg.optim.accumulate)

    def loss_fn(net: nn.Module, images: Tensor, labels: Tensor, step: int, micro: int) -> tuple[Tensor, dict]:
        """images (B, W, 3, S, S), labels (B, W) (-1 at padding) -> AdaFace loss of the B template embeddings."""
        b, w = labels.shape
        images = augment(images.flatten(0, 1), step, micro).unflatten(0, (b, w))
        lengths = (labels != PAD_LABEL).sum(1)
        generator = seeded_generator(cfg.seed, _GUMBEL_STREAM, step, micro, env.rank)
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
