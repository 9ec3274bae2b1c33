"""`modelmeter validate` (layer 7): the GPU performance model against published measurements.

Parse, `pipeline.validate.validate`, render (`report.terminal_validate`); a progress bar on
stderr while rows are predicted (off when stderr is not a terminal, or with --quiet).
"""

from __future__ import annotations

import sys

import click

from .options import check_outputs, make_console, write_json


@click.command()
@click.option("--table", "table_path", metavar="FILE",
              help="Validate against your own measured rows (CSV or JSON) instead of the shipped ones.")
@click.option("--only", "only", multiple=True, metavar="TABLE",
              help="Shipped rows of this table only (repeatable): megatron-2021, korthikanti-2022, "
                   "korthikanti-2022-memory, megatron-core-h100, tensorrt-llm-h100.")
@click.option("--json", "json_path", metavar="PATH", help="Write the validation as JSON ('-' = stdout).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def validate(table_path, only, json_path, quiet) -> None:
    """Predicted vs published GPU step times, TTFT and inter-token latency, per row and table."""
    from ..core.errors import UserInputError
    from ..pipeline.validate import load_rows, shipped_rows
    from ..pipeline.validate import validate as run_validate

    check_outputs(json=json_path)
    if table_path and only:
        raise UserInputError("--only picks shipped tables; with --table every row of your file is validated")
    rows = load_rows(table_path) if table_path else shipped_rows()
    if only:
        known = sorted({r["table"] for r in rows})
        unknown = [t for t in only if t not in known]
        if unknown:
            raise UserInputError(f"--only {unknown[0]}: no such table; the shipped ones are {', '.join(known)}")
        rows = [r for r in rows if r["table"] in only]
    show = not quiet and sys.stderr.isatty()
    if show:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("validating", total=len(rows))

            def progress(desc: str, done: int, total: int) -> None:
                bar.update(task, description=desc[:60], completed=done, total=total)

            result = run_validate(rows, user=bool(table_path), progress=progress)
    else:
        result = run_validate(rows, user=bool(table_path))
    data = result.to_dict()
    if json_path == "-":
        write_json(data, "-")
        return
    from ..report.terminal_validate import validate_view

    console = make_console()
    for item in validate_view(data):
        console.print(item)
    if json_path:
        write_json(data, json_path)
        console.print(f"wrote {json_path}")
