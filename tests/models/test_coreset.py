"""FaceCoresetNet aggregator (invariances, masks, gradients) and IJB template pooling vs a slow loop."""

from __future__ import annotations

import itertools

import pytest
import torch

from mrface.models.coreset import FaceCoresetNet, sinusoidal_norm_encoding
from mrface.models.template_pooling import pool_templates

DIM = 32


def make_sets(sets: int = 4, max_len: int = 9, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    features = torch.nn.functional.normalize(torch.randn(sets, max_len, DIM, generator=g), dim=-1)
    norms = torch.rand(sets, max_len, generator=g) * 30 + 5
    lengths = torch.tensor([max_len, 2, 5, 1][:sets])
    return features, norms, lengths


@pytest.fixture
def model() -> FaceCoresetNet:
    torch.manual_seed(0)
    return FaceCoresetNet(dim=DIM, k=3, heads=4, gamma=0.5).eval()


def test_output_is_unit_vector_with_its_norm(model):
    features, norms, lengths = make_sets()
    emb, norm = model(features, norms, lengths)
    assert emb.shape == (4, DIM) and norm.shape == (4,)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(4), atol=1e-6)
    assert torch.all(norm > 0) and torch.isfinite(emb).all()


def test_permutation_invariance(model):
    features, norms, lengths = make_sets()
    emb, norm = model(features, norms, lengths)
    g = torch.Generator().manual_seed(1)
    f2, n2 = features.clone(), norms.clone()
    for b, n in enumerate(lengths.tolist()):
        perm = torch.randperm(n, generator=g)
        f2[b, :n], n2[b, :n] = features[b, perm], norms[b, perm]
    emb2, norm2 = model(f2, n2, lengths)
    assert torch.allclose(emb, emb2, atol=1e-5) and torch.allclose(norm, norm2, rtol=1e-5)


def test_padding_is_never_attended(model):
    features, norms, lengths = make_sets()
    emb, norm = model(features, norms, lengths)
    extra = 6
    g = torch.Generator().manual_seed(2)
    f2 = torch.cat([features, 100 * torch.randn(4, extra, DIM, generator=g)], 1)
    n2 = torch.cat([norms, torch.full((4, extra), 1e3)], 1)
    for b, n in enumerate(lengths.tolist()):  # also scramble the existing padding
        f2[b, n:] = 50 * torch.randn(f2.shape[1] - n, DIM, generator=g)
        n2[b, n:] = 500.0
    emb2, norm2 = model(f2, n2, lengths)
    assert torch.allclose(emb, emb2, atol=1e-5) and torch.allclose(norm, norm2, rtol=1e-5)


def test_single_item_set_equals_that_item_alone(model):
    features, norms, lengths = make_sets()
    emb, _ = model(features, norms, lengths)
    alone, _ = model(features[3:4, :1], norms[3:4, :1], torch.tensor([1]))
    assert torch.allclose(emb[3], alone[0], atol=1e-5)


def test_training_mode_gradients_and_seeded_noise():
    torch.manual_seed(0)
    model = FaceCoresetNet(dim=DIM, k=3, heads=4, gamma=0.01).train()
    features, norms, lengths = make_sets()
    features.requires_grad_()
    emb, norm = model(features, norms, lengths, torch.Generator().manual_seed(3))
    emb_again, _ = model(features, norms, lengths, torch.Generator().manual_seed(3))
    assert torch.equal(emb, emb_again)
    (emb[:, 0].sum() + norm.sum()).backward()
    assert model.gamma.grad is not None and model.gamma.grad.abs() > 0
    assert features.grad is not None and torch.isfinite(features.grad).all()
    assert all(p.grad is not None for p in model.self_attn.parameters())


def test_norm_encoding_closed_form():
    enc = sinusoidal_norm_encoding(torch.tensor([0.0, 2.0]), 4)
    s, c = torch.sin, torch.cos
    angles = torch.tensor([2.0, 0.02])  # frequencies 1 and 10000**(-2/4)
    expected = torch.stack([torch.tensor([0.0, 0.0, 1.0, 1.0]), torch.cat([s(angles), c(angles)])])
    assert torch.allclose(enc, expected, atol=1e-6)


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="divisible by heads"):
        FaceCoresetNet(dim=30, heads=4)
    with pytest.raises(ValueError, match=r"features must be \(B, N, 32\)"):
        FaceCoresetNet(dim=DIM, heads=4)(torch.randn(2, 3, 16), torch.ones(2, 3), torch.tensor([3, 3]))


# ------------------------------------------------------------------------------ template pooling
def slow_pool(features, template_ids, media_ids, flip, faceness, norm_weighting, faceness_weighting):
    result = {}
    for t in sorted(set(template_ids.tolist())):
        total = torch.zeros(features.shape[1], dtype=torch.float64)
        for m in sorted({int(media_ids[i]) for i in range(len(template_ids)) if int(template_ids[i]) == t}):
            members = [i for i in range(len(template_ids)) if int(template_ids[i]) == t and int(media_ids[i]) == m]
            feats = []
            for i in members:
                v = features[i].double() + (flip[i].double() if flip is not None else 0)
                if not norm_weighting:
                    v = v / v.norm()
                if faceness_weighting:
                    v = v * float(faceness[i])
                feats.append(v)
            total += sum(feats) / len(feats)
        result[t] = total / total.norm()
    return result


@pytest.mark.parametrize("flip,norm_weighting,faceness_weighting", list(itertools.product([False, True], repeat=3)))
def test_template_pooling_matches_slow_loop(flip, norm_weighting, faceness_weighting):
    g = torch.Generator().manual_seed(0)
    n = 60
    features = torch.randn(n, 8, generator=g) * (torch.rand(n, 1, generator=g) * 5 + 0.1)
    flip_f = torch.randn(n, 8, generator=g) if flip else None
    template_ids = torch.randint(100, 110, (n,), generator=g) * 7
    media_ids = torch.randint(0, 4, (n,), generator=g)  # media ids are reused across templates
    faceness = torch.rand(n, generator=g) + 0.1
    out = pool_templates(features, template_ids, media_ids, flip_f, faceness, norm_weighting, faceness_weighting)
    expected = slow_pool(features, template_ids, media_ids, flip_f, faceness, norm_weighting, faceness_weighting)
    assert out.template_ids.tolist() == sorted(expected)
    for row, t in zip(out.templates, out.template_ids.tolist(), strict=True):
        assert torch.allclose(row.double(), expected[t], atol=1e-6)


def test_template_pooling_bad_input():
    with pytest.raises(ValueError, match="media_ids must be an integer tensor"):
        pool_templates(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="faceness_weighting needs faceness"):
        pool_templates(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long),
                       faceness_weighting=True)  # fmt: skip
