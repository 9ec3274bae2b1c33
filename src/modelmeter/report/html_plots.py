"""Small plots for the HTML report, drawn from the report dict alone (layer 4).

Each function takes a report dict and returns an inline `<svg>` element (put
straight into the page: nothing is fetched), or None when the report lacks the
section the plot needs. matplotlib is imported lazily with the Agg backend;
without matplotlib the functions return None and the page says so. The SVG is
cleaned for inline use: no XML declaration, no DTD, no RDF metadata and no
namespace URLs (an HTML parser puts `<svg>` in the SVG namespace by itself),
so the page names no network address at all; text stays text
(`svg.fonttype = none`), which the browser test and page search can read, and
matplotlib's XML writer escapes every label.
"""

from __future__ import annotations

import io
import re
from typing import Any

from ..core.units import format_bytes, format_count
from ._mpl import load_pyplot

__all__ = ["leaf_rows", "measured_module_rows", "measured_modules_svg", "module_times_svg", "roofline_svg"]

_COLOURS = {"memory": "#1f77b4", "compute": "#d62728"}


_STRIP = (
    re.compile(r"<\?xml[^>]*\?>\s*"),
    re.compile(r"<!DOCTYPE[^>]*>\s*", re.IGNORECASE),
    re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL),
    re.compile(r'\s+xmlns(:\w+)?="[^"]*"'),
)


def _svg(fig: Any, plt: Any, salt: str, label: str) -> str:
    """The figure as an inline `<svg>` element; ids are salted so two plots on a page never clash."""
    import matplotlib

    buf = io.StringIO()
    try:
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
            fig.savefig(buf, format="svg", bbox_inches="tight")
    finally:
        plt.close(fig)
    text = buf.getvalue()
    for pattern in _STRIP:
        text = pattern.sub(" " if "xmlns" in pattern.pattern else "", text)
    from html import escape

    return text.replace("<svg ", f'<svg role="img" aria-label="{escape(label)}" '
                                 'style="max-width:100%;height:auto" ', 1).strip()


def leaf_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Roofline module rows that have no child module and some predicted time."""
    rl = report.get("roofline") or {}
    rows = rl.get("modules") or []
    paths = [r["path"] for r in rows]
    leaves = []
    for r in rows:
        prefix = r["path"] + "." if r["path"] else ""
        has_child = any(p != r["path"] and p.startswith(prefix) for p in paths)
        if not has_child and r.get("latency_s"):
            leaves.append(r)
    return leaves


def roofline_svg(report: dict[str, Any], title: str | None = None) -> str | None:
    """Log-log attainable FLOP/s against arithmetic intensity: the roofs and one dot per leaf layer."""
    rl = report.get("roofline")
    plt = load_pyplot(optional=True)
    if not rl or plt is None:
        return None
    detail = rl.get("hardware_detail") or {}
    peak, vector = detail.get("peak_flops"), detail.get("vector_flops")
    bw = detail.get("memory_bandwidth_bytes_per_s")
    if not peak or not bw:
        return None
    points = [r for r in leaf_rows(report) if r.get("intensity") and r.get("flops")]
    xs = [r["intensity"] for r in points]
    lo = min([*xs, peak / bw / 100, 0.1]) / 2
    hi = max([*xs, peak / bw * 100]) * 2
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    ax.plot(grid, [min(peak, x * bw) for x in grid], color="black", lw=1.5,
            label=f"matrix roof {format_count(peak, 'FLOP/s')}, {format_bytes(bw)}/s")
    if vector and vector != peak:
        ax.plot(grid, [min(vector, x * bw) for x in grid], color="grey", lw=1, ls="--",
                label=f"vector roof {format_count(vector, 'FLOP/s')}")
    total = sum(r["latency_s"] for r in points) or 1.0
    for bound in ("memory", "compute"):
        sel = [r for r in points if r.get("bound") == bound]
        if sel:
            ax.scatter([r["intensity"] for r in sel], [r["flops"] / r["latency_s"] for r in sel],
                       s=[12 + 400 * r["latency_s"] / total for r in sel], alpha=0.6,
                       color=_COLOURS[bound], label=f"{bound}-bound layers ({len(sel)})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("attainable FLOP/s")
    ax.axvline(peak / bw, color="black", lw=0.5, ls=":")
    ax.set_title(title or f"roofline on {rl.get('hardware')} ({rl.get('precision')})", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, which="major", alpha=0.3)
    return _svg(fig, plt, "mm-roofline", "roofline chart")


def module_times_svg(report: dict[str, Any], top: int = 15) -> str | None:
    """Horizontal bars: the `top` leaf layers by predicted time, split into compute and memory time."""
    plt = load_pyplot(optional=True)
    rows = sorted(leaf_rows(report), key=lambda r: -r["latency_s"])[:top]
    if plt is None or not rows:
        return None
    rows.reverse()  # longest at the top
    labels = [r["path"] or "(model)" for r in rows]
    labels = [x if len(x) <= 48 else "…" + x[-47:] for x in labels]
    labels = [x.replace("$", r"\$") for x in labels]  # '$' would start matplotlib mathtext
    fig, ax = plt.subplots(figsize=(5.6, 0.24 * len(rows) + 1.2))
    ys = list(range(len(rows)))
    longest = max(r["latency_s"] for r in rows)
    scale, unit = next(((f, u) for f, u in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")) if longest >= f),
                       (1e-9, "ns"))
    ax.barh(ys, [r["latency_s"] / scale for r in rows],
            color=[_COLOURS.get(r.get("bound", ""), "#888888") for r in rows], alpha=0.85)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel(f"predicted time ({unit}), roofline, unfused")
    ax.set_title(f"slowest layers on {(report.get('roofline') or {}).get('hardware')} "
                 "(red: compute-bound, blue: memory-bound)", fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
    return _svg(fig, plt, "mm-times", "per-module predicted time chart")


def measured_module_rows(report: dict[str, Any], top: int = 20) -> list[dict[str, Any]]:
    """Module rows timed with hooks (`measured_latency_s`), root excluded: the `top` longest, in tree order.

    Parents are kept beside their children (a parent's figure contains theirs): a block whose
    children sit in a container that is never called (an `nn.ModuleList`) has no other figure.
    """
    timed = [m for m in report.get("modules") or [] if m.get("measured_latency_s") is not None and m["path"]]
    keep = {id(m) for m in sorted(timed, key=lambda m: -m["measured_latency_s"])[:top]}
    return [m for m in timed if id(m) in keep]


def measured_modules_svg(report: dict[str, Any], top: int = 20) -> str | None:
    """Grouped bars per module: measured (hooks), calibrated prediction and roofline bound.

    None without per-module measurements or without any prediction to set them against
    (the bound only counts when the roofline is for the kind of device measured on).
    """
    plt = load_pyplot(optional=True)
    measured = report.get("measured") or {}
    bound_ok = measured.get("prediction_hardware") is not None
    rows = measured_module_rows(report, top)
    series = [("measured (hooks)", "measured_latency_s", "#444444")]
    # A prediction only beside a measurement on the kind of device it predicts.
    if bound_ok and any(m.get("predicted_latency_s") is not None for m in rows):
        gpu = (report.get("roofline") or {}).get("prediction", "").startswith("gpu")
        series.append(("predicted, GPU model" if gpu else "predicted, calibrated", "predicted_latency_s", "#2ca02c"))
    if bound_ok and any(m.get("latency_s") for m in rows):
        series.append(("roofline bound", "latency_s", "#9ecae1"))
    if plt is None or not rows or len(series) == 1:
        return None
    rows = rows[::-1]  # tree order from the top
    labels = [m["path"] if len(m["path"]) <= 48 else "…" + m["path"][-47:] for m in rows]
    labels = [x.replace("$", r"\$") for x in labels]  # '$' would start matplotlib mathtext
    longest = max(max((m.get(k) or 0.0) for _l, k, _c in series) for m in rows)
    scale, unit = next(((f, u) for f, u in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")) if longest >= f),
                       (1e-9, "ns"))
    fig, ax = plt.subplots(figsize=(5.6, 0.34 * len(rows) + 1.4))
    height = 0.8 / len(series)
    for i, (label, key, colour) in enumerate(series):
        offset = (len(series) - 1 - i - (len(series) - 1) / 2) * height  # first series on top
        ax.barh([y + offset for y in range(len(rows))], [(m.get(key) or 0.0) / scale for m in rows],
                height=height, color=colour, label=label)
    # Log scale: a module of microseconds and one of tens of milliseconds both stay readable.
    ax.set_xscale("log")
    smallest = min((m.get(k) or 0.0) for _l, k, _c in series for m in rows if (m.get(k) or 0.0) > 0)
    ax.set_xlim(left=smallest / scale / 3, right=longest / scale * 1.5)
    ax.set_yticks(list(range(len(rows))))
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel(f"time per forward pass ({unit}, log scale)")
    ax.set_title("measured against predicted per module", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, axis="x", alpha=0.3)
    return _svg(fig, plt, "mm-measured", "per-module measured against predicted time chart")
