"""`modelmeter count` and `modelmeter models` (layer 6)."""

from __future__ import annotations

import click

from .options import attention_option, check_outputs, make_console, model_options, write_json


@click.command()
@model_options
@click.option("--depth", type=click.IntRange(min=0), default=2, show_default=True,
              help="Module levels to show.")
@click.option("--group-size", type=int, help="Quantisation group size (int4/nf4 scales).")
@click.option("--device", type=click.Choice(["meta", "cpu"]), default="meta", show_default=True,
              help="meta: no weights allocated; cpu: real tensors.")
@click.option("--json", "json_path", metavar="PATH", help="Write the report as JSON ('-' = stdout).")
@attention_option
def count(model, inputs, batch, seq, dtype, depth, group_size, device, json_path, attention) -> None:
    """Parameters, parameter size, MACs/FLOPs and bytes, per module and in total."""
    from .. import api

    check_outputs(json=json_path)
    if device == "cpu":
        from .memcheck import check_cpu_fit

        check_cpu_fit(model, inputs=list(inputs) or None, batch=batch, seq=seq,
                      advice="count it on the meta device instead (--device meta, the default: "
                             "nothing is allocated)")
    report = api.count(model, dtype=dtype, group_size=group_size, inputs=list(inputs) or None,
                       batch=batch, seq=seq, device=device, attention=attention).to_dict()
    if json_path == "-":
        write_json(report, "-")
        return
    from ..report.terminal import module_table, totals_table, uncounted_table

    console = make_console()
    console.print(module_table(report, depth, title=f"{report['model']['name']} — per module"))
    console.print(totals_table(report))
    uncounted = uncounted_table(report)
    if uncounted is not None:
        console.print(uncounted)
    if json_path:
        write_json(report, json_path)
        console.print(f"wrote {json_path}")


@click.command()
@click.option("--json", "json_path", metavar="PATH", help="Write the list as JSON ('-' = stdout).")
def models(json_path) -> None:
    """List the shipped model presets: family, total and active parameters."""
    from rich.table import Table

    from ..core.units import format_count
    from ..presets import preset_names, preset_summary

    rows = [preset_summary(name) for name in preset_names()]
    if json_path:
        write_json({"presets": rows}, json_path)
        if json_path == "-":
            return
    table = Table(title="shipped presets (architectures from configs; no download)")
    for column, justify in (("name", "left"), ("family", "left"), ("params", "right"),
                            ("active", "right"), ("description", "left")):
        table.add_column(column, justify=justify, style="bold" if column == "name" else None)
    for r in rows:
        table.add_row(r["name"], r["family"], format_count(r["params"]), format_count(r["active_params"]),
                      r["description"])
    make_console().print(table)
