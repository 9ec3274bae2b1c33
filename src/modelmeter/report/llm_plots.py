"""The LLM view's plot (layer 4): throughput against batch size, and the roofline.

Input is the `llm` section (`analysis.llm.llm_section`), plain data in base
units, so a stored report can be plotted again. matplotlib is imported only
when a plot is drawn, with the Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.errors import UserInputError
from ..core.files import atomic_open, check_writable
from ._mpl import load_pyplot

_SUFFIXES = (".png", ".svg", ".pdf")


def plot_llm(section: dict[str, Any], path: str | Path) -> Path:
    """Write tokens/s vs batch size (memory limit marked) and the roofline with
    prefill and decode points; returns the path. Unwritable path -> UserInputError."""
    target = check_plot_path(path)
    plt = load_pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    try:
        _throughput(left, section)
        _roofline(right, section)
        fig.suptitle(f"{section['model']} on {section['hardware']} — prompt {section['settings']['prompt']}, "
                     f"gen {section['settings']['gen']}, weights {section['settings']['weights']}, "
                     f"KV {section['settings']['kv_dtype']} (estimated)")
        fig.tight_layout()
        with atomic_open(target, "wb", what="plot") as fh:  # whole or not at all
            fig.savefig(fh, format=target.suffix.lower()[1:])
    finally:
        plt.close(fig)
    return target


def check_plot_path(path: str | Path) -> Path:
    """Fail before any work when a plot could not be written there."""
    target = Path(path)
    if target.suffix.lower() not in _SUFFIXES:
        raise UserInputError(f"cannot write plot {target}: use a .png, .svg or .pdf file name")
    return check_writable(target, "plot")


def _throughput(ax: Any, section: dict[str, Any]) -> None:
    rows = sorted({r["batch"]: r for r in [*section["sweep"], *section["batches"]]}.values(),
                  key=lambda r: r["batch"])
    xs = [r["batch"] for r in rows]
    ax.plot(xs, [r["tokens_per_s"] for r in rows], marker="o", label="tokens/s (all sequences)")
    asked = section["batches"]
    ax.scatter([r["batch"] for r in asked], [r["tokens_per_s"] for r in asked], s=80,
               facecolors="none", edgecolors="black", zorder=3, label="requested batch sizes")
    limit = section.get("max_batch")
    if limit:
        ax.axvline(limit, color="#d62728", linestyle="--", label=f"memory limit: batch {limit}")
        if xs[-1] > limit:
            ax.axvspan(limit, xs[-1], color="#d62728", alpha=0.08)
    elif limit == 0:
        ax.text(0.5, 0.5, "does not fit in device memory", transform=ax.transAxes, ha="center",
                color="#d62728")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size (sequences)")
    ax.set_ylabel("generated tokens/s")
    ax.set_title("throughput vs batch size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def _roofline(ax: Any, section: dict[str, Any]) -> None:
    hw = section["hardware_detail"]
    peak, bw = hw["peak_flops"], hw["memory_bandwidth_bytes_per_s"]
    points = [(phase, r["batch"], r[phase]) for r in section["batches"] for phase in ("prefill", "decode")]
    intensities = [p["intensity"] for _, _, p in points if p["bytes"]]
    lo = min([*intensities, peak / bw]) / 10
    hi = max([*intensities, peak / bw]) * 10
    xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    ax.plot(xs, [min(peak, bw * x) for x in xs], color="black", label="roofline")
    ax.axvline(peak / bw, color="grey", linestyle=":", label=f"ridge {peak / bw:.0f} FLOP/B")
    colours = {"prefill": "#d62728", "decode": "#1f77b4"}
    for phase in ("prefill", "decode"):
        mine = [(b, p) for ph, b, p in points if ph == phase and p["time_s"] > 0]
        ax.scatter([p["intensity"] for _, p in mine], [p["flops"] / p["time_s"] for _, p in mine],
                   color=colours[phase], label=phase, zorder=3)
        # Points that (nearly) coincide share one label, "batch 1, 4", instead of overprinting;
        # prefill labels sit above their points, decode labels below.
        labels: list[tuple[float, float, list[int]]] = []
        for b, p in mine:
            x, y = p["intensity"], p["flops"] / p["time_s"]
            near = next((lab for lab in labels if 0.87 < lab[0] / x < 1.15 and 0.87 < lab[1] / y < 1.15), None)
            if near is None:
                labels.append((x, y, [b]))
            else:
                near[2].append(b)
        for x, y, group in labels:
            ax.annotate("batch " + ", ".join(map(str, group)), (x, y), fontsize=7,
                        xytext=(5, 6 if phase == "prefill" else -12), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("attained FLOP/s")
    ax.set_title(f"roofline: {section['hardware']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
