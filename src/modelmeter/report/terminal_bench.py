"""The benchmark in the terminal (layer 4): live progress, a line per finished batch, the table.

Reads `measure.bench.BenchRow` objects (while the sweep runs) and the report's
`measured` section (after it); only formatting, numbers come in base units.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from ..core.units import format_bytes, format_count, format_rate, format_seconds, plural
from ..measure.bench import BenchRow


def flush(console: Console) -> None:
    """Rows are the record of a run that may be cut short: get each one out at once."""
    try:
        console.file.flush()
    except (AttributeError, OSError, ValueError):
        pass


def row_line(row: BenchRow) -> str:
    """'batch 8: p50 12.1 ms, 661 items/s, 10 calls, peak +3.1 MiB, roofline 99 ns' for one batch."""
    s = row.sweep
    if s.status != "ok" or s.latency is None:
        return f"batch {s.batch}: {s.status}" + (f" ({s.error})" if s.error else "")
    lat = s.latency
    parts = [f"batch {s.batch}: p50 {format_seconds(lat.p50_s)}", format_rate(s.throughput_per_s, "items/s"),
             plural(lat.iterations, "call")]
    if s.peak_memory_bytes is not None:
        parts.append(f"peak +{format_bytes(s.peak_memory_bytes, binary=True)}")
    if row.prediction is not None and row.prediction.latency_s is not None:
        parts.append(f"roofline {format_seconds(row.prediction.latency_s)}")
    if row.energy_j_per_inference is not None and row.energy is not None:
        parts.append(f"{row.energy_j_per_inference:.3g} J/inference [{row.energy.source}]")
    if lat.noisy:
        parts.append("NOISY")
    return ", ".join(parts)


@contextmanager
def live_progress(console: Console) -> Iterator[tuple[Callable[[int, str, int, float], None],
                                                      Callable[[BenchRow], None]]]:
    """(on_progress, on_row) callbacks drawing a spinner and printing each finished row.

    No auto-refresh: rich's refresh thread would wake ten times a second and take
    a core from the model while it is being timed. The timer reports between
    calls (at most every 100 ms), and that is when the bar redraws.
    """
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=True, auto_refresh=False) as bar:
        task = bar.add_task("starting", total=None)

        def on_progress(batch: int, phase: str, n: int, elapsed: float) -> None:
            bar.update(task, description=f"batch {batch}: {phase} {plural(n, 'call')}, {elapsed:.1f} s", refresh=True)

        def on_row(row: BenchRow) -> None:
            bar.console.print(Text(row_line(row)))
            flush(bar.console)

        yield on_progress, on_row


def bench_view(m: dict[str, Any], energy: bool) -> list[RenderableType]:
    """The `measured` section: conditions, the table per batch, then what to know about it."""
    c = m["conditions"]
    out: list[RenderableType] = [Text.assemble(
        (str(c.get("model", "")), "bold"),
        f" on {c.get('device_name', m['device'])} ({m['device']}, {plural(c.get('threads'), 'thread')}, "
        f"torch {c.get('torch_version')}, {c.get('dtype')}; allocator: {c.get('allocator')})")]
    table = Table(title="measured (wall clock after warm-up; roofline and 'estimate' are estimates)")
    cols = ["batch", "p50", "p90", "p99", "min", "mean ± std", "calls", "items/s",
            "peak mem (counted)", "roofline (eff.)"]
    if energy:
        cols += ["J/inference [source]", "avg W", "gCO2e/1k"]
    cols.append("status")
    for col in cols:
        table.add_column(col, justify="left" if col == "status" else "right")
    best = m["best_batch"]
    for r in m["sweep"]:
        table.add_row(*(Text(cell) for cell in _cells(r, best, energy)))  # Text: '[estimate]' is no markup
    out.append(table)
    if m.get("backends"):
        from .backends import backends_table

        out.append(backends_table(m["backends"]))
    if best is not None:
        out.append(Text(f"best throughput at batch {best}"))
    if m["oom"]:
        out.append(Text(f"out of memory: largest batch that fit is {m['largest_batch_that_fit']}"))
    if m["interrupted"]:
        out.append(Text("interrupted: only the finished rows above were measured"))
    for r in m["sweep"]:
        if r["noisy"]:
            out.append(Text(f"batch {r['batch']} is noisy: {r['noise_reason']}"))
        for key in ("energy_warning", "prediction_error"):
            if r[key]:
                out.append(Text(f"batch {r['batch']}: {r[key]}"))
    if energy and any(r["energy_source"] == "estimate" for r in m["sweep"]):
        out.append(Text("energy [estimate]: computed from the counts (no meter measured it)"))
    if energy:
        out.append(Text(f"carbon: region {m['carbon_region']}, PUE {m['pue']:g}"))
    out += [Text(f"note: {note}") for note in m["notes"]]
    return out


def _cells(r: dict[str, Any], best: int | None, energy: bool) -> list[str]:
    lat = r["latency_s"] or {}
    status = r["status"] + (" NOISY" if r["noisy"] else "") + (" best" if r["batch"] == best else "")
    eff = r["roofline_efficiency"]
    counted = r["counted_peak_activation_bytes"]
    cells = [
        str(r["batch"]), format_seconds(lat.get("p50")), format_seconds(lat.get("p90")),
        format_seconds(lat.get("p99")), format_seconds(lat.get("min")),
        f"{format_seconds(lat.get('mean'))} ± {format_seconds(lat.get('std'))}" if lat else "—",
        str(lat.get("iterations", "—")),
        format_count(r["throughput_per_s"]),
        format_bytes(r["peak_memory_bytes"], binary=True)
        + (f" ({format_bytes(counted, binary=True)})" if counted is not None else ""),
        format_seconds(r["predicted_latency_s"]) + (f" ({eff:.0%})" if eff is not None else ""),
    ]
    if energy:
        joules = r["energy_j_per_inference"]
        cells += [f"{joules:.3g} [{r['energy_source']}]" if joules is not None else "—",
                  f"{r['average_power_w']:.3g}" if r["average_power_w"] is not None else "—",
                  f"{r['carbon_g_per_1000']:.3g}" if r["carbon_g_per_1000"] is not None else "—"]
    cells.append(status)
    return cells
