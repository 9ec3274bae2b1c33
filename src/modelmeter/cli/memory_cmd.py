"""`modelmeter memory` (layer 7): peak activations and the training-memory budget."""

from __future__ import annotations

import click

from .options import attention_option, check_outputs, make_console, model_options, write_json


@click.command()
@model_options
@click.option("--train", is_flag=True, help="Also trace the training step (autograd + backward).")
@click.option("--optimizer", help="With --train: sgd, sgd-momentum, adam or adamw (the default; states "
              "kept in fp32).")
@click.option("--master-fp32/--no-master-fp32", default=None,
              help="With --train at fp16/bf16: keep fp32 master weights (the default, as mixed-precision "
                   "frameworks do: 16 B/param with Adam) or not (pure 16-bit training, 12 B/param).")
@click.option("--checkpoint", is_flag=True, help="What-if: recompute each top-level block.")
@click.option("--no-dropout", "no_dropout", is_flag=True,
              help="With --train: trace the training step with dropout off (no masks saved).")
@click.option("--device", type=click.Choice(["meta", "cpu"]), default="meta", show_default=True)
@click.option("--depth", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--json", "json_path", metavar="PATH", help="Write the report as JSON ('-' = stdout).")
@attention_option
def memory(model, inputs, batch, seq, dtype, train, optimizer, master_fp32, checkpoint, no_dropout,
           device, depth, json_path, attention) -> None:
    """Peak activation memory for inference and training, and the training budget."""
    from ..pipeline import run
    from ..pipeline.options import MemoryOptions, ModelOptions

    check_outputs(json=json_path)
    if device == "cpu":
        from ..pipeline.memcheck import check_cpu_fit

        check_cpu_fit(model, inputs=list(inputs) or None, batch=batch, seq=seq,
                      advice="trace it on the meta device instead (--device meta, the default: "
                             "nothing is allocated)")
    options = MemoryOptions(train, optimizer, master_fp32, checkpoint, dropout=not no_dropout)
    model_options = ModelOptions(model, inputs=tuple(inputs) or None, batch=batch, seq=seq, dtype=dtype,
                                 device=device, attention=attention)
    report = run.memory(model_options, options).to_report().to_dict()
    if json_path == "-":
        write_json(report, "-")
        return
    from ..report.terminal_memory import memory_view

    console = make_console()
    for item in memory_view(report, depth):
        console.print(item)
    if json_path:
        write_json(report, json_path)
        console.print(f"wrote {json_path}")
