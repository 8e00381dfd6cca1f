"""Template verification on SynthFace: FaceCoresetNet vs mean and norm-weighted pooling (TAR@FAR=1e-2).

A tiny TNet (``synthface_tiny_trunk`` recipe, or ``--trunk`` a trained run) embeds SynthFace faces degraded
to mixed resolutions (each image: one side of 112/56/28/20/14/10/7, antialiased bilinear down, bilinear back
up), so the feature norm varies with quality. Two aggregators are trained on the frozen features of the
training identities (templates of 1..``--max-size`` images, AdaFace head s=48 m=0.8 h=0.333, AdamW lr 1e-3,
public sampling): the mean-of-LayerNorm-outputs aggregator (mrface/models/coreset.py at the git commit
``--before``) and the public TemplateAggregateModel. Held-out identities give two disjoint templates each
(sizes 1..N); genuine pairs are an identity's two templates, impostor pairs all cross-identity pairs; the
score is the cosine of the template embeddings. Prints one table row per aggregator and writes ``--json``.

Run: ``python benchmarks/coreset_templates.py --json out.json`` (a few CPU minutes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

from mrface.data.synthface import SynthFace
from mrface.eval.metrics import tar_at_far
from mrface.io import write_text
from mrface.losses import get_head
from mrface.models import load_model
from mrface.models.coreset import FaceCoresetNet
from mrface.ops import degrade_per_sample
from mrface.training.config import load_recipe
from mrface.training.trainer import train

SIDES = (112, 56, 28, 20, 14, 10, 7)


def old_aggregator_class(commit: str) -> type:
    """FaceCoresetNet as mrface/models/coreset.py held it at ``commit`` (before the public network)."""
    source = subprocess.run(
        ["git", "show", f"{commit}:mrface/models/coreset.py"],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    ).stdout
    module = types.ModuleType("coreset_before")
    exec(compile(source, f"{commit}:mrface/models/coreset.py", "exec"), module.__dict__)  # noqa: S102 - our own history
    return module.FaceCoresetNet


@torch.no_grad()
def features(trunk: torch.nn.Module, identities: int, images: int, seed: int, offset: int) -> tuple:
    """Degraded SynthFace faces -> (unit features (I, M, D), norms (I, M), sides (I, M))."""
    ids = np.repeat(np.arange(offset, offset + identities), images)
    rendered = SynthFace(seed).render(ids, np.tile(np.arange(images), identities))  # RGB uint8 (N, H, W, 3)
    x = torch.from_numpy(rendered).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    g = torch.Generator().manual_seed(seed + 17)
    sides = torch.tensor(SIDES)[torch.randint(0, len(SIDES), (len(x),), generator=g)]
    x = degrade_per_sample(x, sides, torch.zeros(len(x), dtype=torch.int64), ("bilinear_aa",), "bilinear")
    out = torch.cat([trunk(x[i : i + 64]).float() for i in range(0, len(x), 64)])
    norms = out.norm(dim=1).clamp_min(1e-6)
    unit = out / norms[:, None]
    return unit.view(identities, images, -1), norms.view(identities, images), sides.view(identities, images)


def sample_templates(unit, norms, count: int, max_size: int, g: torch.Generator):
    """``count`` random templates (identity, 1..max_size images) -> padded (B, W, D), (B, W), lengths, labels."""
    ids = torch.randint(0, unit.shape[0], (count,), generator=g)
    lengths = torch.randint(1, max_size + 1, (count,), generator=g)
    f = unit.new_zeros(count, max_size, unit.shape[-1])
    n = norms.new_ones(count, max_size)
    for b in range(count):
        pick = torch.randperm(unit.shape[1], generator=g)[: lengths[b]]
        f[b, : lengths[b]], n[b, : lengths[b]] = unit[ids[b], pick], norms[ids[b], pick]
    return f, n, lengths, ids


def train_aggregator(agg: torch.nn.Module, unit, norms, steps: int, max_size: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    head = get_head("adaface", unit.shape[-1], unit.shape[0], s=48.0, m=0.8, h=0.333)
    params = [*agg.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-3)
    g = torch.Generator().manual_seed(seed)
    start = time.time()
    for step in range(steps):
        agg.train()
        f, n, lengths, ids = sample_templates(unit, norms, 32, max_size, g)
        emb, norm = agg(f, n, lengths, torch.Generator().manual_seed(seed * 100003 + step))
        loss, _ = head(emb * norm[:, None], ids)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            rate = (step + 1) / (time.time() - start)
            print(f"  step {step + 1}/{steps} loss {float(loss.detach()):.3f} ({rate:.1f} it/s)", file=sys.stderr)
    return agg.eval()


def evaluation_templates(unit, norms, max_size: int, seed: int):
    """Two disjoint templates per identity, sizes 1..max_size each."""
    g = torch.Generator().manual_seed(seed)
    idn, m = unit.shape[:2]
    f = unit.new_zeros(2 * idn, max_size, unit.shape[-1])
    n = norms.new_ones(2 * idn, max_size)
    lengths = torch.randint(1, max_size + 1, (2 * idn,), generator=g)
    for i in range(idn):
        perm = torch.randperm(m, generator=g)
        a, b = perm[: lengths[2 * i]], perm[m // 2 : m // 2 + lengths[2 * i + 1]]
        f[2 * i, : len(a)], n[2 * i, : len(a)] = unit[i, a], norms[i, a]
        f[2 * i + 1, : len(b)], n[2 * i + 1, : len(b)] = unit[i, b], norms[i, b]
    return f, n, lengths, torch.arange(idn).repeat_interleave(2)


def tar(templates: torch.Tensor, labels: torch.Tensor) -> float:
    t = torch.nn.functional.normalize(templates.double(), dim=1)
    scores = t @ t.T
    i, j = torch.triu_indices(len(t), len(t), 1)
    same = (labels[i] == labels[j]).numpy().astype(int)
    return float(tar_at_far(scores[i, j].numpy(), same, fars=(1e-2,)).tar_at_far[1e-2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trunk", help="a trained synthface trunk run (default: train one here)")
    parser.add_argument("--workdir", default="runs/coreset_templates")
    parser.add_argument("--before", default="fa4983e", help="git commit holding the mean-of-LayerNorm aggregator")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--max-size", type=int, default=6)
    parser.add_argument("--images", type=int, default=12, help="images per identity")
    parser.add_argument("--test-identities", type=int, default=100)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    work = Path(args.workdir)
    trunk_run = Path(args.trunk) if args.trunk else work / "trunk"
    if not (trunk_run / "model.safetensors").is_file():
        print("training the tiny trunk (synthface_tiny_trunk)", file=sys.stderr)
        train(load_recipe("synthface_tiny_trunk", [f"output={trunk_run}"]))
    trunk = load_model(trunk_run / "model.safetensors").eval()
    print("embedding degraded SynthFace faces", file=sys.stderr)
    unit, norms, _ = features(trunk, 64, args.images, seed=0, offset=0)
    test_unit, test_norms, sides = features(trunk, args.test_identities, args.images, seed=0, offset=1000)
    lr = sides <= 14
    print(
        f"feature norm: mean {float(test_norms[~lr].mean()):.2f} at sides > 14, {float(test_norms[lr].mean()):.2f} "
        f"at sides <= 14",
        file=sys.stderr,
    )
    f, n, lengths, labels = evaluation_templates(test_unit, test_norms, args.max_size, seed=1)
    valid = (torch.arange(args.max_size)[None] < lengths[:, None]).float()[..., None]
    rows = {"mean pooling": (f * valid).sum(1), "norm-weighted pooling": (f * n[..., None] * valid).sum(1)}
    dim = unit.shape[-1]
    for name, cls in (
        ("coreset, before (mrface aggregator)", old_aggregator_class(args.before)),
        ("coreset, after (public TemplateAggregateModel)", FaceCoresetNet),
    ):
        print(f"training {name}", file=sys.stderr)
        torch.manual_seed(0)
        agg = train_aggregator(cls(dim=dim, k=3, heads=8, gamma=0.01), unit, norms, args.steps, args.max_size, seed=0)
        with torch.no_grad():
            emb, norm = agg(f, n, lengths, torch.Generator().manual_seed(7))
        rows[name] = emb * norm[:, None]
    results = {name: tar(t, labels) for name, t in rows.items()}
    print(f"| aggregation ({len(labels) // 2} identities, 2 templates of 1..{args.max_size} images) | TAR@FAR=1e-2 |")
    print("|---|---|")
    for name, value in results.items():
        print(f"| {name} | {value:.4f} |")
    if args.json:
        summary = {"steps": args.steps, "max_size": args.max_size, "tar_at_far_1e-2": results}
        write_text(args.json, json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
