"""`modelmeter hardware list | show | calibrate` (layer 6): parse, call, render."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..core.files import atomic_write
from ..core.units import format_bytes, format_count, format_percent
from .options import check_outputs, make_console

LIST_PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "fp8", "int8")


def _flops(value: float | None) -> str:
    return format_count(value, "FLOP/s")


def _bandwidth(value: float | None) -> str:
    return "—" if value is None else f"{format_bytes(value)}/s"


@click.group()
def hardware() -> None:
    """Device database, lookups and calibration of this machine."""


@hardware.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the devices as JSON.")
def list_cmd(as_json: bool) -> None:
    """Every device in the database (dense peaks), plus 'local' once calibrated."""
    from ..core.errors import UserInputError
    from ..hardware import list_hardware, load_local_profile

    devices = list_hardware()
    try:
        local = load_local_profile()
    except UserInputError as exc:
        # A broken profile must not hide the database; say so and go on.
        click.echo(f"modelmeter: warning: {exc}", err=True)
        local = None
    if local is not None:
        devices.append(local)
    if as_json:
        click.echo(json.dumps([hw.to_dict() for hw in devices], indent=1))
        return
    table = Table(title="hardware database — dense peak FLOP/s on matrix units (ops/s for int8)")
    table.add_column("id", style="bold", no_wrap=True)
    table.add_column("name")
    table.add_column("memory", justify="right")
    table.add_column("bandwidth", justify="right")
    for p in LIST_PRECISIONS:
        table.add_column(p, justify="right")
    table.add_column("TDP", justify="right")
    table.add_column("year", justify="right")
    for hw in devices:
        table.add_row(
            Text(hw.id),
            Text(hw.name),
            format_bytes(hw.memory_bytes, binary=True),  # device memory comes in GiB
            _bandwidth(hw.memory_bandwidth_bytes_per_s),
            *(_flops(hw.peak_flops.get(p)) for p in LIST_PRECISIONS),
            "—" if hw.tdp_w is None else f"{hw.tdp_w:g} W",
            "—" if hw.year is None else str(hw.year),
        )
    make_console().print(table)
    click.echo("`modelmeter hardware show ID` gives every figure with its source.")


@hardware.command("show")
@click.argument("hw_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON (base units).")
def show(hw_id: str, as_json: bool) -> None:
    """All figures of one device, with their sources and notes ('local' = calibrated)."""
    from ..hardware import get_hardware

    hw = get_hardware(hw_id)
    if as_json:
        click.echo(json.dumps(hw.to_dict(), indent=1))
        return
    console = make_console()
    # Data strings go in as Text: source keys like "[nv_h100_ds]" are not rich markup.
    head = Table(title=Text(f"{hw.id} — {hw.name}"), show_header=False)
    head.add_column("field", style="bold")
    head.add_column("value")
    head.add_row("vendor / kind", f"{hw.vendor} / {hw.kind}")
    head.add_row("memory", format_bytes(hw.memory_bytes, binary=True))
    head.add_row("bandwidth", _bandwidth(hw.memory_bandwidth_bytes_per_s))
    head.add_row("TDP", "—" if hw.tdp_w is None else f"{hw.tdp_w:g} W")
    head.add_row("year", "—" if hw.year is None else str(hw.year))
    head.add_row("figures", hw.source)
    if hw.aliases:
        head.add_row("aliases", ", ".join(hw.aliases))
    console.print(head)

    from ..hardware.specs import PRECISION_KEYS

    rates = Table(title="peak rates (dense)")
    rates.add_column("precision", style="bold")
    rates.add_column("matmul (matrix units)", justify="right")
    rates.add_column("vector (elementwise)", justify="right")
    rates.add_column("ridge point", justify="right")
    for p in PRECISION_KEYS:
        if p in hw.peak_flops or p in hw.vector_flops:
            ridge = hw.ridge_point(p) if p in hw.peak_flops else None
            rates.add_row(
                p,
                _flops(hw.peak_flops.get(p)),
                _flops(hw.vector_flops.get(p)),
                "—" if ridge is None else f"{ridge:.3g} FLOP/B",
            )
    console.print(rates)

    srcs = Table(title="sources")
    srcs.add_column("field", style="bold", no_wrap=True)
    srcs.add_column("source")
    for field, text in hw.sources.items():
        srcs.add_row(Text(field), Text(text))
    console.print(srcs)
    if hw.notes:
        console.print("[bold]notes[/bold]")
        for note in hw.notes:
            console.print(Text(f"  • {note}"))


@hardware.command("calibrate")
@click.option("--quick", is_flag=True, help="Small sizes and few repeats (seconds, rougher).")
@click.option("--no-save", is_flag=True, help="Measure and print, but keep the saved profile as it is.")
@click.option("--device", default=None, metavar="DEV", help="cpu or cuda[:N] (default: cuda if available, else cpu).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Worker threads (default: torch.get_num_threads()).")
@click.option("--json", "json_path", metavar="PATH", help="Also write the detailed result as JSON ('-' = stdout).")
def calibrate_cmd(quick: bool, no_save: bool, device: str | None, threads: int | None, json_path: str | None) -> None:
    """Measure this machine's matmul and elementwise FLOP/s and memory bandwidth; save as 'local'."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..hardware import calibrate, save_local_profile

    check_outputs(json=json_path)  # before minutes of measuring
    if not no_save:
        from ..core.files import check_writable
        from ..hardware.profile import local_profile_path

        check_writable(local_profile_path(), "hardware profile", make_folders=True)
    console = Console(stderr=json_path == "-")
    # Redraw only between measurements: an auto-refresh thread would compete for the cores
    # being calibrated.
    with Progress(
        TextColumn("{task.description:<14}"), BarColumn(), TimeElapsedColumn(), console=console,
        transient=True, auto_refresh=False,
    ) as bar:
        task = bar.add_task("starting", total=None)

        def progress(desc: str, done: int, total: int) -> None:
            bar.update(task, description=desc, completed=done, total=total, refresh=True)

        hw, result = calibrate(device, quick=quick, threads=threads, progress=progress)

    if json_path == "-":
        click.echo(json.dumps(result.to_dict(), indent=1))
    else:
        _print_calibration(console, hw, result)
        if json_path:
            atomic_write(json_path, json.dumps(result.to_dict(), indent=1) + "\n")
            console.print(f"wrote {json_path}")
    if no_save:
        console.print("not saved (--no-save)")
    else:
        from ..hardware.local import CalibrationRefused, calibration_refusal

        reason = calibration_refusal(result)  # measured under load or starved: never saved
        if reason is not None:
            raise CalibrationRefused(reason)
        path = save_local_profile(hw, result.to_dict())
        console.print(Text(f"saved as hardware id 'local': {path}"))


def _print_calibration(console: Console, hw: Any, result: Any) -> None:
    isa = result.isa_peak
    table = Table(
        title=Text(f"{result.device_name} — {result.threads} threads, torch {result.torch_version}"
        f"{' (quick)' if result.quick else ''}, {result.duration_s:.1f} s")
    )
    table.add_column("measurement", style="bold")
    table.add_column("measured", justify="right")
    table.add_column("size", justify="right")
    table.add_column("spread", justify="right")
    table.add_column("ISA peak", justify="right")
    table.add_column("measured / ISA", justify="right")
    for key, m in result.best.items():
        prec = key.split(".", 1)[1] if "." in key else None
        is_bw = m.spec.unit == "byte"
        peak = isa.peak_flops.get(prec) if (isa is not None and prec and key.startswith("matmul.")) else None
        table.add_row(
            key,
            _bandwidth(m.rate) if is_bw else _flops(m.rate),
            f"{m.spec.size}" + (" (n)" if m.spec.kind == "matmul" else " elem"),
            format_percent(m.spread, 0),
            _flops(peak) if peak else "",
            format_percent(m.rate / peak, 0) if peak else "",
        )
    console.print(table)
    if isa is not None:
        console.print(Text(
            f"ISA peak: {isa.cores} cores × {isa.clock_hz / 1e9:.3g} GHz × FLOPs/cycle {isa.flops_per_cycle} "
            f"({isa.isa_class}; clock from {isa.clock_source})"
        ))
    for what, why in result.skipped:
        console.print(Text(f"not measured: {what} — {why}"))
    for note in result.notes:
        console.print(Text(f"note: {note}"))
