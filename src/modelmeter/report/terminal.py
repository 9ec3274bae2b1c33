"""Terminal rendering with rich (layer 4). Only formatting: numbers come in base units.

The count tables and the efficiency report live here; each other command's
view has its own module (`terminal_memory`, `terminal_roofline`,
`terminal_bench`, `terminal_llm`, `terminal_hardware`). A `*_view` function
returns the renderables a command prints, in order; the CLI only prints them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from ..core.units import format_bytes, format_count, format_percent, format_seconds

# Columns that give way, in this order, when the terminal is too narrow for a whole table
# (every figure stays in the JSON); FLOPs last among the numbers: it is 2 x MACs.
MODULE_DROPPABLE = ("other FLOPs", "bytes written", "bytes read", "input shape", "output shape", "FLOPs")
OPERATOR_DROPPABLE = ("category", "other FLOPs", "bytes written", "bytes read", "FLOPs")


def fitted(build: Any, droppable: Sequence[str], width: int | None) -> Table:
    """`build(left_out)` with as few of `droppable` left out as fit `width` columns (None: all
    shown); the caption names what was left out."""
    left_out: list[str] = []
    if width is not None:
        for name in droppable:
            if needed_width(build(left_out)) <= width:
                break
            left_out.append(name)
    table = build(left_out)
    if left_out:
        note = f"left out at this width: {', '.join(left_out)} (all in --json)"
        table.caption = f"{table.caption}; {note}" if table.caption else note
    return table


def needed_width(table: Table) -> int:
    """Columns `table` needs when nothing in it wraps."""
    from rich.console import Console
    from rich.measure import Measurement

    console = Console(width=10_000)
    return Measurement.get(console, console.options, table).maximum


def _add_columns(table: Table, columns: Sequence[tuple[str, str]], rows: list[list[str]],
                 whole: Sequence[str] = ()) -> None:
    """Numbers never shrink to an ellipsis (a column is at least as wide as its widest cell);
    the `whole` text columns do not wrap (a name split over lines cannot be copied); the other
    text columns fold onto more lines when the terminal is narrow."""
    for i, (name, justify) in enumerate(columns):
        widest = max([len(name), *(len(r[i]) for r in rows)])
        if justify == "right":
            table.add_column(name, justify="right", no_wrap=True, min_width=widest)
        else:
            table.add_column(name, justify="left", no_wrap=name in whole,
                             overflow="ellipsis" if name in whole else "fold")


def module_table(report: dict[str, Any], depth: int, title: str | None = None,
                 width: int | None = None) -> Table:
    """Modules down to `depth` (0 = the root only) with their input and output shapes
    (as torchinfo shows them), params, MACs, FLOPs, bytes and share; at `width` columns the
    least-needed columns give way (`MODULE_DROPPABLE`)."""
    total_flops = report["totals"]["flops"] or 0
    usual = _usual_dtype(report)
    columns = (("module", "left"), ("type", "left"), ("input shape", "left"), ("output shape", "left"),
               ("params", "right"), ("MACs", "right"), ("FLOPs", "right"), ("other FLOPs", "right"),
               ("bytes read", "right"), ("bytes written", "right"), ("FLOPs %", "right"))
    rows = []
    for m in report["modules"]:
        if m["depth"] > depth:
            continue
        indent = "  " * m["depth"]
        label = m["path"].rpartition(".")[2] if m["path"] else "(model)"
        share = m["flops"] / total_flops if total_flops else None
        kind = f"{m['type']} ×{m['experts']} (top-{m['top_k']})" if m.get("experts") else m["type"]
        rows.append([
            indent + label, kind,
            shape_cell(m.get("input_shapes") or [], m.get("input_dtypes") or [], usual),
            shape_cell(m.get("output_shapes") or [], m.get("output_dtypes") or [], usual),
            format_count(m["params"]), format_count(m["macs"]),
            format_count(m["flops"]), format_count(m["other_flops"]),
            format_bytes(m["bytes_read"]), format_bytes(m["bytes_written"]), format_percent(share),
        ])

    def build(left_out: Sequence[str]) -> Table:
        keep = [i for i, (name, _) in enumerate(columns) if name not in left_out]
        shapes = any(columns[i][0].endswith("shape") for i in keep)
        table = Table(title=title, show_lines=False, header_style="bold",
                      caption=(f"shapes: the first tensor of the first call, +N more tensors (all in the "
                               f"JSON); dtype shown when not {usual}") if shapes else None)
        kept = [[r[i] for i in keep] for r in rows]
        # Names stay whole (a type such as 'MixtralExperts ×8 (top-2)' says how the layer was
        # counted; it folds onto a second line rather than losing its end); shapes fold.
        _add_columns(table, [columns[i] for i in keep], kept, whole=("module",))
        for r in kept:
            table.add_row(*r)
        return table

    return fitted(build, MODULE_DROPPABLE, width)


def inputs_line(report: dict[str, Any]) -> Text:
    """'inputs traced: input_ids [1, 128] int64 (preset default, --seq 128)': shape, dtype and
    how they were chosen (`settings.inputs`, `settings.inputs_from`)."""
    from ..core.brief import inputs_text

    return Text.assemble(("inputs traced: ", "bold"), inputs_text(report.get("settings") or {}))


def shape_cell(shapes: list[list[int]], dtypes: list[str], usual: str) -> str:
    """'[1, 64, 56, 56]', with its dtype when not `usual` and '+N' for N more tensors."""
    if not shapes:
        return ""
    text = "[" + ", ".join(str(d) for d in shapes[0]) + "]"
    if dtypes and dtypes[0] != usual:
        text += f" {dtypes[0]}"
    return text + (f" +{len(shapes) - 1}" if len(shapes) > 1 else "")


def _usual_dtype(report: dict[str, Any]) -> str:
    """The torch name of the dtype the trace ran in ('float32'): shape cells leave it out."""
    from ..core.precision import UnknownPrecisionError, parse_precision

    try:
        return parse_precision(report["settings"].get("trace_dtype") or "fp32").torch_dtype or "float32"
    except UnknownPrecisionError:  # 'mixed' (an ONNX graph of several float dtypes)
        return "float32"


def totals_table(report: dict[str, Any]) -> Table:
    t = report["totals"]
    s = report["settings"]
    table = Table(title="totals", show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    table.add_column("exact", justify="right", style="dim")
    rows = [
        ("parameters", format_count(t["params"]), f"{t['params']:,}"),
    ]
    if t.get("active_params") is not None and t["active_params"] != t["params"]:
        active, lean = t["active_params"], t.get("active_params_without_embeddings")
        rows.append(("active parameters per token", format_count(active), f"{active:,}"))
        if lean is not None and lean != active:
            rows.append(("  without embedding lookups", format_count(lean), f"{lean:,}"))
        rows.append(("expert routing", s.get("routing") or "", ""))
    rows += [
        ("trainable parameters", format_count(t["trainable_params"]), f"{t['trainable_params']:,}"),
        ("buffers", format_count(t["buffers"]), f"{t['buffers']:,}"),
        (f"parameter size ({s['dtype']})", format_bytes(t["param_bytes"]),
         f"{t['param_bytes']:,.0f} B = {format_bytes(t['param_bytes'], binary=True)}"),
    ]
    q = t.get("quantization")
    if t.get("param_scale_bytes"):
        group = q["group_size"] if q else s.get("group_size")
        rows.append(("  of which quantisation scales", format_bytes(t["param_scale_bytes"]),
                     f"group size {group}"))
    if q:
        # The layout is an assumption the figure rests on: say it, and say when no scales are in it.
        rows.append(("  layout assumed", q["layout"], "linear/conv weights quantised, the rest kept"))
        if not q.get("group_size"):
            rows.append(("  quantisation scales", "none counted",
                         "no --group-size given: pass one (e.g. 128) to add one scale per group"))
        kept = ", ".join(k["kind"] for k in q["kept"]) or "nothing"
        rows.append((f"  of which kept {q['kept_precision']}: {kept}", format_bytes(q["kept_bytes"]),
                     f"{q['kept_params']:,} params"))
        rows.append((f"  naive: every tensor at {q['precision']}", format_bytes(t["param_bytes_naive"]),
                     f"{t['param_bytes_naive']:,.0f} B"))
    rows += [
        ("MACs", format_count(t["macs"]), f"{t['macs']:,}"),
        ("FLOPs (= 2 × MACs)", format_count(t["flops"]), f"{t['flops']:,}"),
        ("other FLOPs (elementwise, norms, softmax, ...)", format_count(t["other_flops"]),
         f"{t['other_flops']:,}"),
        ("bytes read (unfused)", format_bytes(t["bytes_read"]), f"{t['bytes_read']:,}"),
        ("bytes written (unfused)", format_bytes(t["bytes_written"]), f"{t['bytes_written']:,}"),
        ("op coverage", format_percent(t.get("coverage")), ""),
    ]
    for row in rows:
        table.add_row(*row)
    return table


def operator_table(report: dict[str, Any], title: str | None = None, width: int | None = None) -> Table:
    """Totals by op kind (`totals.by_operator`): calls, MACs, FLOPs, bytes, share of all FLOPs;
    at `width` columns the least-needed columns give way (`OPERATOR_DROPPABLE`)."""
    columns = (("op", "left"), ("category", "left"), ("calls", "right"), ("MACs", "right"),
               ("FLOPs", "right"), ("other FLOPs", "right"), ("bytes read", "right"),
               ("bytes written", "right"), ("% of FLOPs", "right"))
    rows = [[r["op"], r["category"], f"{r['calls']:,}", format_count(r["macs"]), format_count(r["flops"]),
             format_count(r["other_flops"]), format_bytes(r["bytes_read"]), format_bytes(r["bytes_written"]),
             format_percent(r["share_of_total_flops"])] for r in report["totals"].get("by_operator") or []]

    def build(left_out: Sequence[str]) -> Table:
        keep = [i for i, (name, _) in enumerate(columns) if name not in left_out]
        table = Table(title=title, header_style="bold",
                      caption="% of FLOPs: its FLOPs + other FLOPs over the model's (forward pass)")
        kept = [[r[i] for i in keep] for r in rows]
        # An op name folds onto a second line when it must (still whole: it can be copied).
        _add_columns(table, [columns[i] for i in keep], kept)
        for r in kept:
            table.add_row(*(Text(r[0]), *r[1:]))
        return table

    return fitted(build, OPERATOR_DROPPABLE, width)


def count_view(report: dict[str, Any], depth: int, by: str = "module",
               width: int | None = None) -> list[RenderableType]:
    """`modelmeter count`: the inputs traced, the modules to `depth` (or, with `by='op'`,
    the totals by op kind), the totals, the uncounted ops; tables fitted to `width` columns."""
    name = report["model"]["name"]
    table = (operator_table(report, title=f"{name} — per operator", width=width) if by == "op"
             else module_table(report, depth, title=f"{name} — per module", width=width))
    out: list[RenderableType] = [inputs_line(report), table, totals_table(report)]
    uncounted = uncounted_table(report)
    return out + ([uncounted] if uncounted is not None else [])


def presets_table(presets: Iterable[dict[str, Any]]) -> Table:
    """`modelmeter models`: each shipped preset's name, family, total and active parameters,
    and the inputs it is traced with unless told otherwise."""
    table = Table(title="shipped presets (architectures from configs; no download)")
    rows = [[r["name"], r["family"], format_count(r["params"]), format_count(r["active_params"]),
             ", ".join(r.get("inputs") or []), r["description"]] for r in presets]
    # The name and inputs stay whole (they are typed into the next command); the rest folds.
    _add_columns(table, (("name", "left"), ("family", "left"), ("params", "right"), ("active", "right"),
                         ("default inputs", "left"), ("description", "left")), rows,
                 whole=("name", "default inputs"))
    table.columns[0].style = "bold"
    table.columns[0].min_width = max(len(r[0]) for r in rows) if rows else None
    for r in rows:
        table.add_row(*r)
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


# ------------------------------------------------------------------ the efficiency report


def report_view(report: dict[str, Any], depth: int, top: int,
                extra_facts: Iterable[tuple[str, str]] = ()) -> list[RenderableType]:
    """`modelmeter report`: what was analysed, the summary, notes, modules, bound layers, uncounted ops.

    `extra_facts`: header rows the caller knows and the report does not (the thread count).
    """
    out: list[RenderableType] = [report_header(report, extra_facts), summary_table(report)]
    out += [Text(f"note: {note}") for note in report_notes(report)]
    out.append(breakdown_table(report, depth))
    out += [Text(line) for line in module_timing_lines(report)]
    out += [Text(line) for line in bound_layers_lines(report, top)]
    uncounted = uncounted_table(report)
    return out + ([uncounted] if uncounted is not None else [])


def comparison_view(comparison: dict[str, Any], notes: Iterable[str]) -> list[RenderableType]:
    """`modelmeter compare`: the table, then every note of the reports once."""
    return [comparison_table(comparison), *(Text(f"note: {note}") for note in sorted(set(notes)))]


def report_header(report: dict[str, Any], extra_facts: Iterable[tuple[str, str]] = ()) -> Table:
    """What was analysed: model, precision, inputs, roofline device, where it was measured."""
    from .summary import header_facts

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column("fact", style="bold")
    table.add_column("value")
    for label, value in (*header_facts(report), *extra_facts):
        table.add_row(label, Text(value))
    return table


def summary_table(report: dict[str, Any]) -> Table:
    """Every metric in one table: value, how obtained, hardware-dependent?, what it affects."""
    from .summary import build_summary

    name = report.get("model", {}).get("name", "")
    table = Table(title=f"{name} — efficiency summary", header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("how obtained")
    table.add_column("hardware-dependent", justify="center")
    table.add_column("mainly affects")
    for row in build_summary(report):
        # Text(): values such as '[estimate]' or model names are never rich markup.
        table.add_row(Text(row.metric), Text(row.value), Text(row.how),
                      "yes" if row.hardware_dependent else "no", Text(row.affects))
    return table


def report_notes(report: dict[str, Any]) -> list[str]:
    from .summary import summary_notes

    return summary_notes(report)


def breakdown_table(report: dict[str, Any], depth: int) -> Table:
    """Per-module breakdown to `depth`: params, MACs, FLOPs, bytes, activations, predicted time."""
    from .summary import module_bound, module_latency

    totals = report["totals"]
    total_flops = totals.get("flops") or 0
    mods = [m for m in report["modules"] if m["depth"] <= depth]
    has_act = any("peak_share_bytes" in m for m in mods)
    has_saved = any("saved_bytes" in m for m in mods)
    has_time = any("t_compute_s" in m for m in mods)
    gpu = (report.get("roofline") or {}).get("prediction", "").startswith("gpu")
    extra = [(key, head) for key, head in (("predicted_latency_s", "GPU model" if gpu else "calibrated"),
                                           ("measured_latency_s", "measured (hooks)"))
             if any(key in m for m in mods)]
    table = Table(title="per module (inclusive)", header_style="bold")
    cols = ["module", "type", "params", "MACs", "FLOPs", "other FLOPs", "bytes moved", "FLOPs %"]
    if has_act:
        cols.append("live at peak")
    if has_saved:
        cols.append("saved for bwd")
    if has_time:
        cols += ["predicted", "bound"]
    cols += [head for _key, head in extra]
    for col in cols:
        table.add_column(col, justify="left" if col in ("module", "type", "bound") else "right",
                         no_wrap=col == "module")
    for m in mods:
        label = "  " * m["depth"] + (m["path"].rpartition(".")[2] if m["path"] else "(model)")
        cells = [label, m["type"], format_count(m["params"]), format_count(m["macs"]),
                 format_count(m["flops"]), format_count(m["other_flops"]),
                 format_bytes(m["bytes_read"] + m["bytes_written"]),
                 format_percent(m["flops"] / total_flops if total_flops else None)]
        if has_act:
            cells.append(format_bytes(m.get("peak_share_bytes")))
        if has_saved:
            cells.append(format_bytes(m.get("saved_bytes")))
        if has_time:
            cells += [format_seconds(module_latency(m)), module_bound(m)]
        cells += [format_seconds(m.get(key)) for key, _head in extra]
        table.add_row(*(Text(str(c)) for c in cells))
    return table


def module_timing_lines(report: dict[str, Any]) -> list[str]:
    """How the 'measured (hooks)' column was taken, and what the hooks cost."""
    timing = (report.get("measured") or {}).get("module_timing")
    if not timing:
        return []
    hooked, plain = timing.get("hooked_latency_s"), timing.get("unhooked_latency_s")
    cost = (f"; the whole pass took {format_seconds(hooked)} with hooks, {format_seconds(plain)} without"
            if hooked is not None and plain is not None else "")
    return [f"measured (hooks): each module timed between forward pre- and post-hooks in a separate pass "
            f"(median of {timing['repeats']} passes, each after one without hooks); a figure includes the "
            f"hooks of the modules timed inside it, about {format_seconds(timing['hook_overhead_s'])} per "
            f"hooked call{cost}"]


def bound_layers_lines(report: dict[str, Any], top: int = 5) -> list[str]:
    """'top memory-bound layers: …' and 'top compute-bound layers: …' from the roofline."""
    rl = report.get("roofline")
    if not rl or top == 0:
        return []
    lines = []
    for bound in ("memory", "compute"):
        rows = (rl.get(f"top_{bound}_bound") or [])[:top]
        if rows:
            lines.append(f"top {bound}-bound layers (predicted): " + "; ".join(
                f"{r['path'] or '(model)'}{' (own ops)' if r.get('kind') not in (None, 'module') else ''} "
                f"{format_seconds(r['latency_s'])}" for r in rows))
    return lines


def comparison_table(comparison: dict[str, Any]) -> Table:
    """A `Comparison.to_dict()` side by side: each value with its ratio to the first column."""
    from .summary import format_ratio, format_value

    table = Table(title="comparison (ratios to the first column)", header_style="bold")
    table.add_column("metric")
    table.add_column("how")
    for label in comparison["labels"]:
        table.add_column(Text(label), justify="right")
    for row in comparison["rows"]:
        cells = [Text(row["metric"]), Text(row["method"])]
        for j, (value, ratio) in enumerate(zip(row["values"], row["ratios"], strict=True)):
            text = format_value(value, row["unit"])
            if j > 0 and value is not None:
                text += f" ({format_ratio(ratio)})"
            cells.append(Text(text))
        table.add_row(*cells)
    return table
