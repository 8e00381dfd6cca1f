"""Scaling plots (PNG) drawn from a ``mrface bench`` report: each plot uses only measured rows.

* degradation op time vs batch (``degrade``): ours per backend, solid; the naive loop, dashed;
* Gumbel-FPS forward time vs set size N (``gumbel_fps_sweep``, else ``gumbel_fps``) at fixed B, K;
* margin head time and working memory vs classes (``margin_softmax_classes``, else
  ``margin_softmax``) at fixed B, D per path and margin;
* training images/s and efficiency vs processes (``scaling``), with the ideal linear line.

A plot is drawn only when its benchmark produced at least two x values; matplotlib is optional
(``pip install mrface[plot]``): without it no plot is written and the report says so.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from mrface.io import save_figure


def _series(rows: list[dict], x: str, y: str, label_keys: tuple[str, ...]) -> dict[str, list[tuple[float, float]]]:
    """label -> sorted (x, y) points, skipping rows where y was not measured."""
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        if isinstance(r.get(y), int | float) and r.get(x) is not None:
            series[" ".join(f"{k}={r.get(k)}" for k in label_keys)].append((r[x], r[y]))
    return {k: sorted(v) for k, v in series.items()}


def _largest_group(rows: list[dict], group_keys: tuple[str, ...], x: str) -> tuple[dict, list[dict]]:
    """The rows sharing the ``group_keys`` values that cover the most distinct x values."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[tuple(r.get(k) for k in group_keys)].append(r)
    key, best = max(groups.items(), key=lambda kv: len({r.get(x) for r in kv[1]}), default=((), []))
    return dict(zip(group_keys, key, strict=True)), best


def _draw(
    path: Path, title: str, x: str, panels: list[tuple[str, dict[str, list[tuple[float, float]]]]], log: bool = True
) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6 * len(panels), 4.5), layout="constrained")
    for i, (ylabel, series) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for label, points in series.items():
            xs, ys = zip(*points, strict=True)
            dashed = any(word in label for word in ("loop", "reference", "ideal"))
            ax.plot(xs, ys, "--o" if dashed else "-o", label=label, markersize=4)
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
        else:
            from matplotlib.ticker import MaxNLocator

            ax.set_ylim(bottom=0)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(x)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    save_figure(fig, path, dpi=110)
    return path


def plot_degrade(rows: list[dict], path: Path) -> Path | None:
    """Median time vs batch for the fused op (per backend) and the naive interpolate loop."""
    if len({r.get("batch") for r in rows}) < 2:
        return None
    ours = _series(rows, "batch", "ours_ms", ("filter", "up", "backend"))
    loop_rows = [r for r in rows if r.get("backend") == rows[0].get("backend")]  # loop timed once per config
    loop = {f"{k} loop": v for k, v in _series(loop_rows, "batch", "loop_ms", ("filter", "up")).items()}
    return _draw(
        path, "degrade_resolution: time vs batch (112 px -> 56/28/14/7)", "batch", [("median ms", ours | loop)]
    )


def plot_gumbel(rows: list[dict], path: Path) -> Path | None:
    """Forward (and forward+backward) time vs set size N at the (B, K, D) with the most N values."""
    fixed, group = _largest_group(rows, ("B", "K", "D"), "N")
    if len({r.get("N") for r in group}) < 2:
        return None
    title = "gumbel_fps: time vs set size N (" + ", ".join(f"{k}={v}" for k, v in fixed.items()) + ")"
    return _draw(
        path,
        title,
        "N (set size)",
        [
            ("forward median ms", _series(group, "N", "forward_ms", ("impl",))),
            ("forward+backward median ms", _series(group, "N", "forward_backward_ms", ("impl",))),
        ],
    )


def plot_heads(rows: list[dict], path: Path) -> Path | None:
    """Step time and working memory vs classes per path and margin at the (B, D) with the most C values."""
    fixed, group = _largest_group(rows, ("B", "D", "dtype"), "C")
    if len({r.get("C") for r in group}) < 2:
        return None
    title = "margin softmax fwd+bwd vs classes C (" + ", ".join(f"{k}={v}" for k, v in fixed.items()) + ")"
    return _draw(
        path,
        title,
        "C (classes)",
        [
            ("median ms", _series(group, "C", "ms", ("path", "margin"))),
            ("working memory MiB", _series(group, "C", "work_MiB", ("path", "margin"))),
        ],
    )


def plot_scaling(rows: list[dict], path: Path) -> Path | None:
    """Images/s (measured and ideal) and efficiency vs processes, at the threads per process of the curve."""
    curve = [r for r in rows if isinstance(r.get("images_per_s"), int | float) and r.get("efficiency") is not None]
    if len({r.get("processes") for r in curve}) < 2:
        return None
    first = curve[0]
    single = next((r["images_per_s"] for r in curve if r.get("processes") == 1), None)
    label = f"{first.get('backend')}, {first.get('threads_per_process') or 1} thread(s)/process"
    measured = {label: sorted((r["processes"], r["images_per_s"]) for r in curve)}
    ideal = {"ideal (linear)": [(p, p * single) for p, _ in measured[label]]} if single else {}
    others = {
        f"1 process, {r.get('threads_per_process')} threads": [(1, r["images_per_s"])]
        for r in rows
        if r not in curve and r.get("processes") == 1 and isinstance(r.get("images_per_s"), int | float)
    }
    title = f"training throughput vs processes ({first.get('model')}, batch {first.get('batch_per_process')}/process)"
    efficiency = {label: sorted((r["processes"], r["efficiency"]) for r in curve)}
    panels = [("images/s", measured | ideal | others), ("efficiency", efficiency)]
    return _draw(path, title, "processes", panels, log=False)


# (plot name, benchmarks whose rows it can use, first preferred, drawing function)
PLOTS = (
    ("degrade", ("degrade",), plot_degrade),
    ("gumbel_fps", ("gumbel_fps_sweep", "gumbel_fps"), plot_gumbel),
    ("heads_vs_classes", ("margin_softmax_classes", "margin_softmax"), plot_heads),
    ("scaling", ("scaling",), plot_scaling),
)


def plots_for(benchmarks: dict, out_dir: Path, base: str) -> dict[str, str]:
    """Draw every plot ``benchmarks`` (name -> entry with rows) has rows for as ``<out>/<base>-<plot>.png``.

    Returns benchmark name -> path of the plot drawn from its rows (matplotlib must be importable).
    """
    drawn = {}
    for plot_name, sources, fn in PLOTS:
        for source in sources:
            rows = (benchmarks.get(source) or {}).get("rows")
            if rows and (path := fn(rows, out_dir / f"{base}-{plot_name}.png")) is not None:
                drawn[source] = str(path)
                break
    return drawn


def have_matplotlib() -> bool:
    """True when matplotlib imports (plots are optional: ``pip install 'mrface[plot]'``)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_plots(report: dict, out_dir: Path, base: str) -> list[str]:
    """Draw every plot the report has rows for as ``<out>/<base>-<plot>.png``; return the paths written."""
    if not have_matplotlib():
        print("matplotlib not installed: no scaling plots (pip install 'mrface[plot]')")
        return []
    return list(plots_for(report["benchmarks"], out_dir, base).values())
