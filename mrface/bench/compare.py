"""Comparing two benchmark runs: rows matched by their non-measurement columns, new/old per measurement.

    mrface bench --compare OLD.json NEW.json     # or --compare OLD.json after a run

A measurement regresses when it got worse by more than the threshold (time 1.2x with 0.15); a run is a
suite report or one benchmark script's JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

from mrface.bench.errors import BenchError
from mrface.bench.tables import fmt_cell, format_table

DERIVED = {"floor_ms", "logits_MiB"}  # computed from sizes or another measurement, not measured here


OUTCOMES = {"note", "bound", "loader_keeps_up"}  # results that are not floats: never used to match rows


def direction(column: str) -> int:
    """+1 when a larger value is better (throughput), -1 when smaller is (time, memory), 0 when not compared."""
    if column in DERIVED:
        return 0
    if column.endswith("per_s"):
        return 1
    if column.endswith(("ms", "MiB", "_s")):
        return -1
    return 0


def load_run(path: Path) -> dict:
    """A suite report, or one script's JSON wrapped as a one-benchmark report."""
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise BenchError(f"--compare {path}: cannot read JSON ({err})") from err
    if "benchmarks" in payload:
        return payload
    if "rows" in payload or "results" in payload:
        rows = payload.get("rows", payload.get("results"))
        return {"machine": payload.get("machine", {}), "benchmarks": {payload.get("benchmark", "?"): {"rows": rows}}}
    raise BenchError(f"--compare {path}: neither a `mrface bench` report nor a benchmark script's JSON")


def _keyed(rows: list[dict], keys: list[str]) -> dict[tuple, dict]:
    out: dict[tuple, dict] = {}
    for row in rows:
        key = tuple((k, fmt_cell(row.get(k))) for k in keys)
        n = 0
        while key + (("#", n),) in out:
            n += 1
        out[key + (("#", n),)] = row
    return out


def compare_runs(old: dict, new: dict, threshold: float) -> tuple[list[dict], list[str]]:
    """Per matched row and measurement: old, new, new/old and a flag; plus notes on what did not match.

    Rows match on their non-measurement columns (every column never holding a float, except :data:`OUTCOMES`).
    A measurement regresses when it got worse by more than ``threshold`` (time 1.2x with 0.15).
    """
    results, notes = [], []
    for name, new_entry in new["benchmarks"].items():
        old_entry = old["benchmarks"].get(name)
        new_rows, old_rows = new_entry.get("rows") or [], (old_entry or {}).get("rows") or []
        if not new_rows or not old_rows:
            notes.append(f"{name}: rows in {'neither run' if not new_rows and not old_rows else 'one run only'}")
            continue
        both = old_rows + new_rows
        columns = list(dict.fromkeys(k for r in both for k in r))
        floats = {c for c in columns if any(isinstance(r.get(c), float) for r in both)}
        keys = [c for c in columns if c not in floats and c not in OUTCOMES]
        old_keyed, new_keyed = _keyed(old_rows, keys), _keyed(new_rows, keys)
        unmatched = len(set(new_keyed) ^ set(old_keyed))
        if unmatched:
            notes.append(f"{name}: {unmatched} rows without a partner in the other run (different sizes?)")
        for key, row in new_keyed.items():
            if key not in old_keyed:
                continue
            label = ", ".join(f"{k}={v}" for k, v in key[:-1] if v != "-") + (f" #{key[-1][1]}" if key[-1][1] else "")
            for column in (c for c in columns if direction(c)):
                a, b = old_keyed[key].get(column), row.get(column)
                if not isinstance(a, int | float) or not isinstance(b, int | float) or a <= 0 or b <= 0:
                    continue
                worse = (b / a) ** -direction(column)  # > 1: got worse
                flag = "REGRESSION" if worse > 1 + threshold else ("better" if worse < 1 / (1 + threshold) else "")
                results.append(
                    {
                        "benchmark": name,
                        "row": label,
                        "metric": column,
                        "old": a,
                        "new": b,
                        "new/old": b / a,
                        "flag": flag,
                    }
                )
    notes += [f"{name}: only in the old run" for name in old["benchmarks"] if name not in new["benchmarks"]]
    return results, notes


def compare_files(old_path: Path, new_path: Path, threshold: float) -> list[dict]:
    """Print the comparison of two runs; return the flagged regressions."""
    old, new = load_run(old_path), load_run(new_path)
    print(f"\n===== compare: new {new_path} vs old {old_path} (regression: worse by > {threshold:.0%}) =====")
    for k in ("cpu", "cores", "gpu", "torch", "mrface_C"):
        before, after = old["machine"].get(k), new["machine"].get(k)
        if before != after:
            print(f"warning: machines differ in {k}: {fmt_cell(before)} -> {fmt_cell(after)}")
    if old.get("quick") != new.get("quick"):
        print(f"warning: quick differs: {old.get('quick')} -> {new.get('quick')}")
    results, notes = compare_runs(old, new, threshold)
    if results:
        print(format_table(results))
    for note in notes:
        print(f"note: {note}")
    regressions = [r for r in results if r["flag"] == "REGRESSION"]
    print(f"{len(results)} measurements compared, {len(regressions)} regressions beyond {threshold:.0%}")
    return regressions
