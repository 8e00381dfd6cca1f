"""DCR coupled branches and loss against the public formulas (gyfastas/CS7319E1G16 ``models/branch.py``,
``losses/cm_loss.py``, ``losses/center_buffer.py``), MobileFaceNet and its multi-resolution variant, and
summary() against published parameter / MAC counts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mrface.models import get_model, summary
from mrface.models.dcr import DCRCentres, center_loss, coupling_loss, dcr_loss, update_centers


# ------------------------------------------------------------------------------------------ DCR
def test_branch_embedding_is_fc1_and_a_one_parameter_prelu_feeds_the_classifier(generator):
    for normalized in (False, True):
        model = get_model("dcr_tiny", num_classes=5, normalized_embeddings=normalized).eval()
        x = torch.randn(3, 3, 112, 112, generator=generator)
        with torch.no_grad():
            for p in model.branch(12).parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=generator))
            trunk = model.trunk(x)
            fc1, fc2, a = model.branch(12).mapping, model.branch(12).classifier, model.branch(12).prelu.weight
            assert a.shape == (1,)
            feature = F.normalize(trunk, dim=1) if normalized else trunk  # the public trunk's output
            emb = feature @ fc1.weight.T + fc1.bias
            emb = emb / emb.norm(dim=1, keepdim=True) if normalized else emb
            torch.testing.assert_close(model(x, resolution=12), emb)
            logits = torch.where(emb >= 0, emb, a * emb) @ fc2.weight.T + fc2.bias
            out = model.branch_outputs(x, {12: x})
            torch.testing.assert_close(out.logits[12], logits)
            torch.testing.assert_close(out.embeddings[12], emb)


def test_hr_branch_is_branch_zero_and_identity_init(generator):
    model = get_model("dcr_tiny", num_classes=5).eval()
    assert list(model.branches) == ["112", "8", "12", "16", "20"] and model.resolutions == (8, 12, 16, 20)
    assert torch.equal(model.branch(8).mapping.weight, torch.eye(128)) and not model.branch(8).mapping.bias.any()
    x = torch.randn(3, 3, 112, 112, generator=generator)
    with torch.no_grad():
        out = model.branch_outputs(x, {8: x[:2], 16: x[1:]})
        torch.testing.assert_close(out.e_hr, model.trunk(x))  # identity init: HR branch = trunk at first
    assert list(out.embeddings) == [112, 8, 16] and out.logits[8].shape == (2, 5)
    legacy = get_model("dcr_tiny", num_classes=5, hr_branch=False)
    assert list(legacy.branches) == ["8", "12", "16", "20"]
    with pytest.raises(ValueError, match="resolution=10"):
        model(x, resolution=10)


def test_init_classifiers_copies_the_trunk_classifier(generator):
    model = get_model("dcr_tiny", num_classes=5, resolutions=[8])
    w, b = torch.randn(5, 128, generator=generator), torch.randn(5, generator=generator)
    model.init_classifiers(w, b)
    for branch in model.branches.values():
        assert torch.equal(branch.classifier.weight, w) and torch.equal(branch.classifier.bias, b)
    with pytest.raises(ValueError, match="trunk classifier"):
        model.init_classifiers(torch.zeros(4, 128))


def test_dcr_loss_pieces_are_element_means(generator):
    e = torch.randn(4, 3, generator=generator)
    c = torch.randn(2, 3, generator=generator)
    y = torch.tensor([0, 1, 1, 0])
    expected = sum(float(((e[i] - c[y[i]]) ** 2).sum()) for i in range(4)) / (4 * 3)
    assert center_loss(e, y, c).item() == pytest.approx(expected, rel=1e-6)

    e_hr = torch.randn(4, 3, generator=generator)
    ks = {8: torch.randn(4, 3, generator=generator), 12: torch.randn(4, 3, generator=generator)}
    expected = sum(float(((e_hr - v) ** 2).sum()) / 12 for v in ks.values())
    assert coupling_loss(e_hr, ks).item() == pytest.approx(expected, rel=1e-6)


def test_centre_update_is_the_public_rule(generator):
    """center_buffer.py: c_j <- (n_j c_j + rate * sum_i (e_i - c_j)) / n_j, classes absent from the batch unchanged."""
    e = torch.randn(5, 3, generator=generator)
    c = torch.randn(4, 3, generator=generator)
    y = torch.tensor([0, 1, 1, 0, 1])
    centers = c.clone()
    update_centers(centers, e, y, rate=0.6)
    for j in range(4):
        members = e[y == j]
        if len(members) == 0:
            expected = c[j]
        else:
            expected = (len(members) * c[j] + 0.6 * (members - c[j]).sum(0)) / len(members)
        torch.testing.assert_close(centers[j], expected)


def test_centre_tables_start_as_the_public_init():
    centres = DCRCentres([112, 8], num_classes=400, embedding_size=64, seed=3)
    for s in (112, 8):
        table = centres.table(s)
        assert table.shape == (400, 64)
        assert abs(float(table.mean())) < 0.005 and float(table.std()) == pytest.approx(math.sqrt(2 / 400), rel=0.03)
    assert not torch.equal(centres.table(112), centres.table(8))
    assert torch.equal(DCRCentres([112, 8], 400, 64, seed=3).table(8), centres.table(8))  # same on every rank


def test_dcr_loss_is_the_public_cm_loss(generator):
    model = get_model("dcr_tiny", num_classes=3, resolutions=[8, 16])
    x = torch.randn(4, 3, 112, 112, generator=generator)
    y = torch.tensor([0, 2, 2, 1])
    out = model.branch_outputs(x, {8: x.flip(0), 16: x})
    centres = DCRCentres([112, 8, 16], 3, 128, seed=0)
    before = {k: centres.table(k).clone() for k in (112, 8, 16)}
    loss, logs = dcr_loss(out, y, centres)
    # by hand: per scale, the centres move first (public order), then CE + mse to the moved centres
    ce, cen, coup = 0.0, 0.0, 0.0
    for k in (112, 8, 16):
        e = out.embeddings[k].detach()
        moved = before[k].clone()
        for j in range(3):
            members = e[y == j]
            if len(members):
                moved[j] = (len(members) * moved[j] + 0.6 * (members - moved[j]).sum(0)) / len(members)
        torch.testing.assert_close(centres.table(k), moved)
        ce = ce + F.cross_entropy(out.logits[k], y)
        cen = cen + ((out.embeddings[k] - moved[y]) ** 2).mean()
        coup = coup + ((out.embeddings[112] - out.embeddings[k]) ** 2).mean()
    torch.testing.assert_close(loss, ce / 3 + 0.008 * cen / 3 + 0.008 * coup)
    torch.testing.assert_close(logs["dcr/coupling"], coup.detach())
    loss.backward()  # the HR branch trains too: its embedding is not detached
    assert model.branch(112).mapping.weight.grad.abs().sum() > 0
    assert model.branch(8).prelu.weight.grad is not None


# -------------------------------------------------------------------------------- MobileFaceNet
def test_mobilefacenet_matches_paper_size_and_cost():
    # Chen et al. 2018: 0.99 M parameters, 221 M MAdds at 112x112, 128-d
    with torch.device("meta"):
        s = summary(get_model("mobilefacenet"), 112)
    assert s.total_params == pytest.approx(0.99e6, rel=0.02)
    assert s.macs == pytest.approx(221e6, rel=0.02)
    model = get_model("mobilefacenet", embedding_size=512).eval()
    assert model(torch.zeros(2, 3, 112, 112)).shape == (2, 512)


def test_multi_resolution_mobilefacenet_paths(generator):
    model = get_model("btnet_mobilefacenet").eval()
    assert [model.implant_level(r) for r in (28, 14, 7)] == ["layers.2", "layers.4", "layers.6"]
    with torch.no_grad():
        for r in (112, 28, 14, 7):
            assert model(torch.randn(2, 3, r, r, generator=generator)).shape == (2, 128)
        feat = model.forward_branch(torch.randn(1, 3, 14, 14, generator=generator), 14).feature
    assert feat.shape == (1, 128, 14, 14)


# -------------------------------------------------------------------------------------- summary
@pytest.mark.parametrize(
    "name,gflops", [("iresnet18", 2.6), ("iresnet50", 6.3), ("iresnet100", 12.1), ("iresnet200", 23.5)]
)
def test_iresnet_macs_match_published_gflops(name, gflops):
    with torch.device("meta"):  # shapes are all the counter needs
        s = summary(get_model(name), 112)
    assert s.macs == pytest.approx(gflops * 1e9, rel=0.02)
    assert s.path_params == s.total_params


def test_btnet_branch_summary_is_consistent_with_closed_form():
    with torch.device("meta"):
        model = get_model("btnet_r50")
        full = summary(model, 112)
        s28 = summary(model, 28)
    trunk = full.macs
    # BNet28 vs TNet: stem and layer1 at 28x28 instead of 112/56; layer2.0 at 28 with stride 1.
    stem = lambda side: side * side * 64 * 27  # noqa: E731
    conv3 = lambda side, cin, cout: side * side * cin * cout * 9  # noqa: E731
    tnet_head = stem(112) + conv3(112, 64, 64) + conv3(56, 64, 64) + 56 * 56 * 64 * 64 + 2 * 2 * conv3(56, 64, 64)
    tnet_head += conv3(56, 64, 128) + conv3(28, 128, 128) + 28 * 28 * 64 * 128
    bnet_head = stem(28) + 3 * 2 * conv3(28, 64, 64) + conv3(28, 64, 128) + conv3(28, 128, 128) + 28 * 28 * 64 * 128
    assert s28.macs == trunk - tnet_head + bnet_head
    assert s28.owned_params == sum(p.numel() for p in model.branch(28).parameters())
    # same path parameters as the trunk, less layer1.0's shortcut (stride 1 at 28: no downsample)
    assert s28.path_params == full.path_params - (64 * 64 + 2 * 64)
