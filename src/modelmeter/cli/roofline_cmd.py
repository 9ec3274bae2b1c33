"""`modelmeter roofline` (layer 6): predicted latency on a device from the counts.

The pipeline itself is `api.roofline_analysis`.
"""

from __future__ import annotations

from typing import Any

import click

from .options import attention_option, check_outputs, model_options, write_json


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
@attention_option
def roofline(model, inputs, batch, seq, dtype, hardware, weights, depth, efficiency, plot_path, top,
             json_path, activations, attention) -> None:
    """Predicted latency on a device: compute vs memory time per layer (roofline estimate)."""
    from .. import api
    from ..core.errors import UserInputError

    if plot_path is not None:
        from ..report.plots import check_plot_path

        check_plot_path(plot_path)  # before the trace, so a typo costs no waiting
    check_outputs(json=json_path, plot=plot_path)
    eff: float | str | None = efficiency
    if efficiency is not None and efficiency != "mamf":
        try:
            eff = float(efficiency)
        except ValueError:
            raise UserInputError(f"--efficiency takes a number in (0, 1] or 'mamf', got {efficiency!r}") from None
    report, result = api.roofline_analysis(model, hardware=hardware, dtype=dtype, weights=weights,
                                     efficiency=eff, depth=depth, inputs=list(inputs) or None,
                                     batch=batch, seq=seq, activations=activations,
                                     attention=attention)
    data = report.to_dict()
    if plot_path is not None:
        from ..report.plots import plot_roofline

        plot_roofline(result, plot_path, title=f"{data['model']['name']} on {result.hardware.name}")
    if json_path == "-":
        write_json(data, "-")
        return
    _render(data, result, depth, top)
    if plot_path:
        click.echo(f"wrote {plot_path}")
    if json_path:
        write_json(data, json_path)
        click.echo(f"wrote {json_path}")


def _render(data: dict[str, Any], result: Any, depth: int, top: int) -> None:
    from rich.table import Table

    from ..core.units import format_bytes, format_count, format_seconds
    from .options import make_console

    console = make_console()
    rl = data["roofline"]
    hw = result.hardware
    eff = f", derated x{rl['efficiency']:.2f}" if rl["efficiency"] else ""
    console.print(
        f"[bold]{hw.name}[/bold] ({hw.id}, {hw.source}): matrix peak {format_count(rl['hardware_detail']['peak_flops'], 'FLOP/s')} "
        f"at {rl['precision']}{eff}, vector {format_count(rl['hardware_detail']['vector_flops'], 'FLOP/s')}, "
        f"bandwidth {format_bytes(hw.memory_bandwidth_bytes_per_s)}/s, ridge point {rl['ridge_point']:.3g} FLOP/byte; "
        f"weights {rl['weights']}{_layout_note(rl)}, activations {rl['activations']}"
    )
    table = Table(title=f"{data['model']['name']} — roofline per module (estimated, unfused)")
    for col in ("module", "FLOPs", "bytes", "FLOP/B", "t_compute", "t_memory", "bound"):
        table.add_column(col, justify="left" if col in ("module", "bound") else "right")
    for m in rl["modules"]:
        if m["depth"] > depth:
            continue
        name = ("  " * m["depth"]) + (m["path"].rpartition(".")[2] or data["model"]["name"])
        intensity = "—" if m["intensity"] is None else f"{m['intensity']:.3g}"
        table.add_row(name, format_count(m["flops"]), format_bytes(m["bytes"]), intensity,
                      format_seconds(m["t_compute_s"]), format_seconds(m["t_memory_s"]), m["bound"])
    console.print(table)
    console.print(
        f"predicted latency: [bold]{format_seconds(rl['latency_s'])}[/bold] per op, unfused ({rl['bound']}-bound: "
        f"compute {format_seconds(rl['t_compute_s'])}, memory {format_seconds(rl['t_memory_s'])}); "
        f"{format_seconds(rl['latency_module_s'])} module-level (seed); "
        f"{format_seconds(rl['latency_fused_s'])} fully fused (lower bound)"
    )
    for bound in ("memory", "compute"):
        rows = result.top(bound, top)
        label = f"{bound}-bound"
        if not rows:
            continue
        console.print(f"top {label} layers: " + "; ".join(
            f"{r.path or '(model)'}{' (own ops)' if r.kind != 'module' else ''} "
            f"{format_seconds(r.latency_s)}" for r in rows))
    for note in rl["notes"]:
        console.print(f"note: {note}")


def _layout_note(rl: dict[str, Any]) -> str:
    """' (weight-only: embedding, head, norm kept fp16)' for a quantised weights precision."""
    q = rl.get("quantization")
    if not q:
        return ""
    kept = ", ".join(k["kind"] for k in q["kept"]) or "nothing"
    return f" (weight-only: {kept} kept {q['kept_precision']})"
