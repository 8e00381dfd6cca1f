"""The qgface stage: paired views as the public RandomRescale (checked against torch's own interpolation),
rank-independent and reproducible per step; the loss drops on a fixed batch with the contrastive term
active; an interrupted run resumes exactly, queue included; the recipes load; bad settings are named."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import TINY, assert_same_weights, assert_weights_close, losses, metrics_rows, run_module, run_torchrun
from PIL import Image
from stage_helpers import extra_state, faces, one_batch, straight_and_resumed

from mrface.data.synthface import SynthFace
from mrface.models import load_model
from mrface.training.config import RecipeError, load_recipe
from mrface.training.stages.qgface import DOWN_FILTERS, UP_FILTERS, PairedViews, jpeg_roundtrip
from mrface.training.trainer import train

RUN = [*TINY, "head.name=qgface", "qgface.queue_size=24"]


def _cfg(*overrides):
    return load_recipe("synthface_tiny_qgface", [*RUN, *overrides])


def test_views_follow_random_rescale_and_do_not_depend_on_the_rank_split(generator):
    x = torch.rand(8, 3, 112, 112, generator=generator) * 2 - 1
    whole = PairedViews((0.1, 0.5), True, 7, 0, 1, 1)
    halves = [PairedViews((0.1, 0.5), True, 7, r, 2, 1) for r in range(2)]
    clean, low = whole(x, 3, 0)
    parts = [v(x[4 * r : 4 * r + 4], 3, 0) for r, v in enumerate(halves)]
    assert torch.equal(torch.cat([p[0] for p in parts]), clean) and torch.equal(torch.cat([p[1] for p in parts]), low)
    again = whole(x, 3, 0)
    assert torch.equal(again[1], low) and not torch.equal(whole(x, 4, 0)[1], low)  # per-step draws

    d = whole.draws(64, 112, 3, 0)
    assert d["sides"].min() >= 11 and d["sides"].max() <= 55  # int(U(0.1, 0.5) * 112)
    assert set(d["down"].tolist()) == set(range(5)) and set(d["up"].tolist()) == set(range(5))
    # An image drawn bilinear (antialiased) down and bilinear up equals torch's own interpolation.
    d = whole.draws(8, 112, 3, 0)
    hits = [i for i in range(8) if DOWN_FILTERS[d["down"][i]] == "bilinear_aa" and UP_FILTERS[d["up"][i]] == "bilinear"]
    for i in hits:
        s = int(d["sides"][i])
        ref = F.interpolate(x[i : i + 1], size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        ref = F.interpolate(ref, size=(112, 112), mode="bilinear", align_corners=False)[0]
        ref = ref.flip(-1) if d["flip_low"][i] else ref
        torch.testing.assert_close(low[i], ref, rtol=1e-4, atol=1e-4)
    for i in range(8):
        torch.testing.assert_close(clean[i], x[i].flip(-1) if d["flip_clean"][i] else x[i], rtol=0, atol=0)


def _pil_jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """(3, h, w) normalised image -> PIL JPEG round trip (as the public RandomRescale saves and reopens it)."""
    pixels = (x * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="jpeg", quality=quality)
    return torch.from_numpy(np.array(Image.open(buf))).permute(2, 0, 1).float() / 127.5 - 1.0


def test_jpeg_step_equals_pil_and_sits_between_down_and_up():
    small = torch.from_numpy(SynthFace(seed=0).render(np.array([3]), np.array([1]))[0].copy()).permute(2, 0, 1)
    small = F.interpolate(small[None].float() / 127.5 - 1, size=(23, 23), mode="bilinear", antialias=True)[0]
    ours = jpeg_roundtrip(small[None], 75)[0]
    ref = _pil_jpeg(small, 75)
    assert (ref - small).abs().max() > 0.1  # q75 visibly changes a 23 px face
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)

    x = torch.rand(8, 3, 112, 112, generator=torch.Generator().manual_seed(5)) * 2 - 1
    views = PairedViews((0.1, 0.5), False, 7, 0, 1, 1, jpeg_quality=75)
    _, low = views(x, 2, 0)
    d = views.draws(8, 112, 2, 0)
    hits = [i for i in range(8) if DOWN_FILTERS[d["down"][i]] == "bilinear_aa" and UP_FILTERS[d["up"][i]] != "lanczos"]
    assert hits, "no image drew bilinear_aa down at this seed"
    for i in hits:
        s = int(d["sides"][i])
        ref = F.interpolate(x[i : i + 1], size=(s, s), mode="bilinear", antialias=True, align_corners=False)[0]
        mode = UP_FILTERS[d["up"][i]]
        kw = {} if mode == "nearest" else {"align_corners": False}
        ref = F.interpolate(_pil_jpeg(ref, 75)[None], size=(112, 112), mode=mode, **kw)[0]
        torch.testing.assert_close(low[i], ref, rtol=0, atol=2e-2)  # 2.5 grey levels: uint8 rounding before the JPEG


def test_loss_drops_on_a_fixed_batch_with_the_contrastive_term_active(tmp_path):
    out = tmp_path / "run"
    # momentum 1: the norm statistics are the batch's own, so about half of the pairs fall under q_thr 0.6
    cfg = _cfg(
        "head.args.momentum=1.0",
        "head.args.gate_threshold=0.6",
        "schedule.kind=constant",
        "optim.lr=0.05",
        "train.max_steps=8",
        f"output={out}",
    )
    result = train(cfg, dataset=one_batch())
    assert result.steps == 8
    assert result.losses[-1] < result.losses[0] - 0.3, result.losses
    rows = metrics_rows(out)
    gates = [r["qgface/pair_gate"] for r in rows if "qgface/pair_gate" in r]
    assert max(gates) > 0, gates
    assert rows[-1]["qgface/queue_fill"] == 1.0  # 16 entries per step into 24 slots
    model = load_model(out / "model.safetensors")
    assert model.embedding_size == 32


def test_interrupted_run_resumes_exactly_with_its_queue(tmp_path, monkeypatch):
    common = [
        "train.max_steps=5",
        "schedule.warmup_epochs=0.5",
        "head.args.momentum=1.0",
        "head.args.gate_threshold=0.6",
    ]

    def queue_wrapped(run):
        state2 = extra_state(run, 2)
        assert int(state2["fill"]) == 24 and (state2["queue_labels"] >= 0).all()  # wrapped after 2 steps of 16

    # 32 images, batch 8: 4 steps per epoch
    straight, resumed = straight_and_resumed(_cfg, common, faces(), tmp_path, monkeypatch, while_stopped=queue_wrapped)
    assert losses(resumed) == losses(straight)
    assert_same_weights(resumed / "model.safetensors", straight / "model.safetensors")
    states = [extra_state(r, 5) for r in (resumed, straight)]
    for key in ("queue", "queue_labels", "queue_proxies", "fill", "batch_mean"):
        assert torch.equal(states[0][key], states[1][key]), key


def test_recipes_load_and_bad_settings_are_named(tmp_path):
    paper = load_recipe("qgface_ms1mv2_r50")
    assert paper.stage == "qgface" and paper.head.name == "qgface" and paper.model.name == "adaface_ir50"
    assert paper.qgface.queue_size % (2 * 512) == 0  # whole enqueued blocks of the global batch 512
    assert load_recipe("synthface_tiny_qgface").qgface.scale == [0.1, 0.5]
    with pytest.raises(RecipeError, match="augment.kind='adaface' must be none"):
        _cfg("augment.kind=adaface")
    with pytest.raises(RecipeError, match=r"qgface.scale=\[0.5, 0.1\]"):
        _cfg("qgface.scale=[0.5,0.1]")
    with pytest.raises(RecipeError, match="qgface.jpeg_quality=101"):
        _cfg("qgface.jpeg_quality=101")
    with pytest.raises(ValueError, match="head.name='adaface'"):
        train(_cfg("head.name=adaface", "train.max_steps=1", f"output={tmp_path / 'a'}"))
    with pytest.raises(ValueError, match="qgface.args=.* do not fit QGFaceContrastive"):
        train(_cfg("qgface.args.colour=1", "train.max_steps=1", f"output={tmp_path / 'b'}"))


DIST_RUN = [
    *RUN,
    "train.max_steps=3",
    "model.freeze_bn=true",
    "optim.clip_grad=2.0",
    "schedule.warmup_epochs=0.5",
    "data.synth_identities=9",
    "head.args.momentum=1.0",
    "head.args.gate_threshold=0.6",
]


@pytest.mark.distributed
def test_two_gloo_ranks_match_one_process(tmp_path):
    """Each rank enqueues the global batch (public sync_GPU) in global-batch order: queue 24 is not a multiple of
    the 32 entries enqueued per step, so the truncated block must be ordered as one process orders it."""
    one, two = tmp_path / "one", tmp_path / "two"
    run_module(["synthface_tiny_qgface", *DIST_RUN, "data.batch_size=16", f"output={one}"])
    run_torchrun(["synthface_tiny_qgface", *DIST_RUN, "data.batch_size=8", f"output={two}"])
    assert losses(two) == pytest.approx(losses(one), rel=1e-4, abs=1e-5)
    assert max(r.get("qgface/pair_gate", 0) for r in metrics_rows(one)) > 0  # the contrastive term took part
    assert_weights_close(two / "model.safetensors", one / "model.safetensors", rel=1e-3)
    q1 = extra_state(one, 3)
    for r in range(2):
        q2 = extra_state(two, 3, rank=r)
        assert torch.equal(q2["queue_labels"], q1["queue_labels"]), r
        torch.testing.assert_close(q2["queue"], q1["queue"], rtol=0, atol=1e-4)
        torch.testing.assert_close(q2["queue_proxies"], q1["queue_proxies"], rtol=0, atol=1e-4)
