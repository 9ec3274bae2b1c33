"""Terminal rendering with rich (layer 4). Only formatting: numbers come in base units."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from ..core.units import format_bytes, format_count, format_percent


def module_table(report: dict[str, Any], depth: int, title: str | None = None) -> Table:
    """Modules down to `depth` (0 = the root only) with params, MACs, FLOPs, bytes and share."""
    total_flops = report["totals"]["flops"] or 0
    table = Table(title=title, show_lines=False, header_style="bold")
    for name, justify in (("module", "left"), ("type", "left"), ("params", "right"),
                          ("MACs", "right"), ("FLOPs", "right"), ("other FLOPs", "right"),
                          ("bytes read", "right"), ("bytes written", "right"), ("FLOPs %", "right")):
        table.add_column(name, justify=justify, no_wrap=name == "module")
    for m in report["modules"]:
        if m["depth"] > depth:
            continue
        indent = "  " * m["depth"]
        label = m["path"].rpartition(".")[2] if m["path"] else "(model)"
        share = m["flops"] / total_flops if total_flops else None
        table.add_row(
            indent + label, m["type"], format_count(m["params"]), format_count(m["macs"]),
            format_count(m["flops"]), format_count(m["other_flops"]),
            format_bytes(m["bytes_read"]), format_bytes(m["bytes_written"]), format_percent(share),
        )
    return table


def totals_table(report: dict[str, Any]) -> Table:
    t = report["totals"]
    s = report["settings"]
    table = Table(title="totals", show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    table.add_column("exact", justify="right", style="dim")
    rows = [
        ("parameters", format_count(t["params"]), f"{t['params']:,}"),
        ("trainable parameters", format_count(t["trainable_params"]), f"{t['trainable_params']:,}"),
        ("buffers", format_count(t["buffers"]), f"{t['buffers']:,}"),
        (f"parameter size ({s['dtype']})", format_bytes(t["param_bytes"]),
         f"{t['param_bytes']:,.0f} B = {format_bytes(t['param_bytes'], binary=True)}"),
    ]
    if t.get("param_scale_bytes"):
        rows.append(("  of which quantisation scales", format_bytes(t["param_scale_bytes"]),
                     f"group size {s.get('group_size')}"))
    rows += [
        ("MACs", format_count(t["macs"]), f"{t['macs']:,}"),
        ("FLOPs (= 2 × MACs)", format_count(t["flops"]), f"{t['flops']:,}"),
        ("other FLOPs (elementwise, norms, softmax…)", format_count(t["other_flops"]),
         f"{t['other_flops']:,}"),
        ("bytes read (unfused)", format_bytes(t["bytes_read"]), f"{t['bytes_read']:,}"),
        ("bytes written (unfused)", format_bytes(t["bytes_written"]), f"{t['bytes_written']:,}"),
        ("op coverage", format_percent(t.get("coverage")), ""),
    ]
    for row in rows:
        table.add_row(*row)
    return table


def uncounted_table(report: dict[str, Any]) -> Table | None:
    if not report["uncounted_ops"]:
        return None
    table = Table(title="uncounted ops (arithmetic with no formula: not in the totals)")
    table.add_column("op")
    table.add_column("calls", justify="right")
    for item in report["uncounted_ops"]:
        table.add_row(item["op"], str(item["count"]))
    return table
