"""AdaFace-style batch augmentation (crop, photometric, independent down/up filters) against PIL and cv2."""

from __future__ import annotations

import math
import random

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance

from mrface.training.augment import ResolutionAugment, apply_crop, apply_photometric, crop_boxes
from mrface.training.config import AugmentConfig


def _torchvision_mean_area(height, width, n=4000):
    """Mean kept-area fraction of torchvision RandomResizedCrop.get_params (its loop, in plain Python)."""
    rnd = random.Random(0)
    total = 0.0
    for _ in range(n):
        h, w = height, width  # fallback: whole image (square input)
        for _ in range(10):
            target = height * width * rnd.uniform(0.2, 1.0)
            aspect = math.exp(rnd.uniform(math.log(3 / 4), math.log(4 / 3)))
            cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < cw <= width and 0 < ch <= height:
                h, w = ch, cw
                break
        total += h * w / (height * width)
    return total / n


def test_crop_boxes_follow_random_resized_crop_and_crop_zeroes_outside():
    g = torch.Generator().manual_seed(0)
    boxes = crop_boxes(500, 112, 112, g)
    top, left, h, w = boxes.T
    assert bool(((top >= 0) & (left >= 0) & (top + h <= 112) & (left + w <= 112)).all())
    area = (h * w).double() / 112**2
    # RandomResizedCrop: area fraction in [0.2, 1] and aspect in [3/4, 4/3] up to the rounding of h and w
    assert area.min() > 0.2 - 0.02 and area.max() <= 1.0
    aspect = w.double() / h.double()
    assert aspect.min() > 0.75 - 0.03 and aspect.max() < 4 / 3 + 0.03
    assert area.mean() == pytest.approx(_torchvision_mean_area(112, 112), abs=0.02)
    x = torch.ones(1, 3, 6, 5)
    out = apply_crop(x, torch.tensor([[1, 2, 3, 2]]))
    expected = torch.zeros(6, 5)
    expected[1:4, 2:4] = 1  # rows 1..3, columns 2..3, kept in place (AdaFace pastes the crop back)
    torch.testing.assert_close(out[0, 0], expected)


@pytest.mark.parametrize(
    "op, enhancer", [(0, ImageEnhance.Brightness), (1, ImageEnhance.Contrast), (2, ImageEnhance.Color)]
)
def test_photometric_adjustments_match_pil(op, enhancer):
    """torchvision's ColorJitter on PIL images calls ImageEnhance; each adjustment alone, factor 0.6 and 1.4."""
    rng = np.random.default_rng(op)
    img = rng.integers(0, 256, (16, 12, 3), dtype=np.uint8)
    x01 = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    order = torch.tensor([[op, 3, 3, 3]])  # 3 = hue: skipped
    for f in (0.6, 1.4):
        factors = torch.full((1, 3), f)
        ours = apply_photometric(x01, order, factors, (0, 1, 2))[0].permute(1, 2, 0).numpy() * 255
        pil = np.asarray(enhancer(Image.fromarray(img)).enhance(f), dtype=np.float64)
        assert np.abs(ours - pil).max() <= 1.5  # PIL rounds to uint8 (and its contrast mean to an integer)


def test_adaface_resolution_draws_down_and_up_filters_independently():
    """Each degraded image equals cv2.resize down with one of the five filters and back up with one of them;
    over a batch the pairs differ (down != up), Lanczos included."""
    names = {
        "nearest": cv2.INTER_NEAREST,
        "bilinear": cv2.INTER_LINEAR,
        "area": cv2.INTER_AREA,
        "bicubic": cv2.INTER_CUBIC,
        "lanczos": cv2.INTER_LANCZOS4,
    }
    up_names = {**names, "area": cv2.INTER_LINEAR}  # area enlargement: bilinear (documented departure)
    cfg = AugmentConfig(kind="adaface", min_size=8, prob=1.0, flip=False)
    rng = np.random.default_rng(0)
    imgs = rng.random((24, 16, 16, 3)).astype(np.float32)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()
    out = ResolutionAugment(cfg, seed=3, rank=0, world_size=1, accumulate=1)(x, step=0, micro=0)
    pairs = set()
    for n in range(24):
        got = out[n].permute(1, 2, 0).numpy()
        if np.allclose(got, imgs[n]):
            continue  # side 16: unchanged
        found = [
            (d, u)
            for side in range(8, 16)
            for d, di in names.items()
            for u, ui in up_names.items()
            if np.abs(
                cv2.resize(cv2.resize(imgs[n], (side, side), interpolation=di), (16, 16), interpolation=ui) - got
            ).max()
            < 2e-4
        ]
        assert found, f"image {n}: no cv2 down/up filter pair reproduces it"
        pairs |= {found[0]}
    assert any(d != u for d, u in pairs) and any("lanczos" in p for p in pairs)


def test_crop_and_photometric_options_are_reproducible_and_rank_split_invariant():
    cfg = AugmentConfig(kind="none", flip=True, crop_prob=0.5, photometric_prob=0.5)
    x = torch.rand(8, 3, 20, 20) * 2 - 1
    whole = ResolutionAugment(cfg, 1, 0, 1, 1)(x, 5, 0)
    halves = [ResolutionAugment(cfg, 1, r, 2, 1)(x[4 * r : 4 * r + 4], 5, 0) for r in range(2)]
    torch.testing.assert_close(torch.cat(halves), whole)
    changed = (whole - x.flip(-1)).abs().amax(dim=(1, 2, 3)) > 1e-6
    assert 0 < int(changed.sum()) < 8
    black = -1.0  # (0 - 0.5) / 0.5: the crop's zero pixels in the model's normalisation
    assert bool((whole == black).any())
    assert float(whole.min()) >= -1 - 1e-6 and float(whole.max()) <= 1 + 1e-6  # pixels stay in [0, 255]


def test_no_decay_bn_puts_exactly_the_batchnorm_parameters_in_a_zero_decay_group():
    """AdaFace train_val.py split_parameters: BatchNorm weights and biases without decay, the rest with 5e-4.
    In the InsightFace iResNet layout those are the parameters named bn*, downsample.1.* and features.*."""
    from mrface.models import get_model
    from mrface.training.config import TrainConfig
    from mrface.training.trainer import _build_optimizer, batchnorm_parameter_ids

    net = get_model("iresnet_tiny")
    cfg = TrainConfig()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = _build_optimizer(cfg, params, batchnorm_parameter_ids(net))
    by_id = {id(p): n for n, p in net.named_parameters()}
    decay, no_decay = ({by_id[id(p)] for p in g["params"]} for g in opt.param_groups)
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 0.0]
    expected = {
        n
        for n in by_id.values()
        if n.split(".")[-2].startswith("bn") or ".downsample.1." in n or n.startswith("features.")
    } & {by_id[id(p)] for p in params}
    assert no_decay == expected and decay.isdisjoint(expected) and decay
