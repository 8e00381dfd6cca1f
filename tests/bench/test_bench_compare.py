"""``mrface bench --compare``: rows matched by their keys, regressions flagged (mrface.bench.compare)."""

from __future__ import annotations

import json

from bench_helpers import make_report, run_bench, write_json

from mrface.bench.compare import compare_runs


def test_compare_a_real_run_with_itself_gives_unit_ratios(quick_run):
    _, path, _ = quick_run
    report = json.loads(path.read_text())
    results, notes = compare_runs(report, report, threshold=0.1)
    measured = sum(
        1
        for e in report["benchmarks"].values()
        for r in e["rows"]
        for c in ("ours_ms", "loop_ms", "ms")
        if isinstance(r.get(c), float)
    )
    assert len(results) == measured and notes == []
    assert all(r["new/old"] == 1.0 and r["flag"] == "" for r in results)


OLD = make_report(
    {
        "degrade": {
            "area": "kernels",
            "rows": [
                {"filter": "area", "batch": 64, "backend": "cpp", "ours_ms": 10.0, "loop_ms": 20.0, "speedup": 2.0},
                {"filter": "area", "batch": 256, "backend": "cpp", "ours_ms": 40.0, "loop_ms": 80.0, "speedup": 2.0},
            ],
        },
        "data": {
            "area": "data",
            "rows": [{"name": "render", "images_per_s": 100.0}, {"name": "loader", "images_per_s": 100.0}],
        },
    }
)


NEW = make_report(
    {
        "degrade": {
            "area": "kernels",
            "rows": [
                {"filter": "area", "batch": 256, "backend": "cpp", "ours_ms": 40.0, "loop_ms": 80.0, "speedup": 2.0},
                {"filter": "area", "batch": 64, "backend": "cpp", "ours_ms": 15.0, "loop_ms": 20.0, "speedup": 1.33},
                {"filter": "area", "batch": 1024, "backend": "cpp", "ours_ms": 99.0, "loop_ms": 99.0, "speedup": 1.0},
            ],
        },
        "data": {
            "area": "data",
            "rows": [{"name": "render", "images_per_s": 50.0}, {"name": "loader", "images_per_s": 130.0}],
        },
    }
)


def test_compare_matches_rows_by_keys_and_flags_regressions():
    results, notes = compare_runs(OLD, NEW, threshold=0.1)
    got = {(r["benchmark"], r["row"], r["metric"]): (r["new/old"], r["flag"]) for r in results}
    assert got == {
        ("degrade", "filter=area, batch=256, backend=cpp", "ours_ms"): (1.0, ""),
        ("degrade", "filter=area, batch=256, backend=cpp", "loop_ms"): (1.0, ""),
        ("degrade", "filter=area, batch=64, backend=cpp", "ours_ms"): (1.5, "REGRESSION"),
        ("degrade", "filter=area, batch=64, backend=cpp", "loop_ms"): (1.0, ""),
        ("data", "name=render", "images_per_s"): (0.5, "REGRESSION"),  # throughput: lower is worse
        ("data", "name=loader", "images_per_s"): (1.3, "better"),
    }
    assert notes == ["degrade: 1 rows without a partner in the other run (different sizes?)"]
    # A looser threshold no longer flags the 1.5x slowdown, but still the halved throughput.
    loose = {(r["row"], r["metric"]): r["flag"] for r in compare_runs(OLD, NEW, threshold=0.6)[0]}
    assert loose[("filter=area, batch=64, backend=cpp", "ours_ms")] == ""
    assert loose[("name=render", "images_per_s")] == "REGRESSION"


def test_compare_cli_on_two_files(tmp_path):
    old, new = write_json(tmp_path / "old.json", OLD), write_json(tmp_path / "new.json", NEW)
    code, stdout, _ = run_bench("--compare", str(old), str(new), "--threshold", "0.1")
    assert code == 0
    assert "6 measurements compared, 2 regressions beyond 10%" in stdout
    assert stdout.count("REGRESSION") == 2
    code, _, _ = run_bench("--compare", str(old), str(new), "--threshold", "0.1", "--fail-on-regression")
    assert code == 1
    code, _, _ = run_bench("--compare", str(old), str(old), "--fail-on-regression")
    assert code == 0


def test_compare_rejects_unreadable_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = run_bench("--compare", str(bad), str(write_json(tmp_path / "new.json", NEW)))
    assert code == 2 and "bad.json" in err and "cannot read JSON" in err
