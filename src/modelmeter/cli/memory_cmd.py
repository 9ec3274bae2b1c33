"""`modelmeter memory` (layer 6): peak activations and the training-memory budget."""

from __future__ import annotations

from typing import Any

import click

from ..core.units import format_bytes, format_count
from .options import attention_option, check_outputs, make_console, model_options, write_json


@click.command()
@model_options
@click.option("--train", is_flag=True, help="Also trace the training step (autograd + backward).")
@click.option("--optimizer", default="adamw", show_default=True,
              help="sgd, sgd-momentum, adam or adamw (states kept in fp32).")
@click.option("--master-fp32", is_flag=True, help="Add fp32 master weights (mixed precision).")
@click.option("--checkpoint", is_flag=True, help="What-if: recompute each top-level block.")
@click.option("--device", type=click.Choice(["meta", "cpu"]), default="meta", show_default=True)
@click.option("--depth", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--json", "json_path", metavar="PATH", help="Write the report as JSON ('-' = stdout).")
@attention_option
def memory(model, inputs, batch, seq, dtype, train, optimizer, master_fp32, checkpoint, device,
           depth, json_path, attention) -> None:
    """Peak activation memory for inference and training, and the training budget."""
    from .. import api

    check_outputs(json=json_path)
    if device == "cpu":
        from .memcheck import check_cpu_fit

        check_cpu_fit(model, inputs=list(inputs) or None, batch=batch, seq=seq,
                      advice="trace it on the meta device instead (--device meta, the default: "
                             "nothing is allocated)")
    report = api.memory(model, dtype=dtype, train=train, optimizer=optimizer,
                        master_fp32=master_fp32, checkpoint=checkpoint,
                        inputs=list(inputs) or None, batch=batch, seq=seq, device=device,
                        attention=attention).to_dict()
    if json_path == "-":
        write_json(report, "-")
        return
    _render(report, depth)
    if json_path:
        write_json(report, json_path)
        make_console().print(f"wrote {json_path}")


def _render(report: dict[str, Any], depth: int) -> None:
    from rich.table import Table

    console = make_console()
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
            ("saved for backward", format_bytes(act["saved_for_backward_bytes"])),
            ("peak activations, training forward", format_bytes(act["peak_train_forward_bytes"])),
            ("peak during backward (incl. gradients)", format_bytes(act["peak_backward_bytes"])),
            ("backward FLOPs (2×MACs + other)", format_count(report["totals"]["backward_flops"])),
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
    console.print(table)
    modules = Table(title="per module (inclusive)")
    for name in ("module", "type", "live at inference peak", "saved for backward"):
        modules.add_column(name, justify="left" if name in ("module", "type") else "right")
    for m in report["modules"]:
        if m["depth"] > depth:
            continue
        label = "  " * m["depth"] + (m["path"].rpartition(".")[2] if m["path"] else "(model)")
        modules.add_row(label, m["type"], format_bytes(m.get("peak_share_bytes", 0)),
                        format_bytes(m["saved_bytes"]) if "saved_bytes" in m else "—")
    console.print(modules)


def _attention_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """Which attention kernel was assumed, and the other kernel's activation figures."""
    by = report["totals"]["activations"].get("activations_by_attention")
    assumed = report["settings"].get("attention", {}).get("implementation", "")
    if not by:
        return [("attention", assumed)] if assumed else []
    rows = [("attention assumed", f"{assumed} (--attention {'math' if assumed == 'flash' else 'flash'} "
                                  "for the other)")]
    for impl, figures in by.items():
        text = f"inference peak {format_bytes(figures['peak_inference_bytes'])}"
        if "peak_train_forward_bytes" in figures:
            text += f", training activations {format_bytes(figures['peak_train_forward_bytes'])}"
        rows.append((f"  with {impl} attention", text))
    return rows
