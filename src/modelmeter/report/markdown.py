"""Markdown rendering of a report and of a comparison (layer 4). Strings in, string out.

Shared documents must not reveal the user's file layout: absolute paths are
shown by their last component unless `absolute_paths=True`. Text from the
model (module names, types, the model name) is data, never markup: every
character Markdown or its HTML could act on is escaped, so a module named
`[x](https://evil)` or `<img onerror=...>` is shown as written.
"""

from __future__ import annotations

from typing import Any

from .summary import (
    as_dict,
    build_summary,
    format_ratio,
    format_value,
    header_facts,
    module_bound,
    module_latency,
    strip_paths,
    summary_notes,
)

__all__ = ["comparison_markdown", "escape_markdown", "render_markdown"]


# Characters with a meaning in CommonMark/GFM inline text or table cells:
# emphasis (* _ ~), code (`), links and images ([ ] !), raw HTML (< >), cells (|),
# escapes themselves (\\). "&" starts an HTML entity, so it becomes "&amp;".
_MARKDOWN_SPECIAL = set("\\`*_~[]<>|!")


def escape_markdown(text: str) -> str:
    """`text` shown literally in Markdown inline text or a table cell (one line)."""
    out = []
    for ch in " ".join(text.splitlines()):
        if ch == "&":
            out.append("&amp;")
        elif ch in _MARKDOWN_SPECIAL:
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def _cell(text: Any, absolute_paths: bool) -> str:
    """One table cell: no path leaks, no markup, no broken table."""
    s = str(text)
    if not absolute_paths:
        s = strip_paths(s)
    return escape_markdown(s)


def render_markdown(report: Any, *, depth: int = 1, absolute_paths: bool = False) -> str:
    """The summary table as Markdown, with what was analysed, notes, modules to `depth`, uncounted ops."""
    r = as_dict(report)
    c = lambda text: _cell(text, absolute_paths)  # noqa: E731 - a local shorthand
    name = c(r.get("model", {}).get("name", "model"))
    lines = [f"# {name} — efficiency report", ""]
    for label, value in header_facts(r):
        lines.append(f"- **{c(label)}**: {c(value)}")
    lines += ["", "## Summary", "",
              "| metric | value | how obtained | hardware-dependent | mainly affects |",
              "|---|---:|---|:---:|---|"]
    for row in build_summary(r):
        lines.append(f"| {c(row.metric)} | {c(row.value)} | {c(row.how)} | "
                     f"{'yes' if row.hardware_dependent else 'no'} | {c(row.affects)} |")
    notes = summary_notes(r)
    if notes:
        lines += ["", "Notes:", ""] + [f"- {c(n)}" for n in notes]
    mods = [m for m in r.get("modules", []) if m["depth"] <= depth]
    if mods:
        has_time = any("t_compute_s" in m for m in mods)
        head = "| module | type | params | MACs | FLOPs | bytes moved |"
        rule = "|---|---|---:|---:|---:|---:|"
        if has_time:
            head += " predicted | bound |"
            rule += "---:|---|"
        lines += ["", f"## Modules (to depth {depth})", "", head, rule]
        for m in mods:
            label = ("&nbsp;&nbsp;" * m["depth"]) + c(m["path"].rpartition(".")[2] if m["path"] else "(model)")
            row = (f"| {label} | {c(m['type'])} | {format_value(m['params'], '')} | "
                   f"{format_value(m['macs'], '')} | {format_value(m['flops'], '')} | "
                   f"{format_value(m['bytes_read'] + m['bytes_written'], 'B')} |")
            if has_time:
                row += f" {format_value(module_latency(m), 's')} | {c(module_bound(m))} |"
            lines.append(row)
    if r.get("uncounted_ops"):
        lines += ["", "## Uncounted ops (no formula: not in the FLOP totals)", "", "| op | calls |", "|---|---:|"]
        lines += [f"| {c(u['op'])} | {u['count']} |" for u in r["uncounted_ops"]]
    lines += ["", "_counted_: from one trace of the model; _estimated_: roofline or energy model; "
              "_measured_: timed on the named device.", ""]
    return "\n".join(lines)


def comparison_markdown(comparison: Any, *, absolute_paths: bool = False) -> str:
    """A comparison (`Comparison` or its dict) as one Markdown table with ratios to the first column."""
    comp = comparison.to_dict() if hasattr(comparison, "to_dict") else comparison
    c = lambda text: _cell(text, absolute_paths)  # noqa: E731
    labels = [c(label) for label in comp["labels"]]
    lines = ["| metric | how | " + " | ".join(labels) + " |",
             "|---|---|" + "---:|" * len(labels)]
    for row in comp["rows"]:
        cells = []
        for j, (value, ratio) in enumerate(zip(row["values"], row["ratios"], strict=True)):
            text = format_value(value, row["unit"])
            if j > 0 and value is not None:
                text += f" ({format_ratio(ratio)})"
            cells.append(text)
        lines.append(f"| {c(row['metric'])} | {c(row['method'])} | " + " | ".join(cells) + " |")
    lines += ["", f"Ratios are to the first column ({labels[0] if labels else '—'}).", ""]
    return "\n".join(lines)
