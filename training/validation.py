"""Periodic verification on ``.bin`` sets during training (rank 0), through ``mrface.eval``.

For each set and each resolution r of ``eval.resolutions`` the pairs are scored at (112, r): the
second image of each pair is degraded 112 -> r and goes through the model's branch for r when it
has one (BTNet), else back up to 112 through the trunk. Keys: ``val/<set>@112&<r>`` (accuracy,
fraction).
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from mrface.data.bins import VerificationPairs, load_bin
from mrface.training.config import EvalConfig


class Validator:
    """Loads the sets once; ``run(model, step)`` returns {key: accuracy} and logs a line."""

    def __init__(self, cfg: EvalConfig, log: logging.Logger, skip_corrupt: bool = False) -> None:
        """``skip_corrupt`` (``data.skip_corrupt``): drop pairs with an undecodable image, named in the log."""
        from mrface.eval.verification import ExtractOptions  # evaluation is optional until needed

        self.cfg, self.log = cfg, log
        self.options = ExtractOptions(batch_size=cfg.batch_size)
        self.sets: dict[str, VerificationPairs] = {}
        for path in cfg.bins:
            if not Path(path).is_file():
                raise FileNotFoundError(f"eval.bins: {path} does not exist (expected a verification .bin)")
            self.sets[Path(path).stem] = load_bin(path, skip_corrupt=skip_corrupt)
            for msg in self.sets[Path(path).stem].skipped:
                log.warning(f"eval.bins: corrupt pair skipped: {msg}")

    def run(self, model: nn.Module, step: int) -> dict[str, float]:
        from mrface.eval.verification import evaluate_pairs

        was_training = model.training
        model.eval()
        out = {}
        try:
            for name, pairs in self.sets.items():
                for r in self.cfg.resolutions:
                    res = evaluate_pairs(model, pairs, 112, int(r), options=self.options)
                    out[f"val/{name}@112&{r}"] = float(res.summary()["accuracy"])
        finally:
            model.train(was_training)
        self.log.info(f"step {step}: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in out.items()))
        return out
