"""IJB-style template pooling (REFERENCE.md §9), vectorised over all templates with segment sums.

Per image: feature (+ its flipped-image feature when given), L2-normalised unless norms are kept as
quality weights, times the detector (faceness) score when asked; then the mean over each (template,
media) pair, the sum over each template's media, and an L2 normalisation.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class PooledTemplates(NamedTuple):
    """templates: (T, D) unit vectors; template_ids: (T,) the sorted unique template ids."""

    templates: torch.Tensor
    template_ids: torch.Tensor


def _segment_mean(values: torch.Tensor, segment: torch.Tensor, count: int) -> torch.Tensor:
    sums = values.new_zeros(count, values.shape[1]).index_add_(0, segment, values)
    sizes = torch.bincount(segment, minlength=count).clamp_min(1).to(values.dtype)
    return sums / sizes[:, None]


def pool_templates(
    features: torch.Tensor,
    template_ids: torch.Tensor,
    media_ids: torch.Tensor,
    flip_features: torch.Tensor | None = None,
    faceness: torch.Tensor | None = None,
    norm_weighting: bool = False,
    faceness_weighting: bool = False,
) -> PooledTemplates:
    """Pool per-image features (N, D) into one unit feature per template.

    Args:
        features: (N, D) image features; template_ids, media_ids: (N,) integer ids.
        flip_features: (N, D) features of the flipped images, added to ``features`` (flip fusion).
        faceness: (N,) detector scores, used when ``faceness_weighting``.
        norm_weighting: keep each image feature's norm (quality weight) instead of L2-normalising it.
        faceness_weighting: multiply each image feature by its detector score.
    Returns:
        :class:`PooledTemplates` (templates (T, D) unit, template_ids (T,) sorted).
    """
    if features.dim() != 2:
        raise ValueError(f"pool_templates: features must be (N, D), got {tuple(features.shape)}")
    n = features.shape[0]
    for name, ids in (("template_ids", template_ids), ("media_ids", media_ids)):
        if ids.shape != (n,) or ids.dtype.is_floating_point:
            raise ValueError(f"pool_templates: {name} must be an integer tensor of shape ({n},)")
    if flip_features is not None and flip_features.shape != features.shape:
        raise ValueError(f"pool_templates: flip_features must have shape {tuple(features.shape)}")
    if faceness_weighting and (faceness is None or faceness.shape != (n,)):
        raise ValueError(f"pool_templates: faceness_weighting needs faceness of shape ({n},)")
    x = features if flip_features is None else features + flip_features
    if not norm_weighting:
        x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    if faceness_weighting:
        x = x * faceness.to(x)[:, None]
    device = features.device
    tids, template_of_image = torch.unique(template_ids.to(device), return_inverse=True)
    pairs, media_of_image = torch.unique(
        torch.stack([template_of_image, media_ids.to(device)], 1), dim=0, return_inverse=True
    )
    media = _segment_mean(x, media_of_image, pairs.shape[0])
    templates = x.new_zeros(tids.shape[0], x.shape[1]).index_add_(0, pairs[:, 0], media)
    return PooledTemplates(templates / templates.norm(dim=1, keepdim=True).clamp_min(1e-12), tids)
