"""Tables of benchmark rows: cell formatting, aligned text and Markdown tables, and a run's printed/Markdown summary.

A report here is one ``mrface bench`` run as written to its JSON: ``area``, ``device``, ``quick``, ``date``,
``command``, ``machine`` and ``benchmarks`` (name -> entry with ``area``, ``status``, ``command``, ``rows``, ...).
"""

from __future__ import annotations

import json
from pathlib import Path


def fmt_cell(value: object) -> str:
    """One table cell: ``-`` for None, floats to 3 significant digits (whole above 1000), dicts as JSON."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def table_columns(rows: list[dict]) -> list[str]:
    """Every key in first-seen order, without columns that are empty (None or '') in every row."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    return [c for c in columns if any(r.get(c) not in (None, "") for r in rows)]


def format_table(rows: list[dict], markdown: bool = False) -> str:
    """Rows as an aligned text table, or a Markdown pipe table."""
    columns = table_columns(rows)
    cells = [[fmt_cell(r.get(c)) for c in columns] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)), "  ".join("-" * w for w in widths)]
    return "\n".join(lines + ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells])


def _by_area(report: dict) -> dict[str, list[tuple[str, dict]]]:
    areas: dict[str, list[tuple[str, dict]]] = {}
    for name, entry in report["benchmarks"].items():
        areas.setdefault(entry["area"], []).append((name, entry))
    return areas


def print_tables(report: dict) -> None:
    """One section per area, one table per benchmark, with the command that reproduces it."""
    for area, entries in _by_area(report).items():
        print(f"\n===== {area} =====")
        for name, entry in entries:
            print(f"\n--- {name} [{entry['status']}] {entry.get('command', entry['script'])}")
            if entry.get("note"):
                print(f"    note: {entry['note']}")
            if entry.get("rows"):
                print(format_table(entry["rows"]))


def run_markdown(report: dict) -> str:
    """The Markdown summary: machine, then per area and benchmark the command and its table."""
    lines = [
        f"# mrface bench: {report['area']} on {report['device']}" + (" (quick)" if report["quick"] else ""),
        "",
        f"Date (UTC): {report['date']}. Suite command: `{report['command']}` "
        "(from a source checkout); the command above each table reproduces it from the repository root.",
        "",
        "## Machine",
        "",
        "| key | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {fmt_cell(v)} |" for k, v in report["machine"].items()]
    for area, entries in _by_area(report).items():
        lines += ["", f"## {area}"]
        for name, entry in entries:
            lines += ["", f"### {name} ({entry['status']})", ""]
            if entry.get("command"):
                lines += [f"`{entry['command']}`" + (f" ({entry['seconds']} s)" if "seconds" in entry else ""), ""]
            if entry.get("note"):
                lines += [f"Note: {entry['note']}", ""]
            if entry.get("rows"):
                lines += [format_table(entry["rows"], markdown=True)]
    if report.get("plots"):
        lines += ["", "## Scaling plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in report["plots"]]
    return "\n".join(lines) + "\n"
