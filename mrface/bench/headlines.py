"""Headline lines of BENCHMARKS.md: per benchmark, a function from its entry (rows, extra) to (what, result) pairs.

Each function is declared on its benchmark's spec (:class:`mrface.bench.specs.Headline`); the report calls it
for the selected run of every benchmark and lists the lines in the headline table. A function returns no line
when the rows lack what it compares.
"""

from __future__ import annotations


def positive(value: object) -> float | None:
    """A positive number as float, else None (missing, zero, negative, boolean or text)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else None


def nonnegative(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0 else None


def _x(value: float) -> str:
    return f"{value:.2f}×" if value < 10 else f"{value:.1f}×"


def _ms(value: float) -> str:
    return f"{value:.3g}"


def degrade_lines(entry: dict) -> list[tuple[str, str]]:
    rows, out = entry["rows"], []
    dtype = (entry.get("extra") or {}).get("dtype", "float32")
    for up in (True, False):
        cand = [
            r
            for r in rows
            if r.get("filter") == "area"
            and r.get("up") is up
            and positive(r.get("ours_ms"))
            and positive(r.get("loop_ms"))
        ]
        if not cand:
            continue
        n = max(r.get("batch", 0) for r in cand)
        best = min((r for r in cand if r.get("batch", 0) == n), key=lambda r: r["ours_ms"])
        text = (
            f"**{_x(best['loop_ms'] / best['ours_ms'])}** faster than the `interpolate` loop "
            f"({_ms(best['ours_ms'])} vs {_ms(best['loop_ms'])} ms, {best.get('backend', '?')})"
        )
        if positive(best.get("of_floor")) and positive(best.get("floor_ms")):
            text += f"; {best['of_floor']:.2g}× the copy-bandwidth floor ({_ms(best['floor_ms'])} ms)"
        out.append(
            (f"`degrade_resolution` area 112→{{56,28,14,7}} {'down+up' if up else 'down'}, N={n}, {dtype}", text)
        )
    return out


def margin_softmax_lines(entry: dict) -> list[tuple[str, str]]:
    rows = entry["rows"]
    groups: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        key = (r.get("B"), r.get("C"), r.get("D"), r.get("margin"), r.get("dtype"))
        groups.setdefault(key, {})[str(r.get("path"))] = r
    pairs = [(k, g) for k, g in groups.items() if "fused" in g and "reference" in g]
    out = []
    for dtype in dict.fromkeys(k[4] for k, _ in pairs):  # one line per weight dtype: its largest shape
        mine = [(k, g) for k, g in pairs if k[4] == dtype]
        out += _margin_softmax_line(
            *max(mine, key=lambda kg: ((kg[0][0] or 0) * (kg[0][1] or 0), kg[0][3] == "arcface"))
        )
    return out


def _margin_softmax_line(key: tuple, g: dict[str, dict]) -> list[tuple[str, str]]:
    fused, ref = g["fused"], g["reference"]
    b, c, d, margin, dtype = key
    parts = []
    if positive(fused.get("ms")) and positive(ref.get("ms")):
        ratio = ref["ms"] / fused["ms"]
        word = "faster" if ratio >= 1 else "slower"
        shown = ratio if ratio >= 1 else 1 / ratio
        parts.append(f"time **{_x(shown)} {word}** than the reference ({_ms(fused['ms'])} vs {_ms(ref['ms'])} ms)")
    if nonnegative(fused.get("work_MiB")) is not None and positive(ref.get("work_MiB")):
        parts.append(
            f"working memory **{100 * fused['work_MiB'] / ref['work_MiB']:.1f} %** of the reference's "
            f"({fused['work_MiB']:.3g} vs {ref['work_MiB']:.4g} MiB)"
        )
    if positive(fused.get("achieved")):
        parts.append(f"fused at {100 * fused['achieved']:.1f} % of its roofline ({fused.get('bound', '?')} bound)")
    for path in ("compiled", "liger"):
        if path in g and positive(g[path].get("ms")):
            parts.append(f"{path} {_ms(g[path]['ms'])} ms")
    backend = f" ({fused['backend']})" if fused.get("backend") else ""
    what = f"fused margin softmax fwd+bwd, {b}×{c}×{d}, {margin}, {dtype}{backend}"
    return [(what, "; ".join(parts))] if parts else []


def gumbel_lines(entry: dict) -> list[tuple[str, str]]:
    groups: dict[tuple, dict[str, dict]] = {}
    for r in entry["rows"]:
        groups.setdefault((r.get("B"), r.get("N"), r.get("K"), r.get("D")), {})[str(r.get("impl"))] = r
    pairs = [(k, g) for k, g in groups.items() if "torch batched loop" in g and any(i.startswith("op[") for i in g)]
    if not pairs:
        return []
    key, g = next(((k, g) for k, g in pairs if k[:3] == (64, 200, 8)), None) or max(
        pairs, key=lambda kg: ((kg[0][0] or 0) * (kg[0][1] or 0), kg[0][2] or 0)
    )
    op_name = next(i for i in g if i.startswith("op["))
    op, loop = g[op_name], g["torch batched loop"]
    parts = []
    if positive(op.get("forward_ms")) and positive(loop.get("forward_ms")):
        parts.append(
            f"forward **{_x(loop['forward_ms'] / op['forward_ms'])}** the speed of the batched PyTorch "
            f"loop ({_ms(op['forward_ms'])} vs {_ms(loop['forward_ms'])} ms, {op_name})"
        )
    if positive(op.get("forward_backward_ms")) and positive(loop.get("forward_backward_ms")):
        parts.append(
            f"forward+backward {_x(loop['forward_backward_ms'] / op['forward_backward_ms'])} "
            f"({_ms(op['forward_backward_ms'])} vs {_ms(loop['forward_backward_ms'])} ms)"
        )
    if positive(op.get("achieved")):
        parts.append(f"forward at {100 * op['achieved']:.2g} % of the copy-bandwidth floor")
    b, n, k, d = key
    return [(f"`gumbel_fps`, B={b}, N={n}, K={k}, D={d}", "; ".join(parts))] if parts else []


VARIANT_WORDS = {
    "reference_head": "reference head",
    "amp": "AMP",
    "channels_last": "channels_last",
    "compile": "torch.compile",
    "recordio": "RecordIO loader",
    "distill": "BTNet distillation step",
}


def train_lines(entry: dict) -> list[tuple[str, str]]:
    out = []
    for base in (r for r in entry["rows"] if r.get("variant", "base") == "base" and positive(r.get("images_per_s"))):
        model = base.get("model")
        precision = f"AMP {base['amp']}" if base.get("amp") not in (None, "none") else "float32"
        layout = ", channels_last" if base.get("channels_last") else ""
        setup = f"{base.get('head', 'fused')} head, {precision}{layout}, in-memory batch"
        text = f"**{base['images_per_s']:.3g} img/s** ({setup})"
        variants = []
        for r in entry["rows"]:
            if r.get("model") != model or r.get("variant") in (None, "base"):
                continue
            word = VARIANT_WORDS.get(r["variant"], r["variant"]) + (f" {r['amp']}" if r["variant"] == "amp" else "")
            if positive(r.get("vs_base")):
                item = f"{word} {r['vs_base']:.2f}×"
                if positive(r.get("loader_images_per_s")):
                    keeps = "keeps up" if r.get("loader_keeps_up") else "does not keep up"
                    item += f" (loader alone {r['loader_images_per_s']:.0f} img/s: {keeps})"
                variants.append(item)
            elif r.get("note"):
                variants.append(f"{word}: {str(r['note']).split(':')[0]}")
        if variants:
            text += "; vs base: " + ", ".join(variants)
        out.append((f"training step, {model}, batch {base.get('batch')}", text))
    for r in entry["rows"]:  # a BTNet distillation step: its own model, no base row of its own
        if r.get("variant") == "distill" and positive(r.get("images_per_s")):
            precision = f"AMP {r['amp']}" if r.get("amp") not in (None, "none") else "float32"
            out.append(
                (
                    f"BTNet distillation step, {r.get('model')}, batch {r.get('batch')}",
                    f"**{r['images_per_s']:.3g} img/s** (every branch, {precision})",
                )
            )
    return out


def scaling_lines(entry: dict) -> list[tuple[str, str]]:
    rows = entry["rows"]
    curve = [r for r in rows if positive(r.get("images_per_s")) and positive(r.get("efficiency"))]
    if len(curve) < 2:
        return []
    top = max(curve, key=lambda r: r.get("processes", 0))
    one = next((r for r in curve if r.get("processes") == 1), None)
    threads = top.get("threads_per_process")
    text = f"**{top['images_per_s']:.3g} img/s**, efficiency **{100 * top['efficiency']:.0f} %**"
    if one:
        text += f" (1 process: {one['images_per_s']:.3g} img/s)"
    wide = [r for r in rows if r not in curve and r.get("processes") == 1 and positive(r.get("images_per_s"))]
    if wide:
        text += f"; 1 process with {wide[0].get('threads_per_process')} threads: {wide[0]['images_per_s']:.3g} img/s"
    each = f", {threads} thread(s) each" if threads else ""
    return [(f"training on {top.get('processes')} processes, {top.get('model')}, {top.get('backend')}{each}", text)]


def data_lines(entry: dict) -> list[tuple[str, str]]:
    parts = [
        f"{r.get('name')}: {r['images_per_s']:.0f} img/s" for r in entry["rows"] if positive(r.get("images_per_s"))
    ]
    return [("data throughput", "; ".join(parts))] if parts else []


def inference_lines(entry: dict) -> list[tuple[str, str]]:
    out = []
    models = dict.fromkeys(str(r.get("model")) for r in entry["rows"] if ":" not in str(r.get("model")))
    for model in models:
        rows = [r for r in entry["rows"] if r.get("model") == model and positive(r.get("img_per_s"))]
        if not rows:
            continue
        batch = max(r.get("batch", 0) for r in rows)
        parts = [f"{r.get('backend')} {r['img_per_s']:.3g}" for r in rows if r.get("batch") == batch]
        out.append((f"inference, {model}, batch {batch}", ", ".join(parts) + " img/s"))
    return out


def tests_lines(entry: dict) -> list[tuple[str, str]]:
    totals = (entry.get("extra") or {}).get("totals") or {}
    if not totals:
        return []
    failures = (entry.get("extra") or {}).get("failures") or []
    text = ", ".join(f"{totals.get(k, 0)} {k}" for k in ("passed", "failed", "error", "skipped"))
    if failures:
        text += f" (first failure `{failures[0]}`; `-x` stops there)"
    env = " ".join(f"{k}={v}" for k, v in (entry.get("env") or {}).items())
    return [("`pytest -m gpu`" + (f" with {env}" if env else ""), text)]


def half_check_lines(entry: dict) -> list[tuple[str, str]]:
    out = []
    rows = [r for r in entry["rows"] if isinstance(r.get("ok"), bool) or r.get("note")]
    for dtype in dict.fromkeys(str(r.get("dtype")) for r in rows):
        parts = []
        for stages in dict.fromkeys(str(r.get("bwd_inner_stages")) for r in rows):
            mine = [r for r in rows if str(r.get("dtype")) == dtype and str(r.get("bwd_inner_stages")) == stages]
            worst = max((r["emb_rel_err"] for r in mine if nonnegative(r.get("emb_rel_err")) is not None), default=None)
            text = f"{sum(r.get('ok') is True for r in mine)}/{len(mine)} configs within tolerance"
            parts.append(f"inner loop stages {stages}: {text}" + (f" (worst d emb error {worst:.2g})" if worst else ""))
        shape = next((f"{r['B']}×{r['C']}×{r['D']}" for r in rows if r.get("B")), "?")
        out.append((f"half-precision Triton margin softmax accuracy, {dtype}, {shape}", "; ".join(parts)))
    return out


def goals_lines(entry: dict) -> list[tuple[str, str]]:
    words = {True: "**met**", False: "**not met**", None: "not measured"}
    return [
        (
            f"goal: {r.get('goal')}",
            f"{words.get(r.get('met'), '?')}: {r.get('measured') or '-'} (target {r.get('target')})",
        )
        for r in entry["rows"]
    ]
