"""FaceCoresetNet aggregator against a hand-built computation of the public formulas (ligaripash/FaceCoresetNet
``net_template.py``: ``get_proposal_pos_embed``, ``TransformerDecoderLayerOrig``, ``TemplateAggregateModel``)
written from the public state-dict names; the public-checkpoint import; invariances, masks, gradients; and IJB
template pooling vs a slow loop."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from mrface.models import CheckpointError, import_facecoresetnet
from mrface.models.coreset_aggregator import FaceCoresetNet, norm_encoding
from mrface.models.template_pooling import pool_templates

DIM = 32
HEADS = 4


def make_sets(sets: int = 4, max_len: int = 9, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    features = torch.nn.functional.normalize(torch.randn(sets, max_len, DIM, generator=g), dim=-1)
    norms = torch.rand(sets, max_len, generator=g) * 30 + 5
    lengths = torch.tensor([max_len, 2, 5, 1][:sets])
    return features, norms, lengths


@pytest.fixture
def model() -> FaceCoresetNet:
    torch.manual_seed(0)
    return FaceCoresetNet(dim=DIM, k=3, heads=HEADS, gamma=0.5).eval()


# ------------------------------------------------------------------ the public network, by hand
def public_state(dim: int = DIM, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict in the public lightning naming: aggregator (used and unused parts) + head."""
    g = torch.Generator().manual_seed(seed)
    agg = {
        "gamma": torch.tensor(0.3),
        "tau": torch.tensor(0.0),
        "feature_norm_normalizer": torch.tensor(-2.9),
        "ur_center": torch.randn(dim, generator=g),
        "dist_from_ur_center_norm_size_balance": torch.tensor(-1.4),
        "quality_measure.weight": torch.randn(1, dim, generator=g),
        "quality_measure.bias": torch.randn(1, generator=g),
        "pos_trans_norm.weight": 1 + 0.3 * torch.randn(dim, generator=g),
        "pos_trans_norm.bias": 0.3 * torch.randn(dim, generator=g),
    }
    for attn in ("self_attn1", "self_attn2", "multihead_attn1", "multihead_attn2", "multihead_attn3"):
        agg[f"decoder_layer1.{attn}.in_proj_weight"] = torch.randn(3 * dim, dim, generator=g) / math.sqrt(dim)
        agg[f"decoder_layer1.{attn}.in_proj_bias"] = 0.1 * torch.randn(3 * dim, generator=g)
        agg[f"decoder_layer1.{attn}.out_proj.weight"] = torch.randn(dim, dim, generator=g) / math.sqrt(dim)
        agg[f"decoder_layer1.{attn}.out_proj.bias"] = 0.1 * torch.randn(dim, generator=g)
    for norm in ("norm1", "norm2", "norm3", "norm4"):
        agg[f"decoder_layer1.{norm}.weight"] = 1 + 0.3 * torch.randn(dim, generator=g)
        agg[f"decoder_layer1.{norm}.bias"] = 0.3 * torch.randn(dim, generator=g)
    state = {f"aggregate_model.{k}": v for k, v in agg.items()}
    state["head.kernel"] = torch.randn(dim, 5, generator=g)
    state["head.t"] = torch.tensor(0.2)
    return state


def ref_encoding(x: torch.Tensor, dim: int) -> torch.Tensor:
    """get_proposal_pos_embed element by element: angle_i = 2π x / 10000**(2 floor(i/2) / dim); sin at even i."""
    out = torch.empty(*x.shape, dim, dtype=torch.float64)
    for i in range(dim):
        angle = x.double() * 2 * math.pi / 10000 ** (2 * (i // 2) / dim)
        out[..., i] = torch.sin(angle) if i % 2 == 0 else torch.cos(angle)
    return out


def ref_layer_norm(x, w, b, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * w.double() + b.double()


def ref_attention(q, k, v, s, prefix, heads):
    """Multi-head attention from the packed in_proj / out_proj tensors; q (L, D), k and v (S, D)."""
    d = q.shape[-1]
    w, b = s[prefix + ".in_proj_weight"].double(), s[prefix + ".in_proj_bias"].double()
    qp, kp, vp = q @ w[:d].T + b[:d], k @ w[d : 2 * d].T + b[d : 2 * d], v @ w[2 * d :].T + b[2 * d :]
    hd = d // heads
    out = []
    for h in range(heads):
        cols = slice(h * hd, (h + 1) * hd)
        scores = qp[:, cols] @ kp[:, cols].T / math.sqrt(hd)
        out.append(torch.softmax(scores, dim=-1) @ vp[:, cols])
    return torch.cat(out, -1) @ s[prefix + ".out_proj.weight"].double().T + s[prefix + ".out_proj.bias"].double()


def ref_picks(raw: torch.Tensor, norms: torch.Tensor, k: int, gamma: float) -> list[int]:
    """Farthest point sampling as arg-max: highest norm, then max of the running min of n**gamma (1 - cos) / 2."""
    picks = [int(norms.argmax())]
    unit = raw / raw.norm(dim=-1, keepdim=True)
    running = None
    for _ in range(min(k, len(norms)) - 1):
        dist = norms.double() ** gamma * (1 - unit @ unit[picks[-1]]) / 2
        running = dist if running is None else torch.minimum(running, dist)
        picks.append(int(running.argmax()))
    return picks


def ref_template(features, norms, k, s, heads=HEADS):
    """One set (n, D) unit features + (n,) norms through the public TemplateAggregateModel (eval, no dropout)."""
    a = {key[len("aggregate_model.") :]: v for key, v in s.items() if key.startswith("aggregate_model.")}
    raw = features.double() * norms.double()[:, None]
    core = raw[ref_picks(raw, norms, k, float(a["gamma"]))]
    ln_w, ln_b = a["pos_trans_norm.weight"], a["pos_trans_norm.bias"]
    enc_items = ref_layer_norm(ref_encoding(norms, raw.shape[1]), ln_w, ln_b)
    enc_core = ref_layer_norm(ref_encoding(core.norm(dim=-1), raw.shape[1]), ln_w, ln_b)
    q = core + enc_core
    q = ref_layer_norm(
        q + ref_attention(q, q, q, a, "decoder_layer1.self_attn1", heads),
        a["decoder_layer1.norm1.weight"],
        a["decoder_layer1.norm1.bias"],
    )
    ca = ref_attention(q, raw + enc_items, raw, a, "decoder_layer1.multihead_attn1", heads)
    delta = ref_layer_norm(core + ca, a["decoder_layer1.norm2.weight"], a["decoder_layer1.norm2.bias"])
    agg = (core + delta).mean(0)
    return agg / agg.norm(), agg.norm()


@pytest.mark.parametrize("sampling", ["public", "masked"])
def test_forward_is_the_public_network(sampling, tmp_path):
    """Imported public weights: padded sets of 1..9 items give the hand-built public output of each set alone."""
    state = public_state()
    path = tmp_path / "FaceCoresetNet.ckpt"
    torch.save({"state_dict": state, "epoch": 3}, path)
    model = FaceCoresetNet(dim=DIM, k=3, heads=HEADS, gamma=0.01, sampling=sampling).eval()
    import_facecoresetnet(model, path)
    features, norms, lengths = make_sets()
    emb, norm = model(features, norms, lengths)
    for b, n in enumerate(lengths.tolist()):
        ref_emb, ref_norm = ref_template(features[b, :n], norms[b, :n], 3, state)
        torch.testing.assert_close(emb[b].double(), ref_emb, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(norm[b].double(), ref_norm, rtol=1e-5, atol=1e-5)


def test_import_is_lossless_and_reports_what_it_leaves(tmp_path):
    state = public_state(seed=1)
    model = FaceCoresetNet(dim=DIM, k=3, heads=HEADS)
    report = import_facecoresetnet(model, state)
    mine = model.state_dict()
    assert set(report.loaded) == set(mine)
    names = {
        "gamma": "gamma",
        "pos_trans_norm.weight": "norm_encoding.weight",
        "decoder_layer1.self_attn1.in_proj_weight": "self_attn.in_proj_weight",
        "decoder_layer1.self_attn1.out_proj.bias": "self_attn.out_proj.bias",
        "decoder_layer1.multihead_attn1.in_proj_bias": "cross_attn.in_proj_bias",
        "decoder_layer1.multihead_attn1.out_proj.weight": "cross_attn.out_proj.weight",
        "decoder_layer1.norm1.bias": "norm_self.bias",
        "decoder_layer1.norm2.weight": "norm_cross.weight",
    }
    for public, ours in names.items():
        assert torch.equal(mine[ours], state["aggregate_model." + public]), public
    # every key of the file is accounted for: loaded (same count), unused by the public forward, or the head
    assert len(report.loaded) + len(report.unused) + len(report.head) == len(state)
    assert "aggregate_model.decoder_layer1.multihead_attn2.in_proj_weight" in report.unused
    assert "aggregate_model.ur_center" in report.unused and report.head == ["head.kernel", "head.t"]
    # a bare TemplateAggregateModel state dict imports the same way
    bare = {k[len("aggregate_model.") :]: v for k, v in state.items() if k.startswith("aggregate_model.")}
    other = FaceCoresetNet(dim=DIM, k=3, heads=HEADS)
    import_facecoresetnet(other, bare)
    assert all(torch.equal(v, mine[k]) for k, v in other.state_dict().items())


def test_import_errors(tmp_path):
    model = FaceCoresetNet(dim=DIM, k=3, heads=HEADS)
    state = public_state()
    missing = {k: v for k, v in state.items() if "norm2" not in k}
    with pytest.raises(CheckpointError, match=r"missing keys \(2\): norm_cross.weight, norm_cross.bias"):
        import_facecoresetnet(model, missing)
    with pytest.raises(CheckpointError, match="unexpected keys.*decoder_layer1.linear1.weight"):
        import_facecoresetnet(model, {**state, "aggregate_model.decoder_layer1.linear1.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="unknown keys outside aggregate_model.*optimizer_state"):
        import_facecoresetnet(model, {**state, "optimizer_state": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="shape mismatches.*norm_encoding.weight"):
        import_facecoresetnet(FaceCoresetNet(dim=16, k=3, heads=HEADS), state)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        import_facecoresetnet(model, tmp_path / "absent.ckpt")
    bad = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": state, "hook": print}, bad)
    with pytest.raises(CheckpointError, match="refused: it references print, which may run code"):
        import_facecoresetnet(model, bad)


def test_template_norm_carries_the_set_quality(model):
    """The public design: refined raw picks are averaged, so the template norm follows the input norms."""
    g = torch.Generator().manual_seed(5)
    features = torch.nn.functional.normalize(torch.randn(64, 6, DIM, generator=g), dim=-1)
    quality = torch.rand(64, 1, generator=g) * 40 + 2
    norms = quality * (0.8 + 0.4 * torch.rand(64, 6, generator=g))
    _, norm = model(features, norms, torch.full((64,), 6))
    corr = torch.corrcoef(torch.stack([norm, norms.mean(1)]))[0, 1]
    assert corr > 0.9, f"template norm vs mean input norm: correlation {corr:.3f}"


def test_public_inference_draws_noise_but_picks_the_arg_max():
    """Public inference: noise on 1e4 x logits; with distinct norms it picks what the masked arg-max picks."""
    features, norms, lengths = make_sets()
    torch.manual_seed(0)
    public = FaceCoresetNet(dim=DIM, k=3, heads=HEADS, gamma=0.5).eval()
    masked = FaceCoresetNet(dim=DIM, k=3, heads=HEADS, gamma=0.5, sampling="masked").eval()
    masked.load_state_dict(public.state_dict())
    for seed in range(3):
        a = public.select(features * norms[..., None], norms, lengths, torch.Generator().manual_seed(seed))
        b = masked.select(features * norms[..., None], norms, lengths, None)
        assert torch.equal(a.indices, b.indices)


def test_training_draws_can_repeat_a_pick_in_public_mode_only():
    """Public training draws each step over all items (gumbel_softmax over N): a pick can come back."""
    g = torch.Generator().manual_seed(0)
    features = torch.nn.functional.normalize(torch.randn(200, 4, DIM, generator=g), dim=-1)
    norms, lengths = torch.ones(200, 4), torch.full((200,), 4)
    for sampling, repeats in (("public", True), ("masked", False)):
        net = FaceCoresetNet(dim=DIM, k=3, heads=HEADS, sampling=sampling).train()
        idx = net.select(features, norms, lengths, torch.Generator().manual_seed(1)).indices
        has_repeat = (idx[:, :, None] == idx[:, None, :]).sum((1, 2)) > 3
        assert bool(has_repeat.any()) == repeats, sampling


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


@pytest.mark.parametrize("sampling", ["public", "masked"])
def test_training_mode_gradients_and_seeded_noise(sampling):
    torch.manual_seed(0)
    model = FaceCoresetNet(dim=DIM, k=3, heads=HEADS, gamma=0.01, dropout=0.0, sampling=sampling).train()
    features, norms, lengths = make_sets()
    features.requires_grad_()
    emb, norm = model(features, norms, lengths, torch.Generator().manual_seed(3))
    emb_again, _ = model(features, norms, lengths, torch.Generator().manual_seed(3))
    assert torch.equal(emb, emb_again)
    (emb[:, 0].sum() + norm.sum()).backward()
    assert model.gamma.grad is not None and model.gamma.grad.abs() > 0
    assert features.grad is not None and torch.isfinite(features.grad).all()
    assert all(p.grad is not None for p in model.self_attn.parameters())


def test_dropout_is_public_and_acts_in_training_only():
    model = FaceCoresetNet(dim=DIM, k=3, heads=HEADS)
    assert model.dropout_self.p == model.dropout_cross.p == model.self_attn.dropout == model.cross_attn.dropout == 0.1
    features, norms, lengths = make_sets()
    model.train()
    a, _ = model(features, norms, lengths, torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    b, _ = model(features, norms, lengths, torch.Generator().manual_seed(0))  # same picks, other dropout masks
    assert not torch.allclose(a, b)


def test_norm_encoding_closed_form():
    enc = norm_encoding(torch.tensor([0.0, 2.0]), 4)
    s, c = torch.sin, torch.cos
    angles = 2 * math.pi * torch.tensor([2.0, 0.02])  # frequencies 2π and 2π * 10000**(-2/4), interleaved
    expected = torch.stack(
        [torch.tensor([0.0, 1.0, 0.0, 1.0]), torch.stack([s(angles[0]), c(angles[0]), s(angles[1]), c(angles[1])])]
    )
    assert torch.allclose(enc, expected, atol=1e-5)


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="divisible by heads"):
        FaceCoresetNet(dim=30, heads=4)
    with pytest.raises(ValueError, match="sampling='fast'"):
        FaceCoresetNet(dim=DIM, heads=4, sampling="fast")
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
        pool_templates(
            torch.randn(4, 3),
            torch.zeros(4, dtype=torch.long),
            torch.zeros(4, dtype=torch.long),
            faceness_weighting=True,
        )
