"""`modelmeter history` and `modelmeter diff` in the terminal (layer 4)."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..core.units import format_count
from ..store import StoredRun
from .diff import GateResult, MetricChange, format_change, metric_text, metric_value


def history_view(runs: Sequence[StoredRun], path: object) -> list[RenderableType]:
    """The runs table, then a line per run that could not be read."""
    return [history_table(runs, path),
            *(Text(f"run {run.id} is unreadable: {run.error}") for run in runs if run.error is not None)]


def history_table(runs: Sequence[StoredRun], path: object) -> Table:
    """Stored runs, newest first: id, date, model, headline figures, hardware (and labels)."""
    with_labels = any(run.label for run in runs)
    # No vertical rules (as `hardware list`): the columns fit an 80-column terminal.
    table = Table(title=f"runs in {path}", title_justify="left", box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False)
    # ids, dates and numbers never wrap (an id split over two lines cannot be
    # copied); names give way when the terminal is narrow.
    # min_width too: a narrow table shrinks even no_wrap columns to "a…" otherwise.
    table.add_column("id", no_wrap=True, min_width=max((len(run.id) for run in runs), default=2))
    table.add_column("date", no_wrap=True, min_width=16)
    table.add_column("model", min_width=min(24, max((len(run.model or "") for run in runs), default=5)))
    # The FLOP unit in the header and two header lines for the latency: room for the hardware,
    # which folds onto two lines at 80 columns (it was squeezed to three characters a line).
    for column in ("params", "FLOPs", "latency\np50"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("hardware", overflow="fold", min_width=8)
    if with_labels:
        table.add_column("label", overflow="fold")
    for run in runs:
        if run.error is not None:
            # One bad row must not hide the others: shown, marked, and the rest listed.
            table.add_row(run.id, "—", run.model or "—", "unreadable", "—", "—", "—",
                          *([""] if with_labels else []))
            continue
        row = [
            run.id,
            run.created_at.astimezone().strftime("%Y-%m-%d %H:%M"),
            run.model or "—",
            metric_text("params", metric_value(run.report, "params")),
            format_count(metric_value(run.report, "flops")),
            metric_text("latency_p50", metric_value(run.report, "latency_p50")),
            run_hardware(run),
        ]
        table.add_row(*row, *([run.label or ""] if with_labels else []))
    return table


def run_hardware(run: StoredRun) -> str:
    """The device a stored run names: its settings, else its fingerprint, else its device."""
    settings = run.report.get("settings")
    hardware = settings.get("hardware") if isinstance(settings, dict) else None
    if isinstance(hardware, dict):
        hardware = hardware.get("id") or hardware.get("name")
    if not hardware and run.fingerprint:
        hardware = run.fingerprint.get("hardware")
    if not hardware and isinstance(settings, dict):
        hardware = settings.get("device")
    return str(hardware) if hardware else "—"


def diff_view(a: str, b: str, changes: Sequence[MetricChange],
              results: Sequence[GateResult], notes: Sequence[str] = ()) -> list[RenderableType]:
    """Where A and B came from, what to know (different models), each metric's change
    (green better, red worse), each gate's verdict."""
    out: list[RenderableType] = [f"A: {escape(a)}", f"B: {escape(b)}",
                                 *(Text(f"note: {note}") for note in notes)]
    if not changes:
        out.append("no metrics in common to compare")
    else:
        table = Table()
        table.add_column("metric")
        table.add_column("A", justify="right")
        table.add_column("B", justify="right")
        table.add_column("change", justify="right")
        for change in changes:
            style = {True: "green", False: "red", None: ""}[change.improved]
            text = format_change(change)
            table.add_row(
                change.name,
                metric_text(change.name, change.a),
                metric_text(change.name, change.b),
                f"[{style}]{text}[/{style}]" if style else text,
            )
        out.append(table)
        if not any(change.changed for change in changes):
            out.append("no change")
    for result in results:
        mark = {"pass": "[green]PASS[/green]", "fail": "[red]FAIL[/red]"}.get(
            result.status, "[red]MISSING[/red]"
        )
        out.append(f"{mark} {escape(result.gate.text)}: {escape(result.reason)}")
    return out
