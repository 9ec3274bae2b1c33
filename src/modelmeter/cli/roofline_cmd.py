"""`modelmeter roofline` (layer 7): predicted latency on a device from the counts.

Parse, `pipeline.run.roofline`, render (`report.terminal_roofline`, `report.plots`).
"""

from __future__ import annotations

import click

from .options import (
    attention_option,
    check_outputs,
    make_console,
    model_options,
    threads_option,
    write_json,
)
from .progress import quiet_option, step_progress


@click.command()
@model_options
@click.option("--hardware", "hardware", metavar="ID",
              help="Device id (`modelmeter hardware list`); default: the calibrated 'local' profile.")
@click.option("--weights", metavar="PRECISION",
              help="Precision of the stored weights (int8, int4, nf4, fp8, ...); default: --dtype.")
@click.option("--depth", type=click.IntRange(min=0), default=2, show_default=True,
              help="Module levels to show.")
@click.option("--efficiency", metavar="FRACTION|mamf",
              help="Derate the matrix peak (e.g. 0.7, or 'mamf' for the measured fraction).")
@click.option("--plot", "plot_path", metavar="FILE", help="Write the roofline plot (.png or .svg).")
@click.option("--top", type=click.IntRange(min=0), default=5, show_default=True,
              help="How many memory- and compute-bound layers to list.")
@click.option("--json", "json_path", metavar="PATH", help="Write the report as JSON ('-' = stdout).")
@click.option("--activations", metavar="int8|fp8",
              help="What-if: quantised activations (W8A8, W4A8 with --weights int4, fp8): matrix "
                   "products at the device's int8/fp8 peak, activation bytes at that width.")
@click.option("--runtime", type=click.Choice(["eager", "graphs"]), default="eager", show_default=True,
              help="GPU devices: how the GPU model launches kernels (one host launch per op, or a CUDA "
                   "graph replay).")
@attention_option
@threads_option
@quiet_option
def roofline(model, inputs, batch, seq, dtype, hardware, weights, depth, efficiency, plot_path, top,
             json_path, activations, runtime, attention, threads, no_progress) -> None:
    """Predicted latency on a device: compute vs memory time per layer (roofline estimate)."""
    from ..pipeline import run
    from ..pipeline.options import ModelOptions, RooflineOptions

    if plot_path is not None:
        from ..report.plots import check_plot_path

        check_plot_path(plot_path)  # before the trace, so a typo costs no waiting
    check_outputs(json=json_path, plot=plot_path)
    options = RooflineOptions(hardware, weights, efficiency, depth, activations, runtime=runtime)
    from ..pipeline.calibrated import apply_threads

    # The thread count report and bench default to: the calibrated profile is keyed by it.
    used = apply_threads(threads, "cpu")
    with step_progress(no_progress) as on_status:
        sections = run.roofline(ModelOptions(model, inputs=tuple(inputs) or None, batch=batch, seq=seq,
                                             dtype=dtype, attention=attention), options,
                                run.Hooks(on_status=on_status))
    data = sections.to_report().to_dict()
    result = sections.roofline.result
    if plot_path is not None:
        from ..report.plots import plot_roofline

        plot_roofline(result, plot_path, title=f"{data['model']['name']} on {result.hardware.name}")
    if json_path == "-":
        write_json(data, "-")
        return
    from ..report.terminal_roofline import roofline_view

    console = make_console()
    if data["roofline"].get("hardware") == "local":  # this machine's rates depend on the count
        from ..report.threads_text import threads_text

        console.print(f"threads {threads_text(used, threads is not None)}", markup=False, highlight=False)
    for item in roofline_view(data, result, depth, top):
        console.print(item)
    if plot_path:
        click.echo(f"wrote {plot_path}")
    if json_path:
        write_json(data, json_path)
        click.echo(f"wrote {json_path}")
