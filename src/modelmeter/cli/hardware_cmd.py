"""`modelmeter hardware list | show | calibrate` (layer 7): parse, call, render (`report.terminal_hardware`)."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.text import Text

from ..core.files import atomic_write
from .options import check_outputs, make_console


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
    from ..report.terminal_hardware import hardware_table

    console = make_console()
    console.print(hardware_table(devices, width=console.width))
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
    from ..report.terminal_hardware import hardware_view

    console = make_console()
    for item in hardware_view(hw):
        console.print(item)


@hardware.command("calibrate")
@click.option("--quick", is_flag=True, help="Small sizes and few repeats (seconds, rougher).")
@click.option("--no-save", is_flag=True, help="Measure and print, but keep the saved profile as it is.")
@click.option("--device", default=None, metavar="DEV", help="cpu or cuda[:N] (default: cuda if available, else cpu).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Worker threads (default: torch.get_num_threads()).")
@click.option("--json", "json_path", metavar="PATH", help="Also write the detailed result as JSON ('-' = stdout).")
def calibrate_cmd(quick: bool, no_save: bool, device: str | None, threads: int | None, json_path: str | None) -> None:
    """Measure this machine's matmul and elementwise FLOP/s and memory bandwidth; save as 'local'.

    Then rerun the per-op-class microbenchmarks and refit the calibrated prediction model
    cached for this device, thread count and torch version."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..hardware import calibrate, save_local_profile
    from ..hardware.local import CalibrationRefused, calibration_refusal, refine_profile

    check_outputs(json=json_path)  # before minutes of measuring
    from ..hardware.calibration import calibration_device

    calibration_device(device)  # a bad device is one line, before the progress bar draws anything
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
        if not no_save:
            reason = calibration_refusal(result)  # measured under load or starved: never saved
            if reason is not None:  # said now, before the microbenchmarks' half minute
                raise CalibrationRefused(reason)
        # Then the per-op-class microbenchmarks again, fitted against these peaks: the
        # calibrated prediction every later command makes (refused under load, as above).
        prof = refine_profile(hw, result, progress=progress, save=not no_save, refuse=not no_save,
                              microbench_budget_s=10.0 if quick else 30.0)

    document = {**result.to_dict(), "perf_model": prof.model.to_dict()}
    if json_path == "-":
        click.echo(json.dumps(document, indent=1))
    else:
        from ..report.terminal_hardware import calibration_view

        for item in calibration_view(result):
            console.print(item)
        model = prof.model
        console.print(Text(
            f"microbenchmarks: {len(model.points)} op shapes in {len(model.classes)} classes; "
            f"dispatch {model.view_s * 1e6:.3g} µs per view, nn.Module call {model.module_call_s * 1e6:.3g} µs"))
        if json_path:
            atomic_write(json_path, json.dumps(document, indent=1) + "\n")
            console.print(f"wrote {json_path}")
    if no_save:
        console.print("not saved (--no-save)")
    else:
        path = save_local_profile(hw, result.to_dict())
        console.print(Text(f"saved as hardware id 'local': {path}"))
        console.print(Text(f"calibrated prediction model for {prof.key}: {prof.path}"))
