"""``CoresetModel``: a frozen face backbone + a :class:`~mrface.models.coreset_aggregator.FaceCoresetNet` aggregator.

Registered here as ``facecoresetnet``::

    model = get_model("facecoresetnet", backbone="iresnet50", backbone_args={}, k=3, heads=8)
    emb = model(templates, lengths)   # (B, N, 3, S, S) padded templates + (B,) lengths -> (B, D)
    emb = model(faces)                # (B, 3, S, S): templates of one face -> (B, D)

The backbone is rebuilt with ``get_model(backbone, **backbone_args)``; the remaining arguments go to
:class:`FaceCoresetNet` (``k``, ``heads``, ``gamma``, ``tau``, ``dropout``, ``sampling``). The model's metadata is
derived from the backbone's (:func:`coreset_metadata`): same input size, colour order, mean/std and
alignment; embedding size D; output not normalised (its norm is the template quality).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mrface.models.base import FaceModel
from mrface.models.coreset_aggregator import FaceCoresetNet
from mrface.models.metadata import ModelMetadata
from mrface.models.registry import get_model, register_model

ARCHITECTURE = "facecoresetnet"


class CoresetModel(FaceModel):
    """A frozen face backbone + a FaceCoresetNet aggregator: a template of images -> one embedding.

    ``forward(x, lengths=None, generator=None)``: x (B, N, 3, S, S) padded templates with ``lengths``
    (B,) in [1, N] (slots past a length are ignored), or (B, 3, S, S) single faces (templates of one)
    -> (B, D) template embeddings: the aggregator's unit vector times its norm (the quality an AdaFace
    head reads). ``generator`` draws the Gumbel noise (training, and inference with public sampling).
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
        """x (B, N, 3, S, S) + lengths (B,), or x (B, 3, S, S) -> template embeddings (B, D) float32."""
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


def coreset_metadata(model: CoresetModel, arguments: dict[str, Any] | None = None) -> ModelMetadata:
    """Metadata of ``model`` derived from its backbone's (preprocessing, input size, alignment).

    ``arguments`` are the ``get_model("facecoresetnet", **arguments)`` keywords that rebuild it
    (:func:`mrface.models.get_model` fills them in).
    """
    backbone = model.backbone
    meta = backbone.metadata if backbone.metadata is not None else backbone.default_metadata()
    return ModelMetadata(
        architecture=ARCHITECTURE,
        arguments=dict(arguments or {}),
        input_size=meta.input_size,
        color_order=meta.color_order,
        mean=meta.mean,
        std=meta.std,
        embedding_size=model.embedding_size,
        normalized_output=False,
        alignment=meta.alignment,
        resolutions=(meta.input_size,),
    )


@register_model(
    ARCHITECTURE,
    derived_metadata=True,
    description="frozen backbone + FaceCoresetNet set aggregator (template -> one embedding)",
)
def _facecoresetnet(backbone: str, backbone_args: dict[str, Any] | None = None, **aggregator: Any) -> FaceModel:
    """``get_model(backbone, **backbone_args)`` + ``FaceCoresetNet(D, **aggregator)`` (k/heads/gamma/tau/dropout/
    sampling).

    Input (B, N, 3, S, S) padded templates + lengths (B,), or (B, 3, S, S) faces -> (B, D) embeddings.
    """
    if backbone == ARCHITECTURE:
        raise ValueError(f"get_model({ARCHITECTURE!r}): the backbone must be a single-image face model")
    trunk = get_model(backbone, **(backbone_args or {}))
    model = CoresetModel(trunk, FaceCoresetNet(trunk.embedding_size, **aggregator))
    model.metadata = coreset_metadata(model)
    return model
