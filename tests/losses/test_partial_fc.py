"""Partial FC: world size 1 against F.cross_entropy on full margin logits, sampling, state dicts,
and 2 gloo processes against one process on the concatenated batch (REFERENCE.md §5)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mrface.losses import PartialFC, get_head, reshard_centres, reshard_state_dicts, shard_range

sys.path.insert(0, str(Path(__file__).parent))
import losses_dist_worker as cases  # noqa: E402


def test_shard_range_formula():
    assert [shard_range(10, 4, r) for r in range(4)] == [(0, 3), (3, 3), (6, 2), (8, 2)]
    for c, w in [(23, 2), (100, 7), (5, 5), (1000, 8)]:
        spans = [shard_range(c, w, r) for r in range(w)]
        owned = [k for s, n in spans for k in range(s, s + n)]
        assert owned == list(range(c))
        assert max(n for _, n in spans) - min(n for _, n in spans) <= 1
    with pytest.raises(ValueError, match="num_classes"):
        shard_range(3, 4, 0)
    with pytest.raises(ValueError, match="rank"):
        shard_range(10, 2, 2)


def _reference(head: PartialFC, weight, emb, labels):
    """Plain autograd: margin logits over all classes + F.cross_entropy (+ MagFace's g)."""
    margin = copy.deepcopy(head.margin)
    x = emb.clone().requires_grad_(True)
    w = weight.clone().requires_grad_(True)
    norms = x.norm(dim=1)
    cos = F.normalize(x, dim=1) @ F.normalize(w, dim=1).T
    logits = margin(cos, labels, norms if margin.needs_norms else None)
    loss = F.cross_entropy(logits, labels, ignore_index=-1)
    reg = margin.regularizer(norms)
    if reg is not None:
        loss = loss + reg
    loss.backward()
    return {"loss": loss.detach(), "emb_grad": x.grad, "weight_grad": w.grad, "buffers": dict(margin.named_buffers())}


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("case", cases.CASES, ids=[c[0] for c in cases.CASES])
def test_world_size_1_equals_cross_entropy(case, fused):
    _, name, kw, buffers = case
    weight, emb, labels = cases.global_inputs()
    head = cases.build(name, kw, buffers, weight, fused=fused)
    assert head.fused is fused
    ref = _reference(head, weight, emb, labels)
    got = cases.run_step(head, emb, labels)
    torch.testing.assert_close(got["loss"], ref["loss"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["emb_grad"], ref["emb_grad"], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got["weight_grad"], ref["weight_grad"], rtol=1e-4, atol=1e-6)
    for k, v in ref["buffers"].items():
        torch.testing.assert_close(got["buffers"][k], v)
    assert got["weight_grad"].abs().sum() > 0


def test_fused_is_the_default():
    assert get_head("arcface", 8, 10).fused and PartialFC(8, 10, get_head("arcface", 8, 10).margin).fused


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
def test_sampling_keeps_positives_with_exact_counts_and_matches_subset_ce(fused):
    torch.manual_seed(0)
    weight = torch.randn(40, 8)
    head = PartialFC(8, 40, cases.get_head("arcface", 8, 40).margin, sample_rate=0.25, fused=fused)
    with torch.no_grad():
        head.weight.copy_(weight)
    emb = torch.randn(9, 8) * 10
    labels = torch.tensor([3, 3, 17, 39, 0, -1, 17, 3, 0])
    x = emb.clone().requires_grad_(True)
    loss, logs = head(x, labels)
    loss.backward()
    index = head.last_sampled_index
    assert index.numel() == 10 == int(0.25 * 40) and logs["partial_fc/num_sampled"].item() == 10
    assert set(labels[labels >= 0].tolist()) <= set(index.tolist())
    assert index.unique().numel() == 10

    # Loss and gradients equal plain CE over the sampled columns.
    ref = _reference(
        head, weight[index], emb, torch.where(labels >= 0, torch.searchsorted(index, labels.clamp_min(0)), -1)
    )
    torch.testing.assert_close(loss.detach(), ref["loss"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, ref["emb_grad"], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(head.weight.grad[index], ref["weight_grad"], rtol=1e-4, atol=1e-6)
    others = torch.ones(40, dtype=torch.bool)
    others[index] = False
    assert (head.weight.grad[others] == 0).all()

    many = torch.arange(12) * 3  # 12 positives > int(0.25 * 40)
    head(torch.randn(12, 8), many)
    assert head.last_sampled_index.tolist() == many.tolist()

    head.eval()  # no sampling outside training
    head(emb, labels)
    assert head.last_sampled_index is None


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
def test_autocast_keeps_logits_float32(fused):
    weight, emb, labels = cases.global_inputs()
    head = cases.build("arcface", {}, {}, weight, fused=fused)
    plain, _ = head(emb, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, _ = head(emb, labels)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, plain)


def test_centres_for_single_process():
    weight, _, _ = cases.global_inputs()
    head = cases.build("arcface", {}, {}, weight)
    got = head.centres_for(torch.tensor([4, -1, 22]))
    torch.testing.assert_close(got, torch.stack([weight[4], torch.zeros(cases.D), weight[22]]))


def test_state_dict_roundtrip_and_reshard():
    torch.manual_seed(0)
    full = torch.randn(23, 4)
    states = []
    for r in range(3):
        start, n = shard_range(23, 3, r)
        head = get_head("curricularface", 4, 23)
        head.world_size, head.rank, head.class_start, head.num_local = 3, r, start, n
        head.weight = torch.nn.Parameter(full[start : start + n].clone())
        head.margin.t.fill_(0.4)
        states.append(head.state_dict())
    assert states[1]["_extra_state"] == {"num_classes": 23, "world_size": 3, "rank": 1, "start": 8, "embedding_size": 4}
    new = reshard_state_dicts(states, 1)
    fresh = get_head("curricularface", 4, 23)
    fresh.load_state_dict(new[0])
    torch.testing.assert_close(fresh.weight.detach(), full)
    assert fresh.margin.t.item() == pytest.approx(0.4)
    two = reshard_centres([s["weight"] for s in states], 2)
    torch.testing.assert_close(two[0], full[:12])
    torch.testing.assert_close(two[1], full[12:])
    with pytest.raises(ValueError, match="shard mismatch"):
        fresh.load_state_dict(states[1])
    with pytest.raises(ValueError, match="rank order"):
        reshard_state_dicts(states[::-1], 2)


@pytest.mark.parametrize(
    "emb, labels, match",
    [
        (torch.randn(4, 8), torch.tensor([0, 1, 2, 10]), r"labels must be in \[0, 10\)"),
        (torch.randn(4, 8), torch.tensor([0, 1, -2, 3]), "ignore_index=-1"),
        (torch.randn(4, 7), torch.tensor([0, 1, 2, 3]), "D=8"),
        (torch.randn(4, 8), torch.tensor([0, 1, 2]), "labels must be a \\(B,\\) tensor with B=4"),
        (torch.randn(4, 8), torch.tensor([0.0, 1, 2, 3]), "int64 or int32"),
        (torch.randn(8), torch.tensor([0]), r"embeddings must be a \(B, D\)"),
        (torch.randint(0, 3, (4, 8)), torch.tensor([0, 1, 2, 3]), "floating point"),
    ],
)
def test_bad_inputs(emb, labels, match):
    head = get_head("arcface", 8, 10)
    with pytest.raises(ValueError, match=match):
        head(emb, labels)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="sample_rate"):
        get_head("arcface", 8, 10, sample_rate=0.0)
    with pytest.raises(ValueError, match="num_classes"):
        get_head("arcface", 8, 0)
    with pytest.raises(ValueError, match="ignore_index"):
        get_head("arcface", 8, 10, ignore_index=3)
    with pytest.raises(TypeError, match="margin"):
        PartialFC(8, 10, margin=None)


@pytest.mark.distributed
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("case", cases.CASES, ids=[c[0] for c in cases.CASES])
def test_two_gloo_ranks_equal_one_process(two_rank_results, case, fused):
    """Same loss on both ranks as one process on the concatenated batch; centre shard gradients
    equal the matching rows; embedding gradients are W = 2 times the single-process ones (DDP's
    average over ranks restores them); margin EMAs identical. The one-process run uses the
    unfused path, so the fused 2-rank run is checked against the materialised logits."""
    name, head_name, kw, buffers = case
    weight, emb, labels = cases.global_inputs()
    torch.manual_seed(0)
    ref = cases.run_step(cases.build(head_name, kw, buffers, weight, fused=False), emb, labels)
    b = cases.N // 2
    for r, res in enumerate(two_rank_results):
        got = res["cases" if fused else "cases_unfused"][name]
        s, n = got["start"], got["num_local"]
        assert (s, n) == shard_range(cases.C, 2, r)
        torch.testing.assert_close(got["loss"], ref["loss"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got["weight_grad"], ref["weight_grad"][s : s + n], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(got["emb_grad"], 2 * ref["emb_grad"][r * b : (r + 1) * b], rtol=1e-4, atol=1e-6)
        for k, v in ref["buffers"].items():
            torch.testing.assert_close(got["buffers"][k], v)


@pytest.mark.distributed
@pytest.mark.parametrize("key", ["sampling", "sampling_unfused"])
def test_two_gloo_ranks_sampling(two_rank_results, key):
    labels = cases.sampling_labels()
    weight, emb, _ = cases.global_inputs()
    expected_counts = [3, 5]  # max(int(0.3 * 12), 2 positives), max(int(0.3 * 11), 5 positives)
    global_index = []
    for r, res in enumerate(two_rank_results):
        got = res[key]
        s, n = got["start"], got["num_local"]
        positives = {int(y) - s for y in labels if s <= y < s + n}
        index = got["index"].tolist()
        assert len(index) == expected_counts[r] and len(set(index)) == len(index)
        assert positives <= set(index)
        assert torch.isfinite(got["loss"])
        global_index += [s + i for i in index]
    # Both ranks agree on the loss, which is CE over the union of the sampled classes.
    torch.testing.assert_close(two_rank_results[0][key]["loss"], two_rank_results[1][key]["loss"])
    idx = torch.tensor(global_index)
    head = cases.build("arcface", {}, {}, weight)
    ref = _reference(head, weight[idx], emb, torch.where(labels >= 0, torch.searchsorted(idx, labels.clamp_min(0)), -1))
    torch.testing.assert_close(two_rank_results[0][key]["loss"], ref["loss"], rtol=1e-5, atol=1e-5)


@pytest.mark.distributed
def test_two_gloo_ranks_centres_for(two_rank_results):
    weight, _, _ = cases.global_inputs()
    expected = torch.stack([weight[0], weight[22], torch.zeros(cases.D), weight[11], weight[12]])
    for res in two_rank_results:
        torch.testing.assert_close(res["centres_for"], expected)


@pytest.mark.distributed
def test_two_gloo_ranks_bad_inputs_raise_everywhere(two_rank_results):
    r0, r1 = two_rank_results
    assert "same batch size on every rank, got [5, 4]" in r0["err_batch"]
    assert "same batch size on every rank, got [5, 4]" in r1["err_batch"]
    assert "labels must be in [0, 23)" in r1["err_label"]
    assert "bad input on rank(s) [1]" in r0["err_label"]
    assert "D=16" in r1["err_dim"] and "bad input on rank(s) [1]" in r0["err_dim"]


@pytest.mark.parametrize("fused", [False, True])
def test_interclass_filtering_threshold_zeroes_high_nontarget_cosines(fused):
    """arcface_torch CombinedMarginLoss(interclass_filtering_threshold=0.3), CosFace m3=0.4, s=4: a non-target
    cosine > 0.3 is multiplied by 0 (no_grad mask), so its logit is 0 and carries no gradient; the target is
    never filtered. Centres are the unit axes, so the cosines are the normalised embedding entries."""
    from mrface.losses import get_head

    s = 4.0
    head = get_head("cosface", 3, 3, s=s, interclass_filtering_threshold=0.3, fused=fused)
    with torch.no_grad():
        head.weight.copy_(torch.eye(3))
    e0 = torch.tensor([[0.6, 0.64, 0.48], [0.0, 0.6, 0.8]])  # unit rows
    e = e0.clone().requires_grad_(True)
    labels = torch.tensor([0, 1])
    loss, _ = head(e, labels)
    loss.backward()
    # public formula in float64: mask fixed from the forward values, logits s * (mask * c), target s (c - 0.4)
    x = e0.double().requires_grad_(True)
    c = x / x.norm(dim=1, keepdim=True)
    keep = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]], dtype=torch.float64)  # 0.64, 0.48, 0.8 > 0.3
    z = s * (c * keep)
    z = z - s * 0.4 * torch.nn.functional.one_hot(labels, 3)
    expected = torch.nn.functional.cross_entropy(z, labels)
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(e.grad.double(), x.grad, rtol=1e-4, atol=1e-6)
