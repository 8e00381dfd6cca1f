"""DCR coupled branches and loss pieces (closed forms), MobileFaceNet and its multi-resolution
variant, and summary() against published parameter / MAC counts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mrface.models import get_model, summary
from mrface.models.dcr import center_loss, coupling_loss, dcr_branch_loss, update_centers


# ------------------------------------------------------------------------------------------ DCR
def test_dcr_identity_init_and_branch_outputs(generator):
    model = get_model("dcr_tiny", num_classes=5).eval()
    x = torch.randn(3, 3, 112, 112, generator=generator)
    with torch.no_grad():
        trunk = model(x)
        branch = model(x, resolution=12)
    slope = model.branch(12).prelu.weight
    torch.testing.assert_close(branch, torch.where(trunk >= 0, trunk, slope * trunk))  # PReLU(I·e + 0)
    out = model.branch_outputs(x, {8: x[:2], 16: x[1:]})
    assert out.e_hr.shape == (3, 128) and out.logits[8].shape == (2, 5) and out.embeddings[16].shape == (2, 128)
    with pytest.raises(ValueError, match="resolution=10"):
        model(x, resolution=10)


def test_dcr_loss_pieces_closed_form(generator):
    e = torch.randn(4, 3, generator=generator)
    c = torch.randn(2, 3, generator=generator)
    y = torch.tensor([0, 1, 1, 0])
    expected = sum(float(((e[i] - c[y[i]]) ** 2).sum()) for i in range(4)) / 4
    assert center_loss(e, y, c).item() == pytest.approx(expected, rel=1e-6)

    e_hr = torch.randn(4, 3, generator=generator)
    ks = {8: torch.randn(4, 3, generator=generator), 12: torch.randn(4, 3, generator=generator)}
    expected = sum(float(((e_hr - v) ** 2).sum()) / 4 for v in ks.values())
    assert coupling_loss(e_hr, ks).item() == pytest.approx(expected, rel=1e-6)

    centers = c.clone()
    update_centers(centers, e, y, rate=0.6)
    for j in range(2):
        members = e[y == j]
        delta = (c[j] - members).sum(0) / (1 + len(members))
        torch.testing.assert_close(centers[j], c[j] - 0.6 * delta)


def test_dcr_branch_loss_combines_pieces(generator):
    model = get_model("dcr_tiny", num_classes=3, resolutions=[8, 16])
    x = torch.randn(2, 3, 112, 112, generator=generator)
    y = torch.tensor([0, 2])
    out = model.branch_outputs(x, {8: x.flip(0), 16: x})
    centers = {8: torch.randn(3, 128, generator=generator), 16: torch.randn(3, 128, generator=generator)}
    loss = dcr_branch_loss(out, y, centers)
    by_hand = 0.5 * sum(
        F.cross_entropy(out.logits[k], y) + 0.008 * ((out.embeddings[k] - centers[k][y]) ** 2).sum(1).mean()
        for k in (8, 16)
    ) + 0.008 * sum(((out.e_hr - out.embeddings[k]) ** 2).sum(1).mean() for k in (8, 16))
    torch.testing.assert_close(loss, by_hand)
    loss.backward()
    assert model.branch(8).mapping.weight.grad is not None


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
@pytest.mark.parametrize("name,gflops", [("iresnet18", 2.6), ("iresnet50", 6.3), ("iresnet100", 12.1),
                                         ("iresnet200", 23.5)])  # fmt: skip
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
