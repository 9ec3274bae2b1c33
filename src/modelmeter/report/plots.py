"""Plots for reports (layer 4): matplotlib with the Agg backend, imported only when a plot is drawn.

Each plot function takes its data and a path, writes `.png` or `.svg` (by
suffix) and returns the path; a path that cannot be written is a
`UserInputError`. Functions are self-contained so more plots can sit beside them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import UserInputError
from ..core.files import atomic_open, check_writable
from ._mpl import load_pyplot

if TYPE_CHECKING:
    from ..analysis.roofline import RooflineResult

_SUFFIXES = (".png", ".svg")
_COLOURS = {"memory": "#1f77b4", "compute": "#d62728"}


def check_plot_path(path: str | Path) -> Path:
    """A .png/.svg path that can be written (UserInputError otherwise); call it before the work."""
    p = Path(path)
    if p.suffix.lower() not in _SUFFIXES:
        raise UserInputError(f"cannot write plot {p}: use a .png or .svg file name")
    return check_writable(p, "plot")



def _save(fig: Any, plt: Any, p: Path) -> Path:
    try:
        with atomic_open(p, "wb", what="plot") as fh:  # whole or not at all
            fig.savefig(fh, format=p.suffix.lower()[1:], bbox_inches="tight", dpi=120)
    finally:
        plt.close(fig)
    return p


def plot_roofline(result: RooflineResult, path: str | Path, *, title: str | None = None) -> Path:
    """Log-log attainable FLOP/s vs arithmetic intensity: roofs plus one point per layer.

    Roofs: bandwidth slope, matrix peak and vector rate at the result's
    precision. Points are the layers of the seed's module-level figure, placed
    at their FLOP/s if they took their predicted time, sized by that time and
    coloured by what bounds them.
    """
    p = check_plot_path(path)
    plt = load_pyplot()
    bw, peak, vec = result.bandwidth_bytes_per_s, result.peak_flops, result.vector_flops
    points = [r for r in result.layers if r.flops > 0 and r.bytes > 0 and r.latency_s > 0]
    xs = [r.intensity for r in points]
    lo = min([*xs, result.ridge_point / 100, 0.1])
    hi = max([*xs, result.ridge_point * 100])
    fig, ax = plt.subplots(figsize=(8, 5.5))
    grid = [lo / 2, *(lo * (hi / lo) ** (i / 200) for i in range(201)), hi * 2]
    ax.plot(grid, [min(peak, x * bw) for x in grid], color="black", lw=2,
            label=f"matrix roof {result.precision} {peak / 1e12:.3g} TFLOP/s")
    if vec < peak:
        ax.plot(grid, [min(vec, x * bw) for x in grid], color="grey", lw=1.2, ls="--",
                label=f"vector roof {vec / 1e12:.3g} TFLOP/s")
    ax.axvline(result.ridge_point, color="black", lw=0.6, ls=":",
               label=f"ridge {result.ridge_point:.3g} FLOP/B, {bw / 1e9:.4g} GB/s")
    if points:
        longest = max(r.latency_s for r in points)
        for bound, colour in _COLOURS.items():
            sel = [r for r in points if r.bound == bound]
            if sel:
                ax.scatter([r.intensity for r in sel], [r.flops / r.latency_s for r in sel],
                           s=[12 + 300 * r.latency_s / longest for r in sel], c=colour, alpha=0.6,
                           edgecolors="none", label=f"{bound}-bound layers ({len(sel)})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("attainable FLOP/s")
    ax.set_title(title or f"roofline on {result.hardware.name} ({result.precision}, weights {result.weights})")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, plt, p)


def plot_module_times(result: RooflineResult, path: str | Path, *, top: int = 15,
                      title: str | None = None) -> Path:
    """Horizontal bars of the `top` slowest layers: memory time and compute time side by side."""
    p = check_plot_path(path)
    plt = load_pyplot()
    rows = sorted((r for r in result.layers if r.latency_s > 0), key=lambda r: -r.latency_s)[:top]
    rows.reverse()  # slowest at the top of the chart
    fig, ax = plt.subplots(figsize=(8, 0.35 * max(len(rows), 3) + 1.2))
    ys = list(range(len(rows)))
    longest = max((r.latency_s for r in rows), default=0.0)
    scale, unit = (1e3, "ms") if longest >= 1e-3 else (1e6, "µs")
    ax.barh([y + 0.2 for y in ys], [r.t_memory_s * scale for r in rows], height=0.4,
            color=_COLOURS["memory"], label="t_memory")
    ax.barh([y - 0.2 for y in ys], [r.t_compute_s * scale for r in rows], height=0.4,
            color=_COLOURS["compute"], label="t_compute")
    ax.set_yticks(ys)
    # 'own ops': a parent module's ops outside its children (residual adds, attention products).
    ax.set_yticklabels([(r.path or "(model)") + (" (own ops)" if r.kind != "module" else "")
                        for r in rows], fontsize=7)
    ax.set_xlabel(f"predicted time ({unit})")
    ax.set_title(title or f"slowest layers on {result.hardware.name} (estimated)")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, plt, p)
