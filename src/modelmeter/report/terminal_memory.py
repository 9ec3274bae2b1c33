"""`modelmeter memory` in the terminal (layer 4): peaks, the training budget, per-module bytes."""

from __future__ import annotations

from typing import Any

from rich.console import RenderableType
from rich.table import Table

from ..core.units import format_bytes, format_count


def memory_view(report: dict[str, Any], depth: int) -> list[RenderableType]:
    """The memory figures of a report (with `totals.activations`) and its modules to `depth`."""
    from .terminal import inputs_line

    return [inputs_line(report), _figures(report), _modules(report, depth)]


def _figures(report: dict[str, Any]) -> Table:
    act = report["totals"]["activations"]
    training = report.get("training")
    table = Table(title=f"{report['model']['name']} — memory ({report['settings']['dtype']})",
                  show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    at = act["peak_inference_at"]
    rows = [
        ("peak activations, inference", format_bytes(act["peak_inference_bytes"])),
        ("  + parameters, buffers, inputs", format_bytes(act["peak_inference_total_bytes"])),
        ("  peak at", f"op {at['index']} {at['op']} in '{at['module']}'"),
    ]
    if training:
        rows += [
            ("dropout in the training trace", _dropout(training.get("dropout"))),
            # The peak first, then the part of it the backward pass needs (kept to the forward's end):
            # printed the other way round, the smaller figure read as a second, separate cost.
            ("peak activations, training forward", format_bytes(act["peak_train_forward_bytes"])),
            (("  of which kept for the backward pass" if act["saved_for_backward_bytes"]
              <= act["peak_train_forward_bytes"] else "  kept for the backward pass (at the forward's end)"),
             format_bytes(act["saved_for_backward_bytes"])),
            ("peak during backward (incl. gradients)", format_bytes(act["peak_backward_bytes"])),
            ("backward FLOPs (2×MACs + other)", format_count(report["totals"]["backward_flops"])
             + _left_out(report["totals"].get("backward_uncounted_ops"))),
            ("forward FLOPs (2×MACs + other)", format_count(report["totals"]["total_flops"])),
            (f"parameters ({training['precision']})", format_bytes(training["param_bytes"])),
            ("gradients", format_bytes(training["grad_bytes"])),
            (f"optimizer state ({training['optimizer']}, fp32)", format_bytes(training["optimizer_bytes"])),
            ("fp32 master weights", format_bytes(training["master_weight_bytes"])),
            ("activations", format_bytes(training["activation_bytes"])),
            ("training total", f"{format_bytes(training['total_bytes'])} "
                               f"({format_bytes(training['total_bytes'], binary=True)})"),
        ]
        ck = training.get("checkpoint")
        if ck:
            rows += [
                (f"checkpointing {ck['blocks']} blocks ({ck['block_prefix']}.*): saved",
                 f"{format_bytes(ck['saved_bytes_without'])} → {format_bytes(ck['saved_bytes_with'])}"),
                ("  extra forward FLOPs", format_count(ck["extra_forward_flops"])),
                ("  training total with checkpointing", format_bytes(ck["total_bytes_with"])),
            ]
    rows += _attention_rows(report)
    for row in rows:
        table.add_row(*row)
    return table


def _dropout(dropout: dict[str, Any] | None) -> str:
    if dropout is None:
        return "?"
    if dropout["active"]:
        return f"active: {dropout['mask_ops']} masks saved (--no-dropout to trace without)"
    return "none drawn" if dropout["mask_ops"] == 0 and "off" not in dropout["why"] else "off (--no-dropout)"


def _attention_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """Which attention kernel was assumed, and each kernel's activation figures."""
    by = report["totals"]["activations"].get("activations_by_attention")
    assumed = (report["settings"].get("attention") or {}).get("implementation", "")
    if not by:
        return [("attention", assumed)] if assumed else []
    kernels = (report["settings"].get("attention") or {}).get("kernels")
    calls = f"; calls: {', '.join(f'{k} {n}' for k, n in kernels.items())}" if kernels else ""
    rows = [("attention assumed", f"{assumed} (--attention {'math' if assumed == 'flash' else 'flash'} "
                                  f"for the other{calls})")]
    for impl, figures in by.items():
        text = f"inference peak {format_bytes(figures['peak_inference_bytes'])}"
        if "peak_train_forward_bytes" in figures:
            text += f", training activations {format_bytes(figures['peak_train_forward_bytes'])}"
        rows.append((f"  with {impl} attention", text))
    return rows


def _modules(report: dict[str, Any], depth: int) -> Table:
    modules = Table(title="per module (inclusive)")
    for name in ("module", "type", "live at inference peak", "saved for backward"):
        modules.add_column(name, justify="left" if name in ("module", "type") else "right")
    for m in report["modules"]:
        if m["depth"] > depth:
            continue
        label = "  " * m["depth"] + (m["path"].rpartition(".")[2] if m["path"] else "(model)")
        modules.add_row(label, m["type"], format_bytes(m.get("peak_share_bytes", 0)),
                        format_bytes(m["saved_bytes"]) if "saved_bytes" in m else "—")
    return modules


def _left_out(rows: list[dict[str, Any]] | None) -> str:
    """What backward FLOPs leave out: the backward ops without a formula."""
    if not rows:
        return ""
    return f" (without {', '.join(r['op'].removeprefix('aten.') for r in rows)}: no formula)"
