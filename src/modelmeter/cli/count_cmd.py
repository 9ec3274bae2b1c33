"""`modelmeter count` and `modelmeter models` (layer 7): parse, count, render."""

from __future__ import annotations

import click

from .options import make_console, model_options, write_json


@click.command()
@model_options
@click.option("--depth", type=click.IntRange(min=0), default=2, show_default=True,
              help="Module levels to show.")
@click.option("--group-size", type=int, help="Quantisation group size (int4/nf4 scales).")
@click.option("--device", type=click.Choice(["meta", "cpu"]), default="meta", show_default=True,
              help="meta: no weights allocated; cpu: real tensors.")
@click.option("--json", "json_path", metavar="PATH", help="Write the report as JSON ('-' = stdout).")
def count(model, inputs, batch, seq, dtype, depth, group_size, device, json_path) -> None:
    """Parameters, parameter size, MACs/FLOPs and bytes, per module and in total."""
    from ..pipeline import run
    from ..pipeline.options import ModelOptions

    options = ModelOptions(model, inputs=tuple(inputs) or None, batch=batch, seq=seq, dtype=dtype,
                           device=device, group_size=group_size)
    report = run.count(options).to_report().to_dict()
    if json_path == "-":
        write_json(report, "-")
        return
    from ..report.terminal import count_view

    console = make_console()
    for item in count_view(report, depth):
        console.print(item)
    if json_path:
        write_json(report, json_path)
        console.print(f"wrote {json_path}")


@click.command()
def models() -> None:
    """List the shipped model presets."""
    from ..report.terminal import presets_table
    from ..sources import list_presets

    make_console().print(presets_table(list_presets()))
