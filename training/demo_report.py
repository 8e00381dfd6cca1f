"""The demo's cross-resolution table with its uncertainty, and its PNG.

Each cell is a 10-fold verification accuracy; trunk only (the low-resolution face resized back to
112 through the TNet) and BTNet (each face through the branch of its resolution) are scored on the
SAME pairs and folds, so the gain is measured per fold and its uncertainty is the paired one:
``se = std(fold gains, ddof=1) / sqrt(10)``, 95 % interval ``gain ± t(0.975, 9) · se``. This is the
pair-sampling uncertainty of ONE trained model; seed-to-seed training variation comes on top (the
README gives the spread over seeds). A gain whose interval holds 0 is reported as "within noise"
(112&112: "same path", both are the trunk).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from mrface.io import save_figure

PAIRS_ORDER = ("112&28", "112&14", "112&7", "28&28", "14&14", "7&7", "112&112")
T95 = 2.262157162798205  # scipy.stats.t.ppf(0.975, 9): 10 folds -> 9 degrees of freedom


def fold_matrix(model: Any, pairs: Any, resolutions: Sequence[int], options: Any) -> dict[str, dict[str, np.ndarray]]:
    """{pair: {"trunk_only": fold accuracies (10,), "btnet": (10,)}} for BTNet's rows over ``resolutions``.

    ``model``: a BTNet; ``pairs``: :class:`~mrface.data.bins.VerificationPairs` at 112;
    ``options``: :class:`~mrface.eval.verification.ExtractOptions`.
    """
    from mrface.eval.verification import crossres_rows, embed_at, score_pairs

    high = int(getattr(model, "input_size", 112))
    rows = crossres_rows(resolutions, high)
    needed = sorted({r for row in rows for r in row})
    out: dict[str, dict[str, np.ndarray]] = {}
    for mode, upsample in (("btnet", False), ("trunk_only", True)):
        feats = {
            r: embed_at(model, pairs.images, r, upsample and r != high, options, pairs.color).features for r in needed
        }
        for r1, r2 in rows:
            res = score_pairs(feats[r1][0::2], feats[r2][1::2], pairs.issame)
            out.setdefault(f"{r1}&{r2}", {})[mode] = np.asarray(res.fold_accuracies, np.float64)
    return out


def summarise(folds: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    """Per pair: accuracies (fractions), their fold standard errors, the paired gain, its se and 95 % interval."""
    out = {}
    for pair, f in folds.items():
        t, b = f["trunk_only"], f["btnet"]
        k = len(t)
        d = b - t
        gain_se = float(d.std(ddof=1) / np.sqrt(k))
        gain = float(d.mean())
        lo, hi = gain - T95 * gain_se, gain + T95 * gain_se
        out[pair] = {
            "trunk_only": float(t.mean()),
            "btnet": float(b.mean()),
            "trunk_only_se": float(t.std(ddof=1) / np.sqrt(k)),
            "btnet_se": float(b.std(ddof=1) / np.sqrt(k)),
            "gain": gain,
            "gain_se": gain_se,
            "gain_ci95": [lo, hi],
            "verdict": (
                "same path"
                if not d.any()
                else "BTNet better"
                if lo > 0
                else "trunk better"
                if hi < 0
                else "within noise"
            ),
        }
    return out


def table_rows(summary: dict[str, dict[str, Any]]) -> list[list[Any]]:
    """Report rows: pair, trunk only ± se, BTNet ± se, gain, 95 % interval, verdict (percent)."""
    rows = []
    for pair in PAIRS_ORDER:
        if pair not in summary:
            continue
        s = summary[pair]
        lo, hi = s["gain_ci95"]
        rows.append(
            [
                pair,
                f"{100 * s['trunk_only']:.2f} ± {100 * s['trunk_only_se']:.2f}",
                f"{100 * s['btnet']:.2f} ± {100 * s['btnet_se']:.2f}",
                f"{100 * s['gain']:+.2f}",
                f"[{100 * lo:+.2f}, {100 * hi:+.2f}]",
                s["verdict"],
            ]
        )
    return rows


TABLE_COLUMNS = ["pair", "trunk only % ± se", "BTNet % ± se", "gain", "gain 95 % interval", "verdict"]


def format_table(summary: dict[str, dict[str, Any]]) -> str:
    """Markdown table of :func:`table_rows` for the terminal."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|---|---:|---:|---:|---:|---|"]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in table_rows(summary)]
    return "\n".join(lines)


def plot_table_png(summary: dict[str, dict[str, Any]], path: str | os.PathLike, title: str) -> None:
    """Bars per pair (trunk only, BTNet) with 95 % error bars (t · fold se); written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [p for p in PAIRS_ORDER if p in summary]
    x = np.arange(len(pairs))
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=100)
    try:
        lows, highs = [], []
        for i, (key, label) in enumerate((("trunk_only", "trunk only (upsampled)"), ("btnet", "BTNet (branches)"))):
            vals = np.array([100 * summary[p][key] for p in pairs])
            err = np.array([100 * T95 * summary[p][f"{key}_se"] for p in pairs])
            ax.bar(x + (i - 0.5) * 0.38, vals, 0.38, yerr=err, capsize=3, label=label)
            lows.append(vals - err)
            highs.append(vals + err)
        top = np.max(highs, axis=0)
        for j, p in enumerate(pairs):
            s = summary[p]
            ax.annotate(
                f"{100 * s['gain']:+.1f}\n{s['verdict']}", (j, top[j] + 1), ha="center", va="bottom", fontsize=7
            )
        ax.set_xticks(x, pairs)
        ax.set_ylim(max(0.0, float(np.min(lows)) - 5), float(np.max(top)) + 12)
        ax.set_xlabel("resolution pair (px)")
        ax.set_ylabel("10-fold accuracy % (bars: 95 % interval over folds)")
        ax.set_title(title, fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        save_figure(fig, path)
    finally:
        plt.close(fig)
