"""Evaluation reports: one JSON file per run (numbers + settings + model metadata + versions), rendered
to a Markdown summary and PNG plots. ``mrface eval report RUN_DIR`` re-renders from the JSON.

Layout of a run directory::

    RUN_DIR/results.json   the report (schema below)
    RUN_DIR/report.md      tables, and links to the plots
    RUN_DIR/<plot>.png     one PNG per entry of "plots" (needs matplotlib: pip install mrface[plot])

``results.json`` (``"schema": "mrface.eval.report/1"``)::

    {"schema", "kind", "title", "created" (ISO time), "settings" {…}, "model" {metadata} | null,
     "versions" {package: version}, "results" {…numbers…},
     "tables": [{"title", "columns": [str], "rows": [[str | number]]}],
     "plots": [{"name", "title", "xlabel", "ylabel", "xscale": "linear"|"log", "yscale",
                "series": [{"label", "x": [number], "y": [number]}]}]}
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any

from mrface.io import save_figure, write_text
from mrface.versions import versions

SCHEMA = "mrface.eval.report/1"
REQUIRED = ("schema", "kind", "title", "created", "settings", "model", "versions", "results", "tables", "plots")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


#: Packages that shape the numbers; every report records their versions.
REPORT_PACKAGES = (
    "mrface",
    "torch",
    "numpy",
    "scikit-learn",
    "scipy",
    "opencv-python-headless",
    "faiss-cpu",
    "matplotlib",
)


def _jsonable(value: Any) -> Any:
    """numpy scalars/arrays, tuples, non-finite floats -> plain JSON values (inf/nan as strings)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def new_report(
    kind: str,
    title: str,
    *,
    settings: dict[str, Any],
    model: dict[str, Any] | None = None,
    results: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An empty report skeleton; add ``tables`` and ``plots`` entries, then :func:`write_report`."""
    return {
        "schema": SCHEMA,
        "kind": kind,
        "title": title,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "model": model,
        "versions": versions(REPORT_PACKAGES),
        "results": results or {},
        "tables": [],
        "plots": [],
    }


def validate_report(report: Any, source: str = "report") -> None:
    """Raise ``ValueError`` naming the first field that does not follow the schema."""
    if not isinstance(report, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(report).__name__}")
    missing = [k for k in REQUIRED if k not in report]
    if missing:
        raise ValueError(f"{source}: missing fields {missing}; a report needs {list(REQUIRED)}")
    if report["schema"] != SCHEMA:
        raise ValueError(f"{source}: schema {report['schema']!r}, expected {SCHEMA!r}")
    for i, table in enumerate(report["tables"]):
        if not isinstance(table, dict) or not {"title", "columns", "rows"} <= set(table):
            raise ValueError(f"{source}: tables[{i}] needs 'title', 'columns' and 'rows'")
        for j, row in enumerate(table["rows"]):
            if len(row) != len(table["columns"]):
                raise ValueError(
                    f"{source}: tables[{i}].rows[{j}] has {len(row)} cells for {len(table['columns'])} columns"
                )
    for i, plot in enumerate(report["plots"]):
        if not isinstance(plot, dict) or not {"name", "title", "series"} <= set(plot):
            raise ValueError(f"{source}: plots[{i}] needs 'name', 'title' and 'series'")
        if not _NAME.match(str(plot["name"])):
            raise ValueError(f"{source}: plots[{i}].name {plot['name']!r} must be a plain file stem [A-Za-z0-9_.-]")
        for j, s in enumerate(plot["series"]):
            if not {"label", "x", "y"} <= set(s) or len(s["x"]) != len(s["y"]):
                raise ValueError(f"{source}: plots[{i}].series[{j}] needs 'label' and equal-length 'x', 'y'")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    """The Markdown summary: title, settings, tables, plot links, model and versions."""
    lines = [f"# {report['title']}", "", f"kind: `{report['kind']}` · created {report['created']}", ""]
    for table in report["tables"]:
        lines += [f"## {table['title']}", ""]
        lines.append("| " + " | ".join(map(str, table["columns"])) + " |")
        lines.append("|" + "|".join("---" for _ in table["columns"]) + "|")
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table["rows"]]
        lines.append("")
    if report["plots"]:
        lines += ["## Plots", ""]
        lines += [f"![{p['title']}]({p['name']}.png)" for p in report["plots"]]
        lines.append("")
    lines += ["## Settings", "", "```json", json.dumps(report["settings"], indent=2, sort_keys=True), "```", ""]
    if report["model"]:
        lines += ["## Model", "", "```json", json.dumps(report["model"], indent=2, sort_keys=True), "```", ""]
    lines += ["## Versions", ""]
    lines += [f"- {k}: {v}" for k, v in report["versions"].items()]
    return "\n".join(lines) + "\n"


def plot_png(plot: dict[str, Any], path: Path) -> None:
    """One line plot (matplotlib, Agg backend) written to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    try:
        for s in plot["series"]:
            ax.plot(s["x"], s["y"], marker="o" if len(s["x"]) <= 20 else None, markersize=3, label=s["label"])
        ax.set_xscale(plot.get("xscale", "linear"))
        ax.set_yscale(plot.get("yscale", "linear"))
        ax.set_xlabel(plot.get("xlabel", ""))
        ax.set_ylabel(plot.get("ylabel", ""))
        ax.set_title(plot["title"])
        ax.grid(True, alpha=0.3)
        if plot["series"]:
            ax.legend(fontsize=8)
        fig.tight_layout()
        save_figure(fig, path)
    finally:
        plt.close(fig)


def render_report(run_dir: str | os.PathLike) -> list[Path]:
    """Re-render ``report.md`` and the PNG plots of ``RUN_DIR/results.json``; returns the files written."""
    run_dir = Path(run_dir)
    path = run_dir / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results.json in this run directory (expected an mrface eval run)")
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    validate_report(report, str(path))
    written = [run_dir / "report.md"]
    write_text(written[0], markdown(report))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        warnings.warn("matplotlib is not installed: plots skipped (pip install 'mrface[plot]')", stacklevel=2)
        return written
    for plot in report["plots"]:
        png = run_dir / f"{plot['name']}.png"
        plot_png(plot, png)
        written.append(png)
    return written


def write_report(run_dir: str | os.PathLike, report: dict[str, Any]) -> list[Path]:
    """Validate, write ``results.json`` atomically and render it; returns every file written."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    report = _jsonable(report)
    validate_report(report)
    path = run_dir / "results.json"
    write_text(path, json.dumps(report, indent=2))
    return [path, *render_report(run_dir)]
