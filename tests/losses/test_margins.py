"""Margins against closed forms written here in float64 (REFERENCE.md §4)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from mrface.losses import (
    AdaFace,
    CombinedMargin,
    CurricularFace,
    MagFace,
    QGFace,
    get_head,
    get_margin,
    list_heads,
    magface_min_lambda_g,
)

S = 64.0


def _cos_labels(gen, b=12, c=9):
    """Cosines spread over (-1, 1), including targets beyond the ArcFace fallback point."""
    cos = torch.rand(b, c, generator=gen, dtype=torch.float64) * 1.98 - 0.99
    labels = torch.randint(0, c, (b,), generator=gen)
    cos[0, labels[0]] = -0.97  # theta + 0.5 > pi
    cos[1, labels[1]] = 0.999
    return cos, labels


def _expected(cos, labels, target_fn, nontarget_fn=lambda c: S * c):
    out = nontarget_fn(cos.clone())
    rows = torch.arange(cos.shape[0])
    out[rows, labels] = target_fn(cos[rows, labels])
    return out


def _close(actual, expected, atol=2e-4):
    torch.testing.assert_close(actual.double(), expected, rtol=1e-5, atol=atol)


def test_arcface_closed_form_with_linear_fallback(generator):
    cos, labels = _cos_labels(generator)
    m = 0.5

    def target(c):
        theta = torch.arccos(c)
        return torch.where(theta + m < math.pi, S * torch.cos(theta + m), S * (c - m * math.sin(m)))

    out = CombinedMargin(S, 1.0, m, 0.0, fallback="linear")(cos.float(), labels)
    assert out.dtype == torch.float32
    _close(out, _expected(cos, labels, target))


def test_arcface_fallback_easy_and_none(generator):
    cos, labels = _cos_labels(generator)
    m = 0.5
    easy = CombinedMargin(S, 1.0, m, 0.0, fallback="easy")(cos.float(), labels)
    _close(easy, _expected(cos, labels, lambda c: torch.where(c > 0, S * torch.cos(torch.arccos(c) + m), S * c)))
    none = CombinedMargin(S, 1.0, m, 0.0, fallback="none")(cos.float(), labels)
    _close(none, _expected(cos, labels, lambda c: S * torch.cos(torch.arccos(c) + m)))


def test_cosface_and_general_combined_closed_form(generator):
    cos, labels = _cos_labels(generator)
    out = CombinedMargin(S, 1.0, 0.0, 0.35)(cos.float(), labels)
    _close(out, _expected(cos, labels, lambda c: S * (c - 0.35)))

    m1, m2, m3 = 1.2, 0.1, 0.15

    def target(c):
        theta = torch.arccos(c)
        inside = m1 * theta + m2 < math.pi
        return torch.where(inside, S * (torch.cos(m1 * theta + m2) - m3), S * (c - m2 * math.sin(m2) - m3))

    out = CombinedMargin(S, m1, m2, m3, fallback="linear")(cos.float(), labels)
    _close(out, _expected(cos, labels, target), atol=2e-3)  # acos in float32 near +-1


def test_arcface_straight_through_vs_exact_gradient(generator):
    """Same forward; on the target the exact gradient is the straight-through one (s) times
    cos m + sin m * c / sqrt(1 - c^2); non-targets get s in both."""
    m = 0.5
    cos = (torch.rand(6, 5, generator=generator, dtype=torch.float64) * 1.6 - 0.8).float()
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    grads, outs = {}, {}
    for mode in ("exact", "straight_through"):
        x = cos.clone().requires_grad_(True)
        out = CombinedMargin(S, 1.0, m, 0.0, gradient=mode)(x, labels)
        out.sum().backward()
        grads[mode], outs[mode] = x.grad.double(), out.detach()
    torch.testing.assert_close(outs["exact"], outs["straight_through"])
    rows = torch.arange(6)
    c = cos.double()[rows, labels]
    factor = math.cos(m) + math.sin(m) * c / torch.sqrt(1 - c**2)
    torch.testing.assert_close(grads["straight_through"][rows, labels], torch.full((6,), S, dtype=torch.float64))
    torch.testing.assert_close(grads["exact"][rows, labels], S * factor, rtol=1e-5, atol=1e-4)
    mask = torch.ones_like(cos, dtype=torch.bool)
    mask[rows, labels] = False
    torch.testing.assert_close(grads["exact"][mask], grads["straight_through"][mask])
    assert (grads["exact"][mask] == S).all()


def test_arcface_default_is_arcface_torch_combined_margin_loss():
    """arcface_torch CombinedMarginLoss (m1=1, m3=0): under no_grad every logit becomes
    cos(arccos(c) [+ m2 on the target]), then times s; so the target is cos(theta + 0.5) even past
    theta + m = pi (no fallback) and every logit's gradient w.r.t. its cosine is s."""
    cos = torch.tensor([[-0.97, 0.2, 0.1], [0.3, 0.6, -0.5]], dtype=torch.float64)
    labels = torch.tensor([0, 1])
    x = cos.float().requires_grad_(True)
    out = get_margin("arcface")(x, labels)
    # hand values: arccos(-0.97) = 2.89602714, + 0.5 = 3.39602714 > pi, cos = -0.96780579
    #              arccos(0.6) = 0.92729522, + 0.5 = 1.42729522, cos = 0.14300911
    expected = S * torch.tensor([[-0.96780579, 0.2, 0.1], [0.3, 0.14300911, -0.5]], dtype=torch.float64)
    torch.testing.assert_close(out.detach().double(), expected, rtol=0, atol=1e-4)
    out.sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, S))


def test_magface_default_easy_margin():
    """IrvingMeng/MagFace MagLinear(easy_margin=True): target cos(theta + m(a)) where cos theta > 0,
    else cos theta. a = 60 -> m = 0.45 + 0.35 * 50 / 100 = 0.625."""
    head = MagFace()
    cos = torch.tensor([[0.5, 0.1], [-0.2, 0.3]])
    out = head(cos, torch.tensor([0, 0]), torch.tensor([60.0, 60.0]))
    # cos(arccos(0.5) + 0.625) = cos(1.04719755 + 0.625) = cos(1.67219755) = -0.10114...
    assert out[0, 0].item() == pytest.approx(S * math.cos(math.acos(0.5) + 0.625), rel=1e-5)
    assert out[0, 0].item() == pytest.approx(S * -0.1012, abs=S * 1e-3)
    assert out[1, 0].item() == pytest.approx(S * -0.2, rel=1e-6)  # cos <= 0: unchanged


@pytest.mark.parametrize("training", [True, False])
def test_curricularface_closed_form_and_ema(generator, training):
    cos, labels = _cos_labels(generator, b=16, c=7)
    m, t0 = 0.5, 0.3
    head = CurricularFace(S, m, momentum=0.01).train(training)
    head.t.fill_(t0)
    out = head(cos.float(), labels)

    rows = torch.arange(cos.shape[0])
    cy = cos[rows, labels]
    t = 0.99 * t0 + 0.01 * cy.mean().item() if training else t0
    assert head.t.item() == pytest.approx(t, abs=1e-6)
    cos_m = torch.cos(torch.arccos(cy) + m)
    hard = cos > cos_m[:, None]
    expected = S * torch.where(hard, cos * (t + cos), cos)
    expected[rows, labels] = torch.where(cy > math.cos(math.pi - m), S * cos_m, S * (cy - m * math.sin(m)))
    assert hard.sum() > 5  # the test exercises the hard-negative branch
    _close(out, expected)


def _adaface_expected(cos, labels, z, m=0.4, eps=1e-3):
    c = cos.clamp(-1 + eps, 1 - eps)

    def target(cy):
        cy = cy.clamp(-1 + eps, 1 - eps)
        theta = (torch.arccos(cy) - m * z).clamp(eps, math.pi - eps)
        return S * (torch.cos(theta) - (m + m * z))

    return _expected(c, labels, target)


def test_adaface_general_closed_form_with_ema(generator):
    cos, labels = _cos_labels(generator)
    norms = torch.rand(cos.shape[0], generator=generator, dtype=torch.float64) * 40 + 5
    norms[0] = 150.0  # clipped to 100
    head = AdaFace(S, m=0.4, h=0.333).train()
    out = head(cos.float(), labels, norms.float())
    safe = norms.clamp(1e-3, 100)
    mu = 0.99 * 20 + 0.01 * safe.mean()
    sd = 0.99 * 100 + 0.01 * safe.std(unbiased=True)
    torch.testing.assert_close(head.batch_mean.double(), mu, rtol=1e-6, atol=0)
    torch.testing.assert_close(head.batch_std.double(), sd, rtol=1e-6, atol=0)
    z = (0.333 * (safe - mu) / (sd + 1e-3)).clamp(-1, 1)
    _close(out, _adaface_expected(cos, labels, z[:, None].expand(-1, 1)[:, 0]))


@pytest.mark.parametrize("z, kind", [(-1.0, "arcface"), (0.0, "cosface"), (1.0, "hard")])
def test_adaface_special_cases(generator, z, kind):
    """z_hat = -1, 0, +1 reduce to ArcFace, CosFace and the hard regime."""
    cos = torch.rand(10, 6, generator=generator, dtype=torch.float64) * 1.6 - 0.8
    labels = torch.randint(0, 6, (10,), generator=generator)
    m = 0.4
    head = AdaFace(S, m=m, h=0.333).eval()
    head.batch_mean.fill_(30.0)
    head.batch_std.fill_(5.0)
    norm = {-1.0: 1.0, 0.0: 30.0, 1.0: 99.0}[z]  # far below / at / far above the mean
    out = head(cos.float(), labels, torch.full((10,), norm))
    closed = {
        "arcface": lambda c: S * torch.cos(torch.arccos(c) + m),
        "cosface": lambda c: S * (c - m),
        "hard": lambda c: S * (torch.cos(torch.arccos(c) - m) - 2 * m),
    }[kind]
    _close(out, _expected(cos, labels, closed))


def test_magface_margin_endpoints_target_and_regulariser(generator):
    head = MagFace(fallback="linear")
    norms = torch.tensor([5.0, 10.0, 60.0, 110.0, 200.0])
    torch.testing.assert_close(head.margin_of(norms), torch.tensor([0.45, 0.45, 0.45 + 0.35 * 0.5, 0.8, 0.8]))
    cos = torch.rand(5, 4, generator=generator, dtype=torch.float64) * 1.6 - 0.8
    labels = torch.tensor([0, 1, 2, 3, 0])
    out = head(cos.float(), labels, norms)
    a = norms.double().clamp(10, 110)
    mm = 0.45 + 0.35 * (a - 10) / 100
    rows = torch.arange(5)
    expected = S * cos.clone()
    expected[rows, labels] = S * torch.cos(torch.arccos(cos[rows, labels]) + mm)
    _close(out, expected)

    x = torch.tensor([5.0, 20.0, 80.0], dtype=torch.float64)
    n = x.float().requires_grad_(True)
    reg = head.regularizer(n)
    ax = x.clamp(10, 110)
    assert reg.item() == pytest.approx(35 * (ax / 110**2 + 1 / ax).mean().item(), rel=1e-6)
    reg.backward()
    dg = torch.where((x > 10) & (x < 110), 35 * (1 / 110**2 - 1 / x**2) / 3, 0.0)
    torch.testing.assert_close(n.grad.double(), dg, rtol=1e-5, atol=1e-8)


def test_mag_cosface_and_margin_gradient_through_norm():
    head = MagFace(kind="cos", l_m=0.35, lambda_g=150.0)
    norms = torch.tensor([60.0], requires_grad=True)
    out = head(torch.tensor([[0.3, 0.2]]), torch.tensor([0]), norms)
    m = 0.35 + 0.45 * 0.5
    assert out[0, 0].item() == pytest.approx(S * (0.3 - m), rel=1e-6)
    out[0, 0].backward()
    assert norms.grad.item() == pytest.approx(-S * 0.45 / 100, rel=1e-5)


def test_magface_lambda_g_feasibility_warning():
    bound = magface_min_lambda_g(64, 10, 110, 0.45, 0.8)
    assert bound == pytest.approx(64 * 0.0035 * 110**2 * 10**2 / (110**2 - 10**2))
    assert bound == pytest.approx(22.59, abs=0.01)
    with pytest.warns(UserWarning, match="lambda_g=20"):
        MagFace(lambda_g=20.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MagFace(lambda_g=35.0)


def test_qgface_gate_scales_whole_row(generator):
    """The public gate: 1 / (1 + exp(-(z_hat + 2 (0.5 - quality_scale)) s)) on every logit of the row."""
    s = 4.0  # small s: the gate takes intermediate values for these norms
    cos = torch.rand(6, 5, generator=generator, dtype=torch.float64) * 1.6 - 0.8
    labels = torch.randint(0, 5, (6,), generator=generator)
    head = QGFace(s, m=0.4, h=0.333, gate_threshold=0.25).eval()
    head.batch_mean.fill_(30.0)
    head.batch_std.fill_(5.0)
    norms = torch.tensor([1.0, 10.0, 20.0, 25.0, 30.0, 60.0], dtype=torch.float64)
    out = head(cos.float(), labels, norms.float())
    z = (0.333 * (norms - 30) / (5 + 1e-3)).clamp(-1, 1)
    gate = 1 / (1 + torch.exp(-(z + 2 * (0.5 - 0.25)) * s))
    theta = torch.acos(cos.clamp(-1 + 1e-3, 1 - 1e-3))
    onehot = torch.zeros_like(cos).scatter_(1, labels[:, None], 1.0)
    angle = (theta - onehot * 0.4 * z[:, None]).clamp(1e-3, math.pi - 1e-3)
    target = torch.cos(angle) - onehot * (0.4 + 0.4 * z[:, None])
    expected = target * s * gate[:, None]
    _close(out, expected)
    assert 0.01 < gate[2] < 0.99  # steepness 2 s: not a hard step at s = 4


def test_qgface_ema_starts_at_zero_and_zero_threshold_is_no_gate():
    head = QGFace(64.0, gate_threshold=0.0).train()
    assert head.batch_mean.item() == 0.0 and head.batch_std.item() == 0.0
    norms = torch.tensor([10.0, 20.0, 30.0])
    cos = torch.full((3, 4), 0.3)
    labels = torch.tensor([0, 1, 2])
    out = head(cos, labels, norms)
    # First step from zero EMAs: mean 0.01 * 20, std 0.01 * 10 (unbiased), as SoftmaxFace updates them.
    assert head.batch_mean.item() == pytest.approx(0.2) and head.batch_std.item() == pytest.approx(0.1)
    assert out[0, 3].item() == pytest.approx(64.0 * 0.3, rel=1e-6)  # gate 1: plain s * cos


def test_get_head_published_defaults():
    assert set(list_heads()) >= {"arcface", "cosface", "curricularface", "adaface", "magface", "qgface", "combined"}
    arc = get_margin("arcface")
    assert (arc.s, arc.m1, arc.m2, arc.m3, arc.gradient, arc.fallback) == (
        64.0,
        1.0,
        0.5,
        0.0,
        "straight_through",
        "none",
    )
    btnet = get_margin("arcface_btnet")
    assert (btnet.m2, btnet.gradient, btnet.fallback) == (0.5, "exact", "linear")
    cosf = get_margin("cosface")
    assert (cosf.m2, cosf.m3) == (0.0, 0.4)
    assert get_margin("magface").fallback == "easy"
    cur = get_margin("curricularface")
    assert (cur.s, cur.m, cur.momentum, cur.t.item()) == (64.0, 0.5, 0.01, 0.0)
    ada = get_margin("adaface")
    assert (ada.s, ada.m, ada.h, ada.batch_mean.item(), ada.batch_std.item()) == (64.0, 0.4, 0.333, 20.0, 100.0)
    mag = get_margin("magface")
    assert (mag.l_a, mag.u_a, mag.l_m, mag.u_m, mag.lambda_g) == (10.0, 110.0, 0.45, 0.8, 35.0)
    head = get_head("arcface", 128, 1000, sample_rate=0.5, m2=0.45, gradient="straight_through")
    assert head.sample_rate == 0.5 and head.margin.m2 == 0.45
    assert head.margin.gradient == "straight_through"
    assert head.weight.shape == (1000, 128)
    assert head.weight.std().item() == pytest.approx(0.01, rel=0.05)  # N(0, 0.01) init


@pytest.mark.parametrize("name", ["arcface", "cosface", "combined", "curricularface", "adaface", "magface", "qgface"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_finite_at_s64(name, dtype):
    """Embeddings equal to (or opposite) their centres: cosines at +-1 in fp16/bf16."""
    torch.manual_seed(0)
    head = get_head(name, 32, 10)
    with torch.no_grad():
        head.weight.normal_()
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    base = head.weight.detach()[labels].clone()
    base[4:] = -base[4:]
    base[2] = head.weight.detach()[9]  # cos = 1 with a non-target
    for norm in (1.0, 30.0, 200.0):
        emb = (torch.nn.functional.normalize(base, dim=1) * norm).to(dtype).requires_grad_(True)
        head.zero_grad()
        loss, logs = head(emb, labels)
        loss.backward()
        assert loss.dtype == torch.float32 and torch.isfinite(loss), (name, dtype, norm)
        assert torch.isfinite(emb.grad).all() and torch.isfinite(head.weight.grad).all()
        assert all(torch.isfinite(v).all() for v in logs.values())


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: CombinedMargin(s=-1.0), "s must be"),
        (lambda: CombinedMargin(gradient="approx"), "gradient must be one of"),
        (lambda: CombinedMargin(m2=-0.1), "m2 and m3"),
        (lambda: CurricularFace(momentum=2.0), "momentum"),
        (lambda: MagFace(l_a=50.0, u_a=10.0), "l_a < u_a"),
        (lambda: QGFace(gate_threshold=1.5), "gate_threshold"),
        (lambda: get_margin("spherefacex"), "unknown head name"),
    ],
)
def test_bad_margin_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_margin_forward_bad_shapes():
    with pytest.raises(ValueError, match="cos must be"):
        CombinedMargin()(torch.zeros(3, 4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="needs norms"):
        AdaFace()(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long))
