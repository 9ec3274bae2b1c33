"""`modelmeter count` and `modelmeter models` (layer 7): parse, count, render."""

from __future__ import annotations

import click

from .options import attention_option, check_outputs, make_console, model_options, write_json


@click.command()
@model_options
@click.option("--depth", type=click.IntRange(min=0), default=2, show_default=True,
              help="Module levels to show.")
@click.option("--group-size", type=int, help="Quantisation group size of int8, int4, nf4 and fp8 weight scales.")
@click.option("--device", type=click.Choice(["meta", "cpu"]), default="meta", show_default=True,
              help="meta: no weights allocated; cpu: real tensors.")
@click.option("--by", type=click.Choice(["module", "op"]), default="module", show_default=True,
              help="Break the totals down per module (to --depth) or per aten operator "
                   "(the JSON always carries both: modules, totals.by_operator).")
@click.option("--json", "json_path", metavar="PATH", help="Write the report as JSON ('-' = stdout).")
@attention_option
def count(model, inputs, batch, seq, dtype, depth, group_size, device, by, json_path, attention) -> None:
    """Parameters, parameter size, MACs/FLOPs and bytes, per module and in total."""
    from ..pipeline import run
    from ..pipeline.options import ModelOptions

    check_outputs(json=json_path)
    if device == "cpu":
        from ..pipeline.memcheck import check_cpu_fit

        check_cpu_fit(model, inputs=list(inputs) or None, batch=batch, seq=seq,
                      advice="count it on the meta device instead (--device meta, the default: "
                             "nothing is allocated)")
    options = ModelOptions(model, inputs=tuple(inputs) or None, batch=batch, seq=seq, dtype=dtype,
                           device=device, group_size=group_size, attention=attention)
    report = run.count(options).to_report().to_dict()
    if json_path == "-":
        write_json(report, "-")
        return
    from ..report.terminal import count_view

    console = make_console()
    for item in count_view(report, depth, by, width=console.width):
        console.print(item)
    if json_path:
        write_json(report, json_path)
        console.print(f"wrote {json_path}")


@click.command()
@click.option("--json", "json_path", metavar="PATH", help="Write the list as JSON ('-' = stdout).")
def models(json_path) -> None:
    """List the shipped model presets: family, total and active parameters."""
    from ..presets import preset_names, preset_summary
    from ..report.terminal import presets_table

    rows = [preset_summary(name) for name in preset_names()]
    if json_path:
        write_json({"presets": rows}, json_path)
        if json_path == "-":
            return
    make_console().print(presets_table(rows))
