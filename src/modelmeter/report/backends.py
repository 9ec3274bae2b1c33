"""The `measured.backends` table: each backend beside eager, with its speed-up (layer 4)."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from ..core.units import format_count, format_seconds


def backends_table(backends: list[dict[str, Any]]) -> Table:
    """One row per backend and batch: one-off setup, percentiles, throughput, speed-up vs eager."""
    table = Table(title="backends (same timer and percentiles; setup = export/compile, not in p50)",
                  header_style="bold")
    for col in ("backend", "batch", "setup", "p50", "p90", "p99", "items/s", "vs eager", "status"):
        table.add_column(col, justify="left" if col in ("backend", "status") else "right")
    for entry in backends:
        if entry.get("error"):
            table.add_row(Text(entry["backend"]), "", "", "", "", "", "", "",
                          Text(f"failed: {entry['error']}"))
            continue
        for r in entry["rows"]:
            lat = r["latency_s"] or {}
            speed = r["speedup_vs_eager"]
            status = r["status"] + (" NOISY" if r.get("noisy") else "")
            if r.get("error"):
                status += f": {r['error']}"
            table.add_row(*(Text(c) for c in (
                entry["backend"], str(r["batch"]),
                format_seconds(r["setup_s"]) if r["setup_s"] else "—",
                format_seconds(lat.get("p50")), format_seconds(lat.get("p90")),
                format_seconds(lat.get("p99")), format_count(r["throughput_per_s"]),
                f"{speed:.3g}×" if speed is not None else "—", status,
            )))
    return table
