"""`modelmeter bench` (layer 6): measured latency, throughput, memory and energy per batch size.

The measuring is `measure.bench.run_bench`; this module builds the model and
its inputs per batch, the roofline prediction per batch (api.analyse on meta),
shows progress and rows as they finish, and writes the full report
(count sections + `roofline` + `measured`).

Ctrl-C stops the sweep, prints and saves the finished rows, then exits with
130 (128 + SIGINT, the shell convention) so scripts can tell a cut-short run
from a complete one.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from ..benchsetup import BenchBuilder, apply_threads, check_device, prediction_hardware
from .options import check_outputs, check_sizes, make_console, write_json

EXIT_INTERRUPTED = 130


@click.command()
@click.argument("model", required=False)
@click.option("--input", "inputs", multiple=True, metavar="SHAPE[:DTYPE]",
              help="Input shape such as 1x3x224x224 (repeat for several inputs); --batch sets dim 0.")
@click.option("--batch", "batch_text", metavar="LIST",
              help="Batch sizes to sweep, e.g. 1,8,32 (default: the model's example batch).")
@click.option("--seq", type=int, help="Sequence length in tokens (text models).")
@click.option("--dtype", help="Precision to run in: fp32 fp16 bf16 (default: as built, fp32).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--min-time", "min_time_s", type=click.FloatRange(min=0, min_open=True), default=2.0,
              show_default=True, metavar="S", help="Timed seconds per batch size (> 0).")
@click.option("--min-iters", type=click.IntRange(min=1), default=10, show_default=True,
              help="Timed calls per batch size, at least.")
@click.option("--warmup", "warmup_s", type=click.FloatRange(min=0), default=0.5, show_default=True,
              metavar="S", help="Warm-up seconds per batch size.")
@click.option("--energy", is_flag=True, help="Measure energy per inference (or estimate it, labelled).")
@click.option("--meter", default="auto", show_default=True,
              help="Energy meter: auto (RAPL on CPU, NVML on CUDA), rapl, nvml, zeus, none (= estimate).")
@click.option("--region", default=None, metavar="REGION",
              help="Grid region for gCO2e (e.g. fr, us, world; default world). Implies --energy.")
@click.option("--pue", default=None, metavar="PUE|PRESET",
              help="Data-centre PUE: a number >= 1 or local/industry/hyperscale (default 1.0).")
@click.option("--hardware", "hardware", metavar="ID",
              help="Device profile for the roofline prediction (default: the calibrated 'local' "
                   "profile on CPU, the database entry of the GPU on CUDA).")
@click.option("--threads", type=click.IntRange(min=1), help="torch intra-op threads (CPU).")
@click.option("--malloc", type=click.Choice(["retain", "default"]), default="retain", show_default=True,
              help="retain: glibc keeps freed memory, so timed calls do not pay page faults that vary "
                   "from run to run; default: leave the C allocator as it is.")
@click.option("--json", "json_path", metavar="PATH", help="Write the report as JSON ('-' = stdout).")
def bench(model, inputs, batch_text, seq, dtype, device, min_time_s, min_iters, warmup_s, energy,
          meter, region, pue, hardware, threads, malloc, json_path) -> None:
    """Measure latency, throughput, peak memory and energy here, beside the roofline prediction."""
    from ..core.precision import parse_precision
    from ..measure.bench import measured_section, run_bench
    from ..measure.carbon import carbon_intensity, parse_pue
    from ..measure.energy import select_meter
    from ..measure.sweep import parse_batches

    # Everything a user can get wrong is checked before a model is built.
    device = check_device(device)
    batches = parse_batches(batch_text) if batch_text is not None else None
    check_sizes(batches or [], "--batch")
    check_sizes(seq, "--seq")
    check_outputs(json=json_path)
    if device == "cpu":
        from .memcheck import check_cpu_fit

        # The largest batch is the one that must fit (the sweep's OOM rule handles activations).
        check_cpu_fit(model, inputs=list(inputs) or None, batch=max(batches) if batches else None,
                      seq=seq, advice="`modelmeter roofline` predicts its latency without running it")
    if dtype is not None:
        dtype = parse_precision(dtype).name
    energy = energy or region is not None or pue is not None
    region_key = carbon_intensity(region or "world").region
    pue_value = parse_pue(pue) if pue is not None else 1.0
    energy_meter = select_meter(meter, device) if energy else None
    # Threads first: the calibrated profile is keyed by the thread count the bench runs with.
    apply_threads(threads, device)
    hw, hw_note = prediction_hardware(hardware, device, dtype)

    builder = BenchBuilder(model, list(inputs) or None, seq, dtype, device, hw)
    if batches is None:
        batches = [builder.default_batch()]
    quiet = json_path == "-"
    console = make_console(json_to_stdout=quiet)
    notes = [hw_note] if hw_note else []

    result = _run_with_progress(
        console, run_bench, builder, batches,
        dict(device=device, energy=energy, meter=energy_meter, region=region_key, pue=pue_value,
             min_time_s=min_time_s, min_iters=min_iters, warmup_s=warmup_s, malloc=malloc,
             conditions={"model": builder.name, "dtype": dtype or "fp32",
                         "batches": list(batches)}),
    )
    section = measured_section(result)
    section["notes"] = notes + builder.notes + section["notes"]
    report = builder.report(result)
    report.measured = section
    report.methods["measured"] = section["method"]

    # Rendered first: should the write still fail (disk full), the numbers were shown.
    _render(console, section, energy)
    if json_path is not None:
        write_json(report.to_dict(), json_path)
    if json_path not in (None, "-"):
        console.print(f"wrote {json_path}")
    if result.interrupted:
        click.echo("modelmeter: interrupted; finished rows were kept", err=True)
        click.get_current_context().exit(EXIT_INTERRUPTED)


# ------------------------------------------------------------------ checks


def _run_with_progress(console: Any, run_bench: Any, builder: BenchBuilder, batches: list[int],
                       options: dict[str, Any]) -> Any:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    # No auto-refresh: rich's refresh thread would wake ten times a second and take a
    # core from the model while it is being timed. The timer calls `progress` between
    # calls (at most every 100 ms), and that is when the bar redraws.
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=True, auto_refresh=False) as bar:
        task = bar.add_task("starting", total=None)
        state = {"batch": batches[0]}

        def progress(phase: str, n: int, elapsed: float) -> None:
            bar.update(task, description=f"batch {state['batch']}: {phase} {n} calls, {elapsed:.1f} s",
                       refresh=True)

        def on_row(row: Any) -> None:
            bar.console.print(_row_line(row), markup=False, highlight=False)
            _flush(bar.console)
            later = [b for b in batches if b > row.batch]
            if later:
                state["batch"] = later[0]

        return run_bench(builder.make_call, batches, predict=builder.predict, progress=progress,
                         on_row=on_row, **options)


def _flush(console: Any) -> None:
    # Rows are the record of a run that may be cut short: get each one out at once.
    try:
        console.file.flush()
    except (AttributeError, OSError, ValueError):
        pass


def _row_line(row: Any) -> str:
    from ..core.units import format_bytes, format_seconds

    s = row.sweep
    if s.status != "ok" or s.latency is None:
        return f"batch {s.batch}: {s.status}" + (f" ({s.error})" if s.error else "")
    lat = s.latency
    parts = [f"batch {s.batch}: p50 {format_seconds(lat.p50_s)}", f"{s.throughput_per_s:.4g} items/s",
             f"{lat.iterations} calls"]
    if s.peak_memory_bytes is not None:
        parts.append(f"peak +{format_bytes(s.peak_memory_bytes, binary=True)}")
    if row.prediction is not None and row.prediction.latency_s is not None:
        parts.append(f"roofline {format_seconds(row.prediction.latency_s)}")
    if row.energy_j_per_inference is not None and row.energy is not None:
        parts.append(f"{row.energy_j_per_inference:.3g} J/inference [{row.energy.source}]")
    if lat.noisy:
        parts.append("NOISY")
    return ", ".join(parts)


def _render(console: Any, m: dict[str, Any], energy: bool) -> None:
    from rich.table import Table
    from rich.text import Text

    from ..core.units import format_bytes, format_count, format_seconds

    c = m["conditions"]
    console.print(f"[bold]{c.get('model', '')}[/bold] on {c.get('device_name', m['device'])} "
                  f"({m['device']}, {c.get('threads')} threads, torch {c.get('torch_version')}, "
                  f"{c.get('dtype')}; allocator: {c.get('allocator')})")
    table = Table(title="measured (wall clock after warm-up; roofline and 'estimate' are estimates)")
    cols = ["batch", "p50", "p90", "p99", "min", "mean ± std", "calls", "items/s",
            "peak mem (counted)", "roofline (eff.)"]
    if energy:
        cols += ["J/inference [source]", "avg W", "gCO2e/1k"]
    cols.append("status")
    for col in cols:
        table.add_column(col, justify="left" if col == "status" else "right")
    best = m["best_batch"]
    for r in m["sweep"]:
        lat = r["latency_s"] or {}
        status = r["status"] + (" NOISY" if r["noisy"] else "") + (" best" if r["batch"] == best else "")
        eff = r["roofline_efficiency"]
        counted = r["counted_peak_activation_bytes"]
        cells = [
            str(r["batch"]), format_seconds(lat.get("p50")), format_seconds(lat.get("p90")),
            format_seconds(lat.get("p99")), format_seconds(lat.get("min")),
            f"{format_seconds(lat.get('mean'))} ± {format_seconds(lat.get('std'))}" if lat else "—",
            str(lat.get("iterations", "—")),
            format_count(r["throughput_per_s"]),
            format_bytes(r["peak_memory_bytes"], binary=True)
            + (f" ({format_bytes(counted, binary=True)})" if counted is not None else ""),
            format_seconds(r["predicted_latency_s"]) + (f" ({eff:.0%})" if eff is not None else ""),
        ]
        if energy:
            joules = r["energy_j_per_inference"]
            cells += [f"{joules:.3g} [{r['energy_source']}]" if joules is not None else "—",
                      f"{r['average_power_w']:.3g}" if r["average_power_w"] is not None else "—",
                      f"{r['carbon_g_per_1000']:.3g}" if r["carbon_g_per_1000"] is not None else "—"]
        cells.append(status)
        table.add_row(*(Text(c) for c in cells))  # Text: '[estimate]' is not rich markup
    console.print(table)
    if best is not None:
        console.print(f"best throughput at batch {best}")
    if m["oom"]:
        console.print(f"out of memory: largest batch that fit is {m['largest_batch_that_fit']}")
    if m["interrupted"]:
        console.print("interrupted: only the finished rows above were measured")
    for r in m["sweep"]:
        if r["noisy"]:
            console.print(f"batch {r['batch']} is noisy: {r['noise_reason']}")
        for key in ("energy_warning", "prediction_error"):
            if r[key]:
                console.print(f"batch {r['batch']}: {r[key]}")
    if energy and any(r["energy_source"] == "estimate" for r in m["sweep"]):
        console.print("energy [estimate]: computed from the counts (no meter measured it)", markup=False)
    if energy:
        console.print(f"carbon: region {m['carbon_region']}, PUE {m['pue']:g}")
    for note in m["notes"]:
        console.print(f"note: {note}")
    _flush(console)
    sys.stdout.flush()
