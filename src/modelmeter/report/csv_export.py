"""CSV export: one row per module, numbers in base units (layer 4).

Columns are the count fields every report has, then whichever optional
per-module fields the report holds (activation memory, predicted times), in
a fixed order so files from different runs line up.

Module names come from the model's code, and a spreadsheet runs a cell that
starts with = + - @ (or a tab or carriage return) as a formula. Such text
cells get a leading apostrophe, as OWASP advises against CSV injection;
numbers are written as they are.

The root module, whose path is '' in the JSON, is the row named `ROOT_PATH`
("(model)", as the other views label it), and list cells are plain text a
spreadsheet reads as it is: a shape as ``2x32``, several values joined with
``; `` (``float32; int64``), never a Python list's repr.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from .summary import as_dict, module_latency

__all__ = ["CSV_COLUMNS", "ROOT_PATH", "csv_cell", "module_rows", "neutralise_cell", "render_csv"]

ROOT_PATH = "(model)"  # no module path can hold it: PyTorch module names are identifiers or digits

# Count fields first (always present), then optional ones in a stable order.
CSV_COLUMNS = (
    "path", "type", "depth", "calls", "params", "own_params", "param_bytes", "macs", "flops",
    "other_flops", "bytes_read", "bytes_written", "input_bytes", "output_bytes", "seed_bytes",
    "peak_share_bytes", "saved_bytes", "t_compute_s", "t_memory_s", "latency_s", "bound",
)


def module_rows(report: Any) -> list[dict[str, Any]]:
    """The module entries, with the predicted `latency_s` when the roofline ran."""
    rows = []
    for m in as_dict(report)["modules"]:
        row = dict(m)
        if module_latency(row) is not None:
            row["latency_s"] = module_latency(row)
        if not row.get("path"):
            row["path"] = ROOT_PATH
        rows.append(row)
    return rows


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula, prefixed with ' ; anything else unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def csv_cell(value: Any) -> Any:
    """A cell a spreadsheet reads: '' for None, lists as text (a shape '2x32', values joined with
    '; '), a formula-like text neutralised; numbers unchanged."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "; ".join(_list_item(item) for item in value)
    return neutralise_cell(value)


def _list_item(item: Any) -> str:
    if isinstance(item, (list, tuple)):  # a shape; a 0-d tensor's is empty
        return "x".join(str(d) for d in item) if item else "scalar"
    return "" if item is None else str(neutralise_cell(item))


def render_csv(report: Any) -> str:
    """CSV text: a header, then one row per module (the root module first, as `ROOT_PATH`)."""
    rows = module_rows(report)
    present = {k for row in rows for k in row}
    columns = [c for c in CSV_COLUMNS if c in present]
    columns += sorted(present - set(CSV_COLUMNS))  # fields added later by other analyses
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: csv_cell(row.get(k)) for k in columns})
    return out.getvalue()
