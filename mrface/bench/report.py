"""Render the benchmark document (BENCHMARKS.md) from ``mrface bench`` result files and hand-written notes.

    mrface bench report RESULTS.json|FOLDER [...] --out BENCHMARKS.md [--notes benchmarks/notes.md]
                        [--plots-dir DIR] [--all-runs]

Inputs are suite reports (``mrface bench ... --out DIR`` writes ``DIR/<timestamp>.json``) or single
benchmark-script JSONs; a folder stands for every ``*.json`` in it. Runs from several machines (a CPU
run today, a GPU run on another day) go into one document: each table names its machine, command and
date. For every benchmark and machine the newest full run is used (a quick run only when no full run
exists, and it is labelled as such); ``--all-runs`` keeps every run instead.

The document: a headline-ratios table computed from the rows (each benchmark's spec declares its headline
lines, see :mod:`mrface.bench.specs`), a table of the runs (machine, versions,
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

from mrface.bench.errors import BenchError
from mrface.bench.plots import have_matplotlib, plots_for
from mrface.bench.specs import AREAS, SECTION_NAMES, SPECS, area_of, declared_headlines
from mrface.bench.tables import fmt_cell, format_table
from mrface.io import write_text

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
            {n: {"area": area_of(n)} | e for n, e in benchmarks.items()},
        )
    rows = payload.get("rows", payload.get("results"))
    if isinstance(rows, list) and all(isinstance(r, dict) for r in rows):
        name = str(payload.get("benchmark", source.stem))
        device = payload.get("device") or ("cuda" if machine.get("gpu") else "cpu")
        extra = {k: v for k, v in payload.items() if k not in ("rows", "results", "machine", "benchmark", "date")}
        entry = {
            "area": area_of(name),
            "status": "ok",
            "rows": rows,
            "extra": extra,
            "command": payload.get("command", ""),
        }
        return Run(
            source,
            str(payload.get("date", "")),
            device,
            area_of(name),
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


def headline_rows(selected: dict[str, list[tuple[Run, dict]]]) -> list[dict]:
    """The headline table's rows: what, machine, result, date — computed from the selected entries."""
    out = []
    for headline, sources in declared_headlines():
        runs_done: set[int] = set()
        for source in sources:
            for run, entry in selected.get(source, []):
                if id(run) in runs_done or not _usable(entry):
                    continue
                try:
                    lines = headline.lines(entry)
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
        return fmt_cell(info)
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
    names = list(dict.fromkeys([s.name for s in SPECS] + list(SECTION_NAMES) + sorted(selected)))
    noted = {b.key for b in notes}
    order: dict[str, list[str]] = {area: [] for area in ("tests", *AREAS, "other")}
    for name in names:
        if name in selected or name in noted:
            order[area_of(name)].append(name)
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
    write_text(out, text)
    print(f"wrote {out} from {len(runs)} result file(s)" + (f"; plots in {plots_dir}" if plots_dir.is_dir() else ""))
    return out
