"""Render the benchmark document (BENCHMARKS.md) from ``mrface bench`` result files and hand-written notes.

    mrface bench report RESULTS.json|FOLDER [...] --out BENCHMARKS.md [--notes benchmarks/notes.md]
                        [--plots-dir DIR] [--all-runs]

Inputs are suite reports (``mrface bench ... --out DIR`` writes ``DIR/<timestamp>.json``) or single
benchmark-script JSONs; a folder stands for every ``*.json`` in it. Runs from several machines (a CPU
run today, a GPU run on another day) go into one document: each table names its machine, command and
date. For every benchmark and machine the newest full run is used (a quick run only when no full run
exists, and it is labelled as such); ``--all-runs`` keeps every run instead.

The document: a headline-ratios table computed from the rows, a table of the runs (machine, versions,
command, date), then per area and benchmark every run's table and scaling plot. Prose that cannot be
generated lives in the notes file (``benchmarks/notes.md``), split by ``## <key>`` headings and
included verbatim: ``intro`` (top), ``headline`` (under the headline table), an area (``kernels``,
``train``, ``inference``, ``data``) or a benchmark name (``degrade``, ``margin_softmax``, ...) under its
section. A heading ``## <key> [until cuda]`` (or ``[until cpu]``) marks hand-recorded numbers: the
block is dropped once a run on that device provides the section's benchmark. Text before the first
heading is for the notes' editors and is not rendered.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mrface.bench import AREAS, SPECS, BenchError, _fmt, format_table

GENERAL_KEYS = ("intro", "headline", "runs")
NOTE_HEADING = re.compile(r"^## +(?P<key>[A-Za-z0-9_-]+)(?: +\[until (?P<until>cpu|cuda)\])? *$")


@dataclass
class Run:
    """One run of the suite (or of one script) on one machine, as read from a result file."""

    source: Path
    date: str  # UTC, "20261124T010203Z"
    device: str
    area: str
    quick: bool
    command: str
    machine: dict
    benchmarks: dict[str, dict]  # name -> {area, status, command, rows, extra, note, seconds}

    @property
    def ident(self) -> str:
        """A short unique name: device and date (used for plot files and links)."""
        return f"{self.device}-{self.date}"

    @property
    def machine_label(self) -> str:
        """The machine in a few words: the GPU for CUDA runs, else the cores and CPU model."""
        m = self.machine
        cpu = f"{m.get('cores', '?')}-core {m.get('cpu', 'CPU')}"
        return m["gpu"] if self.device == "cuda" and m.get("gpu") else cpu

    @property
    def signature(self) -> tuple:
        """Runs with the same signature come from the same kind of machine and device."""
        return self.device, self.machine.get("cpu"), self.machine.get("cores"), self.machine.get("gpu")

    @property
    def day(self) -> str:
        """The run's date as YYYY-MM-DD HH:MM UTC (or as stored when it has another form)."""
        m = re.fullmatch(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})\d{2}Z(?:-\d+)?", self.date)
        return f"{m[1]}-{m[2]}-{m[3]} {m[4]}:{m[5]} UTC" if m else self.date or "date unknown"


@dataclass
class NoteBlock:
    """One ``## key`` section of the notes file."""

    key: str
    body: str
    until: str | None = None  # "cuda"/"cpu": hand-recorded numbers, dropped once such a run exists
    used: bool = field(default=False, compare=False)


# ----------------------------------------------------------------------------- reading


def _area_of(name: str) -> str:
    from mrface.bench_gpu import AREA

    return next((s.area for s in SPECS if s.name == name), AREA.get(name, "other"))


def parse_run(payload: object, source: Path) -> Run:
    """A :class:`Run` from a suite report or a benchmark script's JSON; BenchError when it is neither."""
    if not isinstance(payload, dict):
        raise BenchError(f"{source}: expected a JSON object, got {type(payload).__name__}")
    machine = payload.get("machine") or {}
    if not isinstance(machine, dict):
        raise BenchError(f"{source}: 'machine' must be an object")
    if "benchmarks" in payload:
        benchmarks = payload["benchmarks"]
        if not isinstance(benchmarks, dict):
            raise BenchError(f"{source}: 'benchmarks' must be an object of name -> entry")
        for name, entry in benchmarks.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("rows", []), list):
                raise BenchError(f"{source}: benchmark {name!r} must be an object with a 'rows' list")
            if not all(isinstance(r, dict) for r in entry.get("rows", [])):
                raise BenchError(f"{source}: benchmark {name!r}: every row must be an object")
        device = payload.get("device") or ("cuda" if machine.get("gpu") else "cpu")
        return Run(
            source,
            str(payload.get("date", "")),
            device,
            str(payload.get("area", "all")),
            bool(payload.get("quick", False)),
            str(payload.get("command", "")),
            machine,
            {n: {"area": _area_of(n)} | e for n, e in benchmarks.items()},
        )
    rows = payload.get("rows", payload.get("results"))
    if isinstance(rows, list) and all(isinstance(r, dict) for r in rows):
        name = str(payload.get("benchmark", source.stem))
        device = payload.get("device") or ("cuda" if machine.get("gpu") else "cpu")
        extra = {k: v for k, v in payload.items() if k not in ("rows", "results", "machine", "benchmark", "date")}
        entry = {
            "area": _area_of(name),
            "status": "ok",
            "rows": rows,
            "extra": extra,
            "command": payload.get("command", ""),
        }
        return Run(
            source,
            str(payload.get("date", "")),
            device,
            _area_of(name),
            bool(payload.get("quick", False)),
            str(payload.get("command", "")),
            machine,
            {name: entry},
        )
    raise BenchError(f"{source}: neither a `mrface bench` report (no 'benchmarks') nor a benchmark JSON (no 'rows')")


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files as given, folders as their ``*.json`` (sorted); BenchError when something is missing."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(path.glob("*.json"))
            if not found:
                raise BenchError(f"{path}: folder holds no *.json result files")
            paths += found
        elif path.is_file():
            paths.append(path)
        else:
            raise BenchError(f"{path}: no such file or folder")
    return list(dict.fromkeys(paths))


def load_runs(inputs: list[str | Path]) -> list[Run]:
    """Every run of the given files and folders, oldest first."""
    runs = []
    for path in expand_inputs(inputs):
        try:
            payload = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise BenchError(f"{path}: cannot read JSON ({err})") from err
        runs.append(parse_run(payload, path))
    return sorted(runs, key=lambda r: (r.date, str(r.source)))


def _usable(entry: dict) -> bool:
    """Rows to show: a run that finished, or one stopped by its time budget (the rows it finished)."""
    return entry.get("status", "ok") in ("ok", "timeout") and bool(entry.get("rows"))


def select(runs: list[Run], all_runs: bool = False) -> dict[str, list[tuple[Run, dict]]]:
    """benchmark name -> [(run, entry)] to show: per machine signature the newest full run with rows
    (the newest quick run when there is no full one), or a failed entry when nothing ran; every
    entry with ``all_runs``. Entries skipped on purpose (quick-only sweeps) are not shown."""
    chosen: dict[str, dict[tuple, list[tuple[Run, dict]]]] = {}
    for run in runs:
        for name, entry in run.benchmarks.items():
            if entry.get("status") == "skipped":
                continue
            chosen.setdefault(name, {}).setdefault(run.signature, []).append((run, entry))
    out: dict[str, list[tuple[Run, dict]]] = {}
    for name, by_machine in chosen.items():
        for candidates in by_machine.values():
            if all_runs:
                out.setdefault(name, []).extend(candidates)
                continue
            usable = [c for c in candidates if _usable(c[1])]
            pool = usable or candidates
            best = max(pool, key=lambda c: (not c[0].quick, c[0].date))
            out.setdefault(name, []).append(best)
    return out


def superseded(runs: list[Run]) -> list[Run]:
    """Runs none of whose usable benchmarks is shown any more (a newer run covers each of them)."""
    shown = {(id(run), name) for name, pairs in select(runs).items() for run, _ in pairs}
    return [run for run in runs if not any((id(run), name) in shown for name in run.benchmarks)]


# ----------------------------------------------------------------------------- notes


def parse_notes(text: str) -> list[NoteBlock]:
    """The ``## key`` blocks of a notes file (text before the first heading is dropped)."""
    blocks: list[NoteBlock] = []
    for line in text.splitlines():
        m = NOTE_HEADING.match(line)
        if m:
            blocks.append(NoteBlock(m["key"], "", m["until"]))
        elif blocks:
            blocks[-1].body += line + "\n"
        elif line.startswith("## "):
            raise BenchError(f"notes: heading {line!r} is not '## key' or '## key [until cuda|cpu]'")
    for block in blocks:
        block.body = block.body.strip("\n")
    return blocks


# ----------------------------------------------------------------------------- headline ratios


def _num(value: object) -> float | None:
    """A positive number as float, else None (missing, zero, negative, boolean or text)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else None


def _nonneg(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0 else None


def _x(value: float) -> str:
    return f"{value:.2f}×" if value < 10 else f"{value:.1f}×"


def _ms(value: float) -> str:
    return f"{value:.3g}"


def _headline_degrade(entry: dict) -> list[tuple[str, str]]:
    rows, out = entry["rows"], []
    dtype = (entry.get("extra") or {}).get("dtype", "float32")
    for up in (True, False):
        cand = [
            r
            for r in rows
            if r.get("filter") == "area" and r.get("up") is up and _num(r.get("ours_ms")) and _num(r.get("loop_ms"))
        ]
        if not cand:
            continue
        n = max(r.get("batch", 0) for r in cand)
        best = min((r for r in cand if r.get("batch", 0) == n), key=lambda r: r["ours_ms"])
        text = (
            f"**{_x(best['loop_ms'] / best['ours_ms'])}** faster than the `interpolate` loop "
            f"({_ms(best['ours_ms'])} vs {_ms(best['loop_ms'])} ms, {best.get('backend', '?')})"
        )
        if _num(best.get("of_floor")) and _num(best.get("floor_ms")):
            text += f"; {best['of_floor']:.2g}× the copy-bandwidth floor ({_ms(best['floor_ms'])} ms)"
        out.append(
            (f"`degrade_resolution` area 112→{{56,28,14,7}} {'down+up' if up else 'down'}, N={n}, {dtype}", text)
        )
    return out


def _headline_margin_softmax(entry: dict) -> list[tuple[str, str]]:
    rows = entry["rows"]
    groups: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        key = (r.get("B"), r.get("C"), r.get("D"), r.get("margin"), r.get("dtype"))
        groups.setdefault(key, {})[str(r.get("path"))] = r
    pairs = [(k, g) for k, g in groups.items() if "fused" in g and "reference" in g]
    out = []
    for dtype in dict.fromkeys(k[4] for k, _ in pairs):  # one line per weight dtype: its largest shape
        mine = [(k, g) for k, g in pairs if k[4] == dtype]
        out += _margin_line(*max(mine, key=lambda kg: ((kg[0][0] or 0) * (kg[0][1] or 0), kg[0][3] == "arcface")))
    return out


def _margin_line(key: tuple, g: dict[str, dict]) -> list[tuple[str, str]]:
    fused, ref = g["fused"], g["reference"]
    b, c, d, margin, dtype = key
    parts = []
    if _num(fused.get("ms")) and _num(ref.get("ms")):
        ratio = ref["ms"] / fused["ms"]
        word = "faster" if ratio >= 1 else "slower"
        shown = ratio if ratio >= 1 else 1 / ratio
        parts.append(f"time **{_x(shown)} {word}** than the reference ({_ms(fused['ms'])} vs {_ms(ref['ms'])} ms)")
    if _nonneg(fused.get("work_MiB")) is not None and _num(ref.get("work_MiB")):
        parts.append(
            f"working memory **{100 * fused['work_MiB'] / ref['work_MiB']:.1f} %** of the reference's "
            f"({fused['work_MiB']:.3g} vs {ref['work_MiB']:.4g} MiB)"
        )
    if _num(fused.get("achieved")):
        parts.append(f"fused at {100 * fused['achieved']:.1f} % of its roofline ({fused.get('bound', '?')} bound)")
    for path in ("compiled", "liger"):
        if path in g and _num(g[path].get("ms")):
            parts.append(f"{path} {_ms(g[path]['ms'])} ms")
    backend = f" ({fused['backend']})" if fused.get("backend") else ""
    what = f"fused margin softmax fwd+bwd, {b}×{c}×{d}, {margin}, {dtype}{backend}"
    return [(what, "; ".join(parts))] if parts else []


def _headline_gumbel(entry: dict) -> list[tuple[str, str]]:
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
    if _num(op.get("forward_ms")) and _num(loop.get("forward_ms")):
        parts.append(
            f"forward **{_x(loop['forward_ms'] / op['forward_ms'])}** the speed of the batched PyTorch "
            f"loop ({_ms(op['forward_ms'])} vs {_ms(loop['forward_ms'])} ms, {op_name})"
        )
    if _num(op.get("forward_backward_ms")) and _num(loop.get("forward_backward_ms")):
        parts.append(
            f"forward+backward {_x(loop['forward_backward_ms'] / op['forward_backward_ms'])} "
            f"({_ms(op['forward_backward_ms'])} vs {_ms(loop['forward_backward_ms'])} ms)"
        )
    if _num(op.get("achieved")):
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


def _headline_train(entry: dict) -> list[tuple[str, str]]:
    out = []
    for base in (r for r in entry["rows"] if r.get("variant", "base") == "base" and _num(r.get("images_per_s"))):
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
            if _num(r.get("vs_base")):
                item = f"{word} {r['vs_base']:.2f}×"
                if _num(r.get("loader_images_per_s")):
                    keeps = "keeps up" if r.get("loader_keeps_up") else "does not keep up"
                    item += f" (loader alone {r['loader_images_per_s']:.0f} img/s: {keeps})"
                variants.append(item)
            elif r.get("note"):
                variants.append(f"{word}: {str(r['note']).split(':')[0]}")
        if variants:
            text += "; vs base: " + ", ".join(variants)
        out.append((f"training step, {model}, batch {base.get('batch')}", text))
    for r in entry["rows"]:  # a BTNet distillation step: its own model, no base row of its own
        if r.get("variant") == "distill" and _num(r.get("images_per_s")):
            precision = f"AMP {r['amp']}" if r.get("amp") not in (None, "none") else "float32"
            out.append(
                (
                    f"BTNet distillation step, {r.get('model')}, batch {r.get('batch')}",
                    f"**{r['images_per_s']:.3g} img/s** (every branch, {precision})",
                )
            )
    return out


def _headline_scaling(entry: dict) -> list[tuple[str, str]]:
    rows = entry["rows"]
    curve = [r for r in rows if _num(r.get("images_per_s")) and _num(r.get("efficiency"))]
    if len(curve) < 2:
        return []
    top = max(curve, key=lambda r: r.get("processes", 0))
    one = next((r for r in curve if r.get("processes") == 1), None)
    threads = top.get("threads_per_process")
    text = f"**{top['images_per_s']:.3g} img/s**, efficiency **{100 * top['efficiency']:.0f} %**"
    if one:
        text += f" (1 process: {one['images_per_s']:.3g} img/s)"
    wide = [r for r in rows if r not in curve and r.get("processes") == 1 and _num(r.get("images_per_s"))]
    if wide:
        text += f"; 1 process with {wide[0].get('threads_per_process')} threads: {wide[0]['images_per_s']:.3g} img/s"
    each = f", {threads} thread(s) each" if threads else ""
    return [(f"training on {top.get('processes')} processes, {top.get('model')}, {top.get('backend')}{each}", text)]


def _headline_data(entry: dict) -> list[tuple[str, str]]:
    parts = [f"{r.get('name')}: {r['images_per_s']:.0f} img/s" for r in entry["rows"] if _num(r.get("images_per_s"))]
    return [("data throughput", "; ".join(parts))] if parts else []


def _headline_inference(entry: dict) -> list[tuple[str, str]]:
    out = []
    models = dict.fromkeys(str(r.get("model")) for r in entry["rows"] if ":" not in str(r.get("model")))
    for model in models:
        rows = [r for r in entry["rows"] if r.get("model") == model and _num(r.get("img_per_s"))]
        if not rows:
            continue
        batch = max(r.get("batch", 0) for r in rows)
        parts = [f"{r.get('backend')} {r['img_per_s']:.3g}" for r in rows if r.get("batch") == batch]
        out.append((f"inference, {model}, batch {batch}", ", ".join(parts) + " img/s"))
    return out


def _headline_tests(entry: dict) -> list[tuple[str, str]]:
    totals = (entry.get("extra") or {}).get("totals") or {}
    if not totals:
        return []
    failures = (entry.get("extra") or {}).get("failures") or []
    text = ", ".join(f"{totals.get(k, 0)} {k}" for k in ("passed", "failed", "error", "skipped"))
    if failures:
        text += f" (first failure `{failures[0]}`; `-x` stops there)"
    env = " ".join(f"{k}={v}" for k, v in (entry.get("env") or {}).items())
    return [("`pytest -m gpu`" + (f" with {env}" if env else ""), text)]


def _headline_half_check(entry: dict) -> list[tuple[str, str]]:
    out = []
    rows = [r for r in entry["rows"] if isinstance(r.get("ok"), bool) or r.get("note")]
    for dtype in dict.fromkeys(str(r.get("dtype")) for r in rows):
        parts = []
        for stages in dict.fromkeys(str(r.get("bwd_inner_stages")) for r in rows):
            mine = [r for r in rows if str(r.get("dtype")) == dtype and str(r.get("bwd_inner_stages")) == stages]
            worst = max((r["emb_rel_err"] for r in mine if _nonneg(r.get("emb_rel_err")) is not None), default=None)
            text = f"{sum(r.get('ok') is True for r in mine)}/{len(mine)} configs within tolerance"
            parts.append(f"inner loop stages {stages}: {text}" + (f" (worst d emb error {worst:.2g})" if worst else ""))
        shape = next((f"{r['B']}×{r['C']}×{r['D']}" for r in rows if r.get("B")), "?")
        out.append((f"half-precision Triton margin softmax accuracy, {dtype}, {shape}", "; ".join(parts)))
    return out


def _headline_goals(entry: dict) -> list[tuple[str, str]]:
    words = {True: "**met**", False: "**not met**", None: "not measured"}
    return [
        (
            f"goal: {r.get('goal')}",
            f"{words.get(r.get('met'), '?')}: {r.get('measured') or '-'} (target {r.get('target')})",
        )
        for r in entry["rows"]
    ]


# (benchmarks whose rows it can use, first preferred; function)
HEADLINES = (
    (("gpu_tests",), _headline_tests),
    (("goals",), _headline_goals),
    (("margin_half_check",), _headline_half_check),
    (("margin_softmax", "margin_softmax_classes"), _headline_margin_softmax),
    (("degrade",), _headline_degrade),
    (("gumbel_fps", "gumbel_fps_sweep"), _headline_gumbel),
    (("train",), _headline_train),
    (("train_compile",), _headline_train),
    (("scaling",), _headline_scaling),
    (("inference",), _headline_inference),
    (("data",), _headline_data),
)


def headline_rows(selected: dict[str, list[tuple[Run, dict]]]) -> list[dict]:
    """The headline table's rows: what, machine, result, date — computed from the selected entries."""
    out = []
    for sources, fn in HEADLINES:
        runs_done: set[int] = set()
        for source in sources:
            for run, entry in selected.get(source, []):
                if id(run) in runs_done or not _usable(entry):
                    continue
                try:
                    lines = fn(entry)
                except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
                    print(
                        f"bench report: no headline from {source} of {run.source} ({type(err).__name__}: {err})",
                        file=sys.stderr,
                    )
                    continue
                if lines:
                    runs_done.add(id(run))
                machine = run.machine_label + (" (quick run: not for publishing)" if run.quick else "")
                out += [{"what": w, "machine": machine, "result": r, "date": run.day[:10]} for w, r in lines]
    return out


# ----------------------------------------------------------------------------- rendering


def _build_summary(info: object) -> str:
    if not isinstance(info, dict):
        return _fmt(info)
    cuda = f", CUDA {info.get('cuda_archs')}" if info.get("cuda") else ", no CUDA"
    return f"{info.get('compiler', '?')}{', OpenMP' if info.get('openmp') else ''}{cuda}"


def runs_table(runs: list[Run], out_dir: Path) -> str:
    """One row per run: machine, versions, command, date, the result file."""
    rows = []
    for run in runs:
        m = run.machine
        rows.append(
            {
                "run": run.ident + (" (quick)" if run.quick else ""),
                "device": run.device,
                "CPU": m.get("cpu"),
                "cores": m.get("cores"),
                "GPU": m.get("gpu"),
                "GPU driver": m.get("gpu_driver"),
                "CUDA": m.get("cuda"),
                "torch": m.get("torch"),
                "triton": m.get("triton"),
                "python": m.get("python"),
                "mrface._C": _build_summary(m["mrface_C"]) if "mrface_C" in m else None,
                "commit": m.get("git_commit"),
                "date": run.day,
                "command": f"`{run.command}`" if run.command else None,
                "file": f"[{run.source.name}]({_rel(run.source, out_dir)})",
            }
        )
    return format_table(rows, markdown=True)


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def _section_order(selected: dict, notes: list[NoteBlock]) -> dict[str, list[str]]:
    from mrface.bench_gpu import SECTION_NAMES

    names = list(dict.fromkeys([s.name for s in SPECS] + list(SECTION_NAMES) + sorted(selected)))
    noted = {b.key for b in notes}
    order: dict[str, list[str]] = {area: [] for area in ("tests", *AREAS, "other")}
    for name in names:
        if name in selected or name in noted:
            order[_area_of(name)].append(name)
    return order


def _notes_for(notes: list[NoteBlock], key: str, provided_by: set[str], hand_recorded: bool | None = None) -> list[str]:
    """The bodies of the blocks for ``key``, without the [until device] blocks a run now provides.

    ``hand_recorded``: True only [until ...] blocks, False only plain ones, None both (in file order).
    """
    out = []
    for block in notes:
        if block.key != key or (hand_recorded is not None and bool(block.until) != hand_recorded):
            continue
        block.used = True
        if block.until and block.until in provided_by:
            print(
                f"bench report: notes block '## {key} [until {block.until}]' dropped: a {block.until} run "
                f"now provides it",
                file=sys.stderr,
            )
            continue
        if block.body:
            out += [block.body, ""]
    return out


def render(
    runs: list[Run],
    notes: list[NoteBlock] | None = None,
    out_path: Path = Path("BENCHMARKS.md"),
    plots_dir: Path | None = None,
    command: str = "",
    all_runs: bool = False,
) -> str:
    """The whole Markdown document (and its PNG plots in ``plots_dir`` when matplotlib is installed)."""
    notes = list(notes or [])
    for block in notes:
        block.used = False
    out_dir = out_path.parent
    selected = select(runs, all_runs)
    shown_runs = [r for r in runs if any(r is run for pairs in selected.values() for run, _ in pairs)]
    devices_all = {run.device for run in shown_runs}
    lines = [
        "# mrface benchmarks",
        "",
        "<!-- Generated from result files by `mrface bench report`: do not edit by hand. Prose comes from "
        "the notes file (benchmarks/notes.md); numbers come only from the result JSON files. -->",
        "",
    ]
    source = f"Generated by `{command}` " if command else "Generated by `mrface bench report` "
    lines += [
        source + f"from {len(shown_runs)} run(s) (see [Runs](#runs)). Every table below names its machine, "
        "the command that produced it (run from the repository root) and its date; numbers are medians "
        "measured side by side with their baselines in the same run.",
        "",
    ]
    lines += _notes_for(notes, "intro", devices_all)
    lines += ["## Headline ratios", ""]
    heads = headline_rows(selected)
    lines += [format_table(heads, markdown=True) if heads else "No headline: no run with the benchmarks it uses.", ""]
    lines += _notes_for(notes, "headline", devices_all)
    lines += ["## Runs", "", runs_table(shown_runs, out_dir) if shown_runs else "No runs.", ""]
    lines += _notes_for(notes, "runs", devices_all)

    plots = _draw_plots(shown_runs, selected, plots_dir) if plots_dir is not None and shown_runs else {}

    for area, names in _section_order(selected, notes).items():
        # A key naming both an area and a benchmark (``train``) belongs to the benchmark's section.
        devices = {r.device for n in names for r, _ in selected.get(n, [])}
        area_notes = _notes_for(notes, area, devices) if area not in names else []
        if not names and not area_notes:
            continue
        lines += [f"## {area}", ""] + area_notes
        for name in names:
            pairs = selected.get(name, [])
            provided = {run.device for run, e in pairs if _usable(e)}
            lines += [f"### {name}", ""] + _notes_for(notes, name, provided, hand_recorded=False)
            if not pairs:
                lines += ["*No result file documented here provides this benchmark yet.*", ""]
            for run, entry in pairs:
                lines += _entry_lines(run, entry, plots.get((id(run), name)), out_dir)
            lines += _notes_for(notes, name, provided, hand_recorded=True)
    leftover = [b for b in notes if not b.used and b.key not in GENERAL_KEYS]
    if leftover:
        keys = ", ".join(sorted({b.key for b in leftover}))
        print(f"bench report: notes for {keys} match no section; they go under 'Other notes'", file=sys.stderr)
        lines += ["## Other notes", ""]
        for block in leftover:
            lines += [f"### {block.key}", "", block.body, ""]
    return "\n".join(lines).rstrip("\n") + "\n"


PLOT_FILE = re.compile(r"(cpu|cuda)-\d{8}T\d{6}Z(-\d+)?-[a-z_]+\.png")


def _draw_plots(
    runs: list[Run], selected: dict[str, list[tuple[Run, dict]]], plots_dir: Path
) -> dict[tuple[int, str], str]:
    """(id(run), benchmark) -> PNG drawn from that entry's rows; stale plots of runs no longer shown are removed."""
    from mrface.bench_plots import have_matplotlib, plots_for

    if not have_matplotlib():
        print("bench report: matplotlib not installed, no plots (pip install 'mrface[plot]')", file=sys.stderr)
        return {}
    plots_dir.mkdir(parents=True, exist_ok=True)
    plots = {}
    for run in runs:
        mine = {n: e for n, pairs in selected.items() for r, e in pairs if r is run and _usable(e)}
        for name, png in plots_for(mine, plots_dir, run.ident).items():
            plots[(id(run), name)] = png
    drawn = {Path(p).name for p in plots.values()}
    for old in plots_dir.glob("*.png"):
        if PLOT_FILE.fullmatch(old.name) and old.name not in drawn:
            old.unlink()
    return plots


def _entry_lines(run: Run, entry: dict, plot: str | None, out_dir: Path) -> list[str]:
    """One run's part of a benchmark section: machine, date, command, then the table (or why none)."""
    m = run.machine
    versions = ", ".join(f"{k} {m[k]}" for k in ("torch", "triton", "cuda") if m.get(k))
    quick = " — **quick run: tiny sizes, checks the pipeline, not for publishing**" if run.quick else ""
    lines = [f"**{run.machine_label}** ({run.device}; {versions}), {run.day}{quick}", ""]
    command = entry.get("command")
    if command:
        took = f" ({entry['seconds']} s)" if entry.get("seconds") is not None else ""
        lines += [f"`{command}`{took}", ""]
    if not _usable(entry):
        lines += [f"Status: {entry.get('status', '?')}" + (f" — {entry['note']}" if entry.get("note") else ""), ""]
        return lines
    if entry.get("note"):
        lines += [f"Note: {entry['note']}", ""]
    lines += [format_table(entry["rows"], markdown=True), ""]
    if plot:
        lines += [f"![{Path(plot).stem}]({_rel(Path(plot), out_dir)})", ""]
    return lines


# ----------------------------------------------------------------------------- storing results


def stored_name(run: Run) -> str:
    """The file name a run is kept under in the results folder: <device>-<area>[-quick]-<date>.json."""
    return f"{run.device}-{run.area}{'-quick' if run.quick else ''}-{run.date or 'undated'}.json"


def store_run(report_path: Path, folder: Path, prune: bool = True) -> tuple[Path, list[Path]]:
    """Copy a suite report into ``folder`` (without local plot paths); with ``prune``, delete stored runs
    none of whose benchmarks is shown any more. Returns the stored path and the deleted ones."""
    payload = json.loads(report_path.read_text())
    run = parse_run(payload, report_path)
    payload.pop("plots", None)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / stored_name(run)
    from mrface.io import write_text

    write_text(path, json.dumps(payload, indent=2) + "\n")
    removed: list[Path] = []
    if prune:
        for old in superseded(load_runs([folder])):
            if old.source.resolve() != path.resolve():
                old.source.unlink()
                removed.append(old.source)
    return path, removed


def write_report(
    inputs: list[str | Path],
    out: Path,
    notes_path: Path | None,
    plots_dir: Path | None,
    all_runs: bool = False,
    command: str = "",
) -> Path:
    """Read the inputs and notes, render, write ``out``; return it."""
    runs = load_runs(inputs)
    notes = []
    if notes_path is not None:
        if not notes_path.is_file():
            raise BenchError(f"--notes {notes_path}: no such file")
        notes = parse_notes(notes_path.read_text())
    if plots_dir is None:
        folders = [Path(i) for i in inputs if Path(i).is_dir()]
        plots_dir = folders[0] / "plots" if folders else out.parent / f"{out.stem}-plots"
    text = render(
        runs,
        notes,
        out,
        plots_dir,
        command or shlex.join(["mrface", "bench", "report", *map(str, inputs), "--out", str(out)]),
        all_runs,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    from mrface.io import write_text

    write_text(out, text)
    print(f"wrote {out} from {len(runs)} result file(s)" + (f"; plots in {plots_dir}" if plots_dir.is_dir() else ""))
    return out
