"""``mrface eval synthface``: the SynthFace evaluation report (tables + ROC, accuracy-vs-resolution and
ERC plots) produced without any face data. Numbers are fractions in the JSON, percentages in tables.

Models compared on the same pairs: the identity oracle (one-hot embeddings: must reach 100 %), the
training-free Fisherfaces reference (PCA + LDA on disjoint identities) at every resolution pair,
a random-init ``iresnet_tiny`` and label-independent random embeddings (chance level).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrface.data.synthface import SynthFace
from mrface.eval.metrics import erc_curve, evaluate_verification, l2_normalize, pair_quality
from mrface.eval.report import new_report, write_report
from mrface.eval.synthface_bench import Fisherfaces, identity_oracle, synthface_pairs
from mrface.eval.verification import ExtractOptions, crossres_rows, embed_at, score_pairs
from mrface.models import get_model


def _pct(x: float) -> float:
    return round(100.0 * float(x), 2)


def _roc_series(label: str, res: Any) -> dict[str, Any]:
    order = np.argsort(res.fpr)
    return {"label": label, "x": res.fpr[order].tolist(), "y": res.tpr[order].tolist()}


def synthface_report(
    run_dir: str | os.PathLike,
    *,
    num_pairs: int = 600,
    test_identities: int = 200,
    train_identities: int = 150,
    train_images: int = 8,
    resolutions: tuple[int, ...] = (112, 28, 14, 7),
    seed: int = 0,
    include_random_cnn: bool = True,
    options: ExtractOptions | None = None,
    erc_fmr: float = 1e-2,
) -> list[Path]:
    """Build the report in ``run_dir``; returns the files written (results.json, report.md, PNGs)."""
    options = options or ExtractOptions()
    pairs, ids = synthface_pairs(num_pairs, test_identities, seed=seed)
    train_ids = np.repeat(np.arange(train_identities), train_images)
    train = SynthFace(seed=seed).render(train_ids, np.tile(np.arange(train_images), train_identities))
    fisher = Fisherfaces().fit(train, train_ids)

    settings = {
        "dataset": "SynthFace",
        "seed": seed,
        "pairs": num_pairs,
        "test_identities": test_identities,
        "train_identities": train_identities,
        "train_images_per_identity": train_images,
        "resolutions": list(resolutions),
        "protocol": "10-fold, squared L2 thresholds 0..3.99 step 0.01",
        "degradation": f"112 -> r with '{options.filter}', branch/trunk input resized by model.preprocess",
        "extraction": options.as_dict(),
        "erc_fmr": erc_fmr,
    }
    report = new_report(
        "synthface", "SynthFace verification report", settings=settings, model=json.loads(fisher.metadata.to_json())
    )
    results: dict[str, Any] = {}
    rows: list[list[Any]] = []
    roc: list[dict[str, Any]] = []

    oracle = identity_oracle(ids)
    res = evaluate_verification(oracle[0::2], oracle[1::2], pairs.issame)
    results["identity_oracle"] = res.summary()
    rows.append(["identity oracle (one-hot)", "112&112", _pct(res.accuracy), _pct(res.accuracy_std), _pct(res.val)])
    roc.append(_roc_series("identity oracle", res))

    feats = {r: embed_at(fisher, pairs.images, r, False, options, pairs.color) for r in resolutions}
    matrix = []
    for r1, r2 in crossres_rows(resolutions):
        res = score_pairs(feats[r1].features[0::2], feats[r2].features[1::2], pairs.issame)
        results[f"fisherfaces_{r1}&{r2}"] = res.summary()
        matrix.append([f"{r1}&{r2}", _pct(res.accuracy), _pct(res.accuracy_std), _pct(res.val)])
        if (r1, r2) in ((112, 112), (112, min(resolutions)), (min(resolutions), min(resolutions))):
            roc.append(_roc_series(f"Fisherfaces {r1}&{r2}", res))
        if (r1, r2) == (112, 112):
            rows.append(
                [
                    "Fisherfaces (PCA+LDA, training-free)",
                    "112&112",
                    _pct(res.accuracy),
                    _pct(res.accuracy_std),
                    _pct(res.val),
                ]
            )

    if include_random_cnn:
        torch.manual_seed(seed)
        cnn = get_model("iresnet_tiny", width=0.125)
        e = embed_at(cnn, pairs.images, 112, False, options, pairs.color).features
        res = score_pairs(e[0::2], e[1::2], pairs.issame)
        results["random_init_iresnet_tiny"] = res.summary()
        rows.append(
            [
                "random-init iresnet_tiny (width 1/8)",
                "112&112",
                _pct(res.accuracy),
                _pct(res.accuracy_std),
                _pct(res.val),
            ]
        )
        roc.append(_roc_series("random-init iresnet_tiny", res))

    noise = np.random.default_rng(seed).standard_normal((2 * num_pairs, 64))
    res = evaluate_verification(noise[0::2], noise[1::2], pairs.issame)
    results["random_embeddings"] = res.summary()
    rows.append(["random embeddings (chance)", "—", _pct(res.accuracy), _pct(res.accuracy_std), _pct(res.val)])

    columns = ["pair", "accuracy %", "± std", "VAL@FAR=1e-3 %"]
    report["tables"].append({"title": "Verification (10-fold)", "columns": ["model", *columns], "rows": rows})
    report["tables"].append(
        {
            "title": f"Fisherfaces cross-resolution matrix ({options.filter} degradation)",
            "columns": columns,
            "rows": matrix,
        }
    )
    report["plots"].append(
        {
            "name": "roc",
            "title": "SynthFace ROC (fold-averaged)",
            "xlabel": "FAR",
            "ylabel": "TAR",
            "xscale": "log",
            "series": roc,
        }
    )
    low = sorted(r for r in resolutions if r != 112)
    report["plots"].append(
        {
            "name": "accuracy_vs_resolution",
            "title": "Fisherfaces accuracy vs probe resolution",
            "xlabel": "resolution r (px)",
            "ylabel": "accuracy %",
            "xscale": "log",
            "series": [
                {
                    "label": "112&r",
                    "x": [*low, 112],
                    "y": [results[f"fisherfaces_112&{r}"]["accuracy"] * 100 for r in [*low, 112]],
                },
                {
                    "label": "r&r",
                    "x": [*low, 112],
                    "y": [results[f"fisherfaces_{r}&{r}"]["accuracy"] * 100 for r in [*low, 112]],
                },
            ],
        }
    )

    # ERC: each image at a random resolution; quality = resolution; pair quality = the smaller one
    rng = np.random.default_rng(seed + 1)
    res_of = rng.choice(np.asarray(resolutions), size=2 * num_pairs)
    mixed = np.stack([feats[r].features[i] for i, r in enumerate(res_of)])
    mixed = l2_normalize(mixed)
    scores = np.sum(mixed[0::2] * mixed[1::2], axis=1)
    labels = pairs.issame.astype(int)
    erc_res = erc_curve(scores, labels, pair_quality(res_of[0::2], res_of[1::2]), fmr=erc_fmr)
    erc_rand = erc_curve(scores, labels, rng.random(num_pairs), fmr=erc_fmr)
    results["erc_mixed_resolution"] = {
        "reject": erc_res.reject_fractions,
        "fnmr_resolution_quality": erc_res.fnmr,
        "fnmr_random_quality": erc_rand.fnmr,
        "threshold": erc_res.threshold,
    }
    report["plots"].append(
        {
            "name": "erc",
            "title": f"ERC, mixed resolutions (FMR {erc_fmr:g})",
            "xlabel": "rejected fraction",
            "ylabel": "FNMR",
            "series": [
                {"label": "quality = min resolution", "x": erc_res.reject_fractions, "y": erc_res.fnmr},
                {"label": "random quality", "x": erc_rand.reject_fractions, "y": erc_rand.fnmr},
            ],
        }
    )
    report["results"] = results
    return write_report(run_dir, report)
