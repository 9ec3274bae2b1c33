"""`modelmeter bench` (layer 7): measured latency, throughput, memory and energy per batch size.

Parse, run `pipeline.run.bench` (which builds the model, times it per batch
and predicts each batch on meta) with live progress from
`report.terminal_bench`, render, and write the full report (count sections
+ `roofline` + `measured`).

Ctrl-C stops the sweep, prints and saves the finished rows, then exits with
130 (128 + SIGINT, the shell convention) so scripts can tell a cut-short run
from a complete one.
"""

from __future__ import annotations

import sys

import click

from .mlflow_option import mlflow_option
from .options import (
    CommaList,
    batch_list,
    check_outputs,
    check_sizes,
    make_console,
    model_spec,
    write_json,
)

EXIT_INTERRUPTED = 130


@click.command()
@click.argument("model", required=False, callback=model_spec)
@click.option("--input", "inputs", multiple=True, metavar="SHAPE[:DTYPE]",
              help="Input shape such as 1x3x224x224 (repeat for several inputs); --batch sets dim 0.")
@click.option("--batch", "batch_text", type=batch_list(), metavar="LIST",
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
@click.option("--backend", "backend_text", type=CommaList(example="compile,onnxruntime"), multiple=True,
              metavar="LIST",
              help="Also time the model on these backends beside eager: compile, onnxruntime "
                   "(comma list or repeat; eager is always the baseline).")
@click.option("--compile", "compile_flag", is_flag=True,
              help="Also time torch.compile (same as --backend compile); compile time is reported "
                   "apart from the steady state.")
@click.option("--json", "json_path", metavar="PATH", help="Write the report as JSON ('-' = stdout).")
@mlflow_option
def bench(model, inputs, batch_text, seq, dtype, device, min_time_s, min_iters, warmup_s, energy,
          meter, region, pue, hardware, threads, malloc, backend_text, compile_flag, json_path, mlflow_flag) -> None:
    """Measure latency, throughput, peak memory and energy here, beside the roofline prediction."""
    from ..hardware.local import stderr_progress
    from ..measure.backends import parse_backends
    from ..measure.sweep import parse_batches
    from ..pipeline import run
    from ..pipeline.calibrated import apply_threads
    from ..pipeline.options import BenchOptions, ModelOptions, TimingOptions
    from ..report.terminal_bench import bench_view, flush, live_progress

    # Everything a user can get wrong is checked before a model is built.
    batches = tuple(parse_batches(batch_text)) if batch_text is not None else None  # ascending
    check_sizes(seq, "--seq")
    check_outputs(json=json_path)
    energy = energy or region is not None or pue is not None
    # --meter has a default, so it implies nothing: it picks the meter when energy is measured.
    options = BenchOptions(batches, device, hardware, energy, meter if energy else None, region, pue,
                           TimingOptions(min_time_s, min_iters, warmup_s, malloc),
                           tuple(parse_backends([n for names in backend_text for n in names], compile_flag)))
    model_options = ModelOptions(model, inputs=tuple(inputs) or None, seq=seq, dtype=dtype)
    if options.device == "cpu":
        from ..pipeline.memcheck import check_cpu_fit

        # The largest batch is the one that must fit (the sweep's OOM rule handles activations).
        check_cpu_fit(model, inputs=list(inputs) or None, batch=max(batches) if batches else None,
                      seq=seq, advice="`modelmeter roofline` predicts its latency without running it")
    tracking = None
    if mlflow_flag:
        from .mlflow_option import connect_tracking

        tracking = connect_tracking()  # a missing extra or a dead server: before the work
    # Threads first (on cpu, by default the physical cores): the
    # calibrated profile is keyed by the thread count the bench runs with.
    used = apply_threads(threads, options.device)

    console = make_console(json_to_stdout=json_path == "-")
    if used is not None:
        from ..report.threads_text import threads_text

        console.print(f"threads {threads_text(used, threads is not None)}", markup=False, highlight=False)
    with live_progress(console) as (on_progress, on_row):
        hooks = run.Hooks(on_status=lambda text: console.print(f"{text}…", markup=False, highlight=False),
                          on_progress=on_progress, on_row=on_row, on_calibration=stderr_progress())
        sections = run.bench(model_options, options, hooks)
    report = sections.to_report()

    # Rendered first: should the write still fail (disk full), the numbers were shown.
    for item in bench_view(report.measured, options.energy):
        console.print(item)
    flush(console)
    sys.stdout.flush()
    if json_path is not None:
        write_json(report.to_dict(), json_path)
    if json_path not in (None, "-"):
        console.print(f"wrote {json_path}")
    if tracking is not None:
        from .mlflow_option import log_and_say

        log_and_say(tracking, console, report.to_dict(), "bench", ())
    if sections.measured.interrupted:
        click.echo("modelmeter: interrupted; finished rows were kept", err=True)
        click.get_current_context().exit(EXIT_INTERRUPTED)
