"""`modelmeter report` and `modelmeter compare` (layer 7): every metric in one view.

Parse, `pipeline.run.report` / `pipeline.run.compare` (one meta trace counted
once, then activation memory, the roofline when a device profile is known
and, when asked or when the model is small enough, a measurement on this
machine), render with `report/` (terminal, JSON, CSV, Markdown, HTML), write.

Measurement default (`--measure` not given): ON when the device is the CPU,
one forward pass is under 50 GFLOPs and the model has under 1e9 parameters
(`pipeline.run.should_measure`) — a few seconds on a laptop CPU; OFF otherwise
(one call alone could take seconds and the weights gigabytes; on an
accelerator, timing is `--measure` or `modelmeter bench`).
"""

from __future__ import annotations

import click

from ..core.errors import UserInputError
from ..core.files import atomic_write
from .mlflow_option import mlflow_option
from .options import (
    attention_option,
    batch_list,
    check_outputs,
    make_console,
    model_spec,
    precision_list,
    threads_option,
    write_json,
)
from .progress import quiet_option, step_progress


def _write_text(target: str, text: str) -> None:
    """Whole or not at all (core.files.atomic_write); '-' is stdout."""
    if target == "-":
        click.echo(text, nl=not text.endswith("\n"))
        return
    atomic_write(target, text)


# ------------------------------------------------------------------ commands


@click.command()
@click.argument("model", required=False, callback=model_spec)
@click.option("--input", "inputs", multiple=True, metavar="SHAPE[:DTYPE]",
              help="Input shape such as 1x3x224x224 (repeat for several inputs).")
@click.option("--batch", type=int, help="Batch size (text and vision presets).")
@click.option("--seq", type=int, help="Sequence length in tokens (text models).")
@click.option("--dtype", help="Precision: fp64 fp32 tf32 fp16 bf16 fp8 int8 int4 nf4.")
@click.option("--hardware", metavar="ID",
              help="Device for the roofline (`modelmeter hardware list`); default: the calibrated "
                   "'local' profile, else no roofline.")
@click.option("--measure/--no-measure", default=None,
              help="Time the model here (default: on for --device cpu when under 50 GFLOPs and 1e9 parameters).")
@click.option("--device", default="cpu", show_default=True, help="Where to measure: cpu, cuda, cuda:N.")
@click.option("--train", is_flag=True, help="Also the training step: saved activations, backward, budget.")
@click.option("--depth", type=click.IntRange(min=0), default=2, show_default=True,
              help="Module levels in the breakdown.")
@click.option("--top", type=click.IntRange(min=0), default=5, show_default=True,
              help="How many memory- and compute-bound layers to list.")
@click.option("--json", "json_path", metavar="PATH", help="Write the full report as JSON ('-' = stdout).")
@click.option("--csv", "csv_path", metavar="PATH", help="Write one CSV row per module.")
@click.option("--md", "md_path", metavar="PATH", help="Write the summary as Markdown.")
@click.option("--html", "html_path", metavar="PATH", help="Write one self-contained HTML page.")
@click.option("--save", is_flag=True, help="Save the run in the history store (`modelmeter history`).")
@click.option("--db", metavar="PATH|URL", default=None,
              help="Run store for --save: an SQLite file or a postgresql:// URL "
              "(default: $MODELMETER_DB, else the user data dir).")
@click.option("--absolute-paths", is_flag=True,
              help="Keep absolute file paths in Markdown/HTML (default: shown as their last part).")
@attention_option
@threads_option
@mlflow_option
@quiet_option
def report(model, inputs, batch, seq, dtype, hardware, measure, device, train, depth, top, json_path,
           csv_path, md_path, html_path, save, db, absolute_paths, attention, threads, mlflow_flag, no_progress) -> None:
    """Every efficiency metric of a model in one view: counts, memory, roofline, measurement."""
    from ..pipeline import run
    from ..pipeline.options import ModelOptions, ReportOptions, report_timing
    from ..report.json_export import export_json

    check_outputs(json=json_path, csv=csv_path, md=md_path, html=html_path)
    if db and not save:
        raise UserInputError("--db names the run store --save writes to; add --save")
    if save:
        from ..stores import open_store

        with open_store(db) as store:
            store.check_writable()  # not after minutes of work
    tracking = None
    if mlflow_flag:
        from .mlflow_option import connect_tracking

        tracking = connect_tracking()  # a missing extra or a dead server: before the work
    if measure and device == "cpu":
        from ..pipeline.memcheck import check_cpu_fit

        check_cpu_fit(model, inputs=list(inputs) or None, batch=batch, seq=seq,
                      advice="leave out --measure: the report counts it on the meta device")
    # The measurement retains freed memory: this process ends with the command.
    options = ReportOptions(hardware, measure, device, train, timing=report_timing({"malloc": "retain"}),
                            module_depth=depth)
    model_options = ModelOptions(model, inputs=tuple(inputs) or None, batch=batch, seq=seq, dtype=dtype,
                                 attention=attention)
    quiet = "-" in (json_path, csv_path, md_path, html_path)  # stdout holds that output alone
    console = make_console(json_to_stdout=quiet)
    from ..pipeline.calibrated import apply_threads

    used = apply_threads(threads, options.device)  # the cpu default: the physical cores
    with step_progress(no_progress) as on_status:
        rep = run.report(model_options, options, run.Hooks(on_status=on_status)).to_report()
    data = rep.to_dict()
    if not quiet:  # shown first: should a write still fail (disk full), the numbers were seen
        from ..report.terminal import report_view
        from ..report.threads_text import threads_text

        extra = (("threads", threads_text(used, threads is not None)),) if used is not None else ()
        for item in report_view(data, depth, top, extra_facts=extra):
            console.print(item)
    doc = export_json(rep)
    if json_path is not None:
        write_json(doc, json_path)
    if csv_path:
        from ..report.csv_export import render_csv

        _write_text(csv_path, render_csv(data))
    if md_path:
        from ..report.markdown import render_markdown

        _write_text(md_path, render_markdown(data, depth=min(depth, 1), absolute_paths=absolute_paths))
    if html_path:
        from ..report.html import render_html

        _write_text(html_path, render_html(data, depth=depth, absolute_paths=absolute_paths))
    for path in (json_path, csv_path, md_path, html_path):
        if path not in (None, "-"):
            console.print(f"wrote {path}", markup=False, highlight=False)
    if save:
        from ..stores import open_store, store_location

        with open_store(db) as store:
            run_id = store.save(data, data.get("environment"))
        console.print(f"saved run {run_id} ({store_location(store)})", markup=False, highlight=False)
    if tracking is not None:
        from .mlflow_option import log_and_say

        log_and_say(tracking, console, doc, "report", (html_path,))


@click.command()
@click.argument("models", nargs=-1, callback=model_spec)
@click.option("--hardware", metavar="ID", help="Device for the predicted latency (default: 'local' profile).")
@click.option("--dtype", "dtypes", type=precision_list(), metavar="LIST",
              help="Precisions to compare, e.g. fp32,bf16.")
@click.option("--batch", "batches", type=batch_list("1,8", unique=False), metavar="LIST",
              help="Batch sizes to compare, e.g. 1,8.")
@click.option("--seq", type=int, help="Sequence length in tokens (text models).")
@click.option("--input", "inputs", multiple=True, metavar="SHAPE[:DTYPE]", help="Input shape (repeatable).")
@click.option("--measure/--no-measure", default=False, show_default=True,
              help="Also time each variant here (slow for big models).")
@click.option("--device", default="cpu", show_default=True, help="Where to measure.")
@click.option("--json", "json_path", metavar="PATH", help="Write the comparison and every report as JSON.")
@click.option("--md", "md_path", metavar="PATH", help="Write the comparison table as Markdown.")
@click.option("--absolute-paths", is_flag=True, help="Keep absolute file paths in Markdown.")
def compare(models, hardware, dtypes, batches, seq, inputs, measure, device, json_path, md_path,
            absolute_paths) -> None:
    """Several models (or one model at several --dtype/--batch) side by side, ratios to the first."""
    # One variant (None: the default) when the option is not given; repeats kept (a column each).
    dtype_list = list(dtypes) if dtypes is not None else [None]
    batch_list = list(batches) if batches is not None else [None]
    from ..pipeline import run
    from ..pipeline.options import ReportOptions

    check_outputs(json=json_path, md=md_path)
    if measure and device == "cpu":
        from ..pipeline.memcheck import check_cpu_fit

        largest = max((b for b in batch_list if b), default=None)
        for spec in models or [None]:
            check_cpu_fit(spec, inputs=list(inputs) or None, batch=largest, seq=seq,
                          advice="leave out --measure: the comparison counts on the meta device")
    options = ReportOptions(hardware, measure, device, energy=measure, environment=False)
    quiet = "-" in (json_path, md_path)  # stdout holds that output alone
    console = make_console(json_to_stdout=quiet)
    with console.status("starting") as spinner:
        reports, comparison = run.compare(list(models), dtypes=dtype_list, batches=batch_list, seq=seq,
                                          inputs=list(inputs) or None, options=options,
                                          hooks=run.Hooks(on_status=spinner.update))
    comp = comparison.to_dict()
    if json_path is not None:
        write_json({**comp, "reports": [r.to_dict() for r in reports]}, json_path)
    if not quiet:
        from ..report.terminal import comparison_view

        for item in comparison_view(comp, (n for r in reports for n in (r.settings.get("notes") or []))):
            console.print(item)
    if md_path:
        from ..report.markdown import comparison_markdown

        _write_text(md_path, comparison_markdown(comp, absolute_paths=absolute_paths))
    for path in (json_path, md_path):
        if path not in (None, "-"):
            console.print(f"wrote {path}", markup=False, highlight=False)

