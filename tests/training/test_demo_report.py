"""The demo's table uncertainty (paired fold gains, t interval) against scipy, its fold matrix against
``crossres_matrix``'s averages, and its PNG."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from scipy import stats

from mrface.data.bins import VerificationPairs
from mrface.data.synthface import SynthFace, verification_pairs
from mrface.eval.verification import ExtractOptions, crossres_matrix
from mrface.models.registry import get_model
from mrface.training.demo_report import PAIRS_ORDER, T95, fold_matrix, format_table, plot_table_png, summarise


def test_gain_interval_is_the_paired_t_interval():
    assert T95 == pytest.approx(stats.t.ppf(0.975, 9), rel=1e-12)
    rng = np.random.default_rng(0)
    trunk = rng.uniform(0.7, 0.8, 10)
    folds = {
        "112&7": {"trunk_only": trunk, "btnet": trunk + rng.normal(0.002, 0.02, 10)},
        "7&7": {"trunk_only": trunk, "btnet": trunk + 0.05 + rng.normal(0, 0.005, 10)},
    }
    s = summarise(folds)
    for pair, f in folds.items():
        d = f["btnet"] - f["trunk_only"]
        lo, hi = stats.t.interval(0.95, 9, loc=d.mean(), scale=stats.sem(d))
        assert s[pair]["gain_ci95"] == pytest.approx([lo, hi], abs=1e-12)
        assert s[pair]["trunk_only_se"] == pytest.approx(stats.sem(f["trunk_only"]), abs=1e-12)
        # the paired test says the same thing as the interval
        p = stats.ttest_rel(f["btnet"], f["trunk_only"]).pvalue
        assert (s[pair]["verdict"] == "within noise") == (p >= 0.05)
    assert s["7&7"]["verdict"] == "BTNet better"
    assert "within noise" in format_table(s) or "BTNet better" in format_table(s)


@pytest.fixture(scope="module")
def tiny_setup():
    torch.manual_seed(0)
    model = get_model("btnet_tiny").eval()
    ids, imgs, issame = verification_pairs(20, 40, 0, 50, seed=1)
    pairs = VerificationPairs(SynthFace(seed=2).render(ids.reshape(-1), imgs.reshape(-1)), issame, "RGB")
    return model, pairs


def test_fold_matrix_means_match_crossres_matrix(tiny_setup):
    model, pairs = tiny_setup
    options = ExtractOptions(batch_size=40)
    folds = fold_matrix(model, pairs, (112, 28, 14, 7), options)
    assert set(folds) == set(PAIRS_ORDER)
    rows = crossres_matrix(model, {"s": pairs}, (112, 28, 14, 7), baseline=True, options=options)
    for r in rows:
        mode = "btnet" if r["mode"] == "branch" else "trunk_only"
        assert folds[r["pair"]][mode].mean() == pytest.approx(r["average"], abs=1e-12), r["pair"]


def test_plot_writes_a_png(tiny_setup, tmp_path):
    rng = np.random.default_rng(1)
    folds = {p: {"trunk_only": rng.uniform(0.6, 0.9, 10), "btnet": rng.uniform(0.6, 0.9, 10)} for p in PAIRS_ORDER}
    path = tmp_path / "t.png"
    plot_table_png(summarise(folds), path, "title")
    im = cv2.imread(str(path))
    assert im is not None and im.shape[0] > 100 and im.shape[1] > 100
