"""`modelmeter report` and `modelmeter compare` (layer 6): every metric in one view.

`build_full_report` is the orchestration: one meta trace counted once, then
activation memory, the roofline (when a device profile is known) and, when
asked or when the model is small enough, a measurement on this machine. It
uses no click or rich, so it can move to a layer-5 module for `api.report`.
Each later section is optional: when its package is missing or it cannot run,
the report keeps the other sections and `settings.notes` says why.

Measurement default (`--measure` not given): ON when the device is the CPU,
one forward pass is under `AUTO_MEASURE_MAX_FLOPS` (50 GFLOPs) and the model has
under `AUTO_MEASURE_MAX_PARAMS` (1e9) parameters — a few seconds on a laptop
CPU; OFF otherwise (one call alone could take seconds and the weights
gigabytes; on an accelerator, timing is `--measure` or `modelmeter bench`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from ..core.errors import UserInputError
from .options import make_console, write_json

AUTO_MEASURE_MAX_FLOPS = 50e9
AUTO_MEASURE_MAX_PARAMS = 1e9
NO_HARDWARE_NOTE = ("no roofline: no --hardware and no calibrated 'local' profile; run "
                    "`modelmeter hardware calibrate` or pass --hardware ID (e.g. --hardware h100-sxm)")

# Timing settings of the report's measurement: shorter than `bench` (2 s per batch)
# because the report is one batch and must finish fast; `bench` is for careful numbers.
REPORT_TIMING = {"min_time_s": 1.0, "min_iters": 5, "warmup_s": 0.3}


# ------------------------------------------------------------------ orchestration


def build_full_report(
    model: Any = None,
    example_inputs: Any = None,
    *,
    hardware: str | None = None,
    dtype: str | None = None,
    batch: int | None = None,
    seq: int | None = None,
    inputs: list[str] | None = None,
    measure: bool | None = None,
    device: str = "cpu",
    train: bool = False,
    optimizer: str = "adamw",
    energy: bool = True,
    environment: bool = True,
    timing: dict[str, float] | None = None,
    status: Callable[[str], None] | None = None,
) -> Any:
    """count + memory + roofline + (measurement) of one model as one `Report`.

    `measure`: True / False, or None for the automatic rule (module docstring).
    `status(text)` is called before each slow step (the CLI shows a spinner).
    """
    from .. import api
    from ..core.precision import parse_precision

    say = status or (lambda _text: None)
    notes: list[str] = []
    if dtype is not None:
        dtype = parse_precision(dtype).name
    hw = _hardware(hardware, dtype, notes)  # before the trace: a typo fails at once
    if train:
        from ..analysis.memory import check_optimizer

        optimizer = check_optimizer(optimizer)

    say("tracing and counting")
    analysis = api.analyse(model, example_inputs, dtype=dtype, inputs=inputs, batch=batch, seq=seq,
                           device="meta")
    report = api.count_report(analysis)
    lead = _leading(analysis.loaded.args, analysis.loaded.kwargs)
    if batch is not None and lead is not None and lead != batch:
        notes.append(f"--batch {batch} was not applied: the model's own example inputs have batch "
                     f"{lead}; pass --input SHAPE to set it")
    say("activation memory")
    _add_memory(report, analysis, train, optimizer, notes)
    result = None
    if hw is not None:
        say(f"roofline on {hw.id}")
        result = _add_roofline(report, analysis, hw, dtype, notes)

    t = report.totals
    auto = measure is None
    small = (t["total_flops"] < AUTO_MEASURE_MAX_FLOPS
             and t["params"] < AUTO_MEASURE_MAX_PARAMS and device == "cpu")
    run_it = small if auto else bool(measure)
    reason = ("asked" if not auto else
              f"automatic: {'under' if small else 'not under'} "
              f"{AUTO_MEASURE_MAX_FLOPS / 1e9:g} GFLOPs and "
              f"{AUTO_MEASURE_MAX_PARAMS:.0e} parameters on cpu")
    report.settings["measure"] = {"ran": False, "reason": reason, "device": device}
    if run_it:
        say(f"measuring on {device}")
        try:
            _add_measurement(report, analysis, model, hw, result, dtype, seq, inputs, device,
                             energy, {**REPORT_TIMING, **(timing or {})})
            report.settings["measure"]["ran"] = True
        except UserInputError:
            if not auto:
                raise
            notes.append(f"not measured: the model could not run on {device}")
        except Exception as exc:  # noqa: BLE001 - a failed measurement must not cost the counts
            notes.append(f"not measured: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    elif auto:
        notes.append("not measured (automatic rule: under 50 GFLOPs and 1e9 parameters, on cpu); "
                     "pass --measure to time it here")

    if environment:
        try:
            from ..store import environment_fingerprint

            report.environment = environment_fingerprint(hw.id if hw is not None else None)
        except Exception as exc:  # noqa: BLE001 - the fingerprint is context, never worth a failed run
            notes.append(f"no environment fingerprint: {type(exc).__name__}")
    report.settings["notes"] = notes
    return report


def _hardware(hw_id: str | None, dtype: str | None, notes: list[str]) -> Any:
    """The roofline device: the named one (errors are the user's), else 'local', else None + note."""
    try:
        from ..analysis.roofline import check_precisions
        from ..hardware import get_hardware, load_local_profile
    except ImportError:  # roofline part not installed in this tree
        notes.append("no roofline: the roofline analysis is not available in this build")
        return None
    if hw_id is not None:
        hw = get_hardware(hw_id)
        check_precisions(hw, dtype)
        return hw
    hw = load_local_profile()
    if hw is None:
        notes.append(NO_HARDWARE_NOTE)
        return None
    try:
        check_precisions(hw, dtype)
    except UserInputError as exc:
        notes.append(f"no roofline on the 'local' profile: {exc}")
        return None
    return hw


def _add_memory(report: Any, analysis: Any, train: bool, optimizer: str, notes: list[str]) -> None:
    try:
        from ..analysis.memory import memory_sections
    except ImportError:
        notes.append("no activation memory: the memory analysis is not available in this build")
        return
    from ..count import count_trace
    from ..trace import trace_model

    totals = analysis.counts.totals
    train_trace = backward_counts = None
    if train:
        if totals.trainable_params == 0:
            raise UserInputError("the model has no trainable parameters; --train needs some")
        loaded = analysis.loaded
        train_trace = trace_model(loaded.module, loaded.args, loaded.kwargs, backward=True)
        backward_counts = count_trace(train_trace, phase="backward")
    sections = memory_sections(
        analysis.trace, train_trace, precision=report.settings["dtype"], optimizer=optimizer,
        master_fp32=False, params=totals.params, trainable=totals.trainable_params,
        backward_counts=backward_counts, forward_counts=analysis.counts, checkpoint=False,
    )
    report.totals["activations"] = sections["activations"]
    for module in report.modules:
        module.update(sections["modules"].get(module["path"], {}))
    if "backward_flops" in sections:
        report.totals["backward_flops"] = sections["backward_flops"]
        report.totals["backward_macs"] = sections["backward_macs"]
    if "training" in sections:
        report.training = sections["training"]
    report.methods["activations"] = ("counted: liveness of every storage in one trace "
                                     "(allocated when produced, freed when PyTorch released it)")


def _add_roofline(report: Any, analysis: Any, hw: Any, dtype: str | None, notes: list[str]) -> Any:
    from ..analysis.roofline import merge_into_modules, roofline, roofline_section

    input_bytes = sum(x.storage_nbytes for x in analysis.trace.inputs)
    result = roofline(analysis.counts, hw, dtype=dtype, input_bytes=input_bytes)
    # Every module (depth None): the CSV and HTML tables show predicted times at any depth.
    report.roofline = roofline_section(result, None)
    merge_into_modules(report, report.roofline)
    # The module's own predicted time (sum of its ops' maxima), beside its summed t_compute/t_memory.
    latency = {m["path"]: m["latency_s"] for m in report.roofline["modules"]}
    for entry in report.modules:
        if entry["path"] in latency:
            entry["latency_s"] = latency[entry["path"]]
    report.methods["roofline"] = report.roofline["method"]
    return result


def _same_kind(hw: Any, device: str) -> bool:
    """A roofline prediction only compares with a measurement made on that kind of chip."""
    return hw is not None and (hw.kind == "cpu") == (device == "cpu")


def _add_measurement(report: Any, analysis: Any, model: Any, hw: Any, result: Any, dtype: str | None,
                     seq: int | None, inputs: list[str] | None, device: str,
                     energy: bool, timing: dict[str, float]) -> None:
    from ..benchsetup import check_device
    from ..measure.bench import Prediction, measured_section, run_bench
    from ..measure.energy import select_meter

    device = check_device(device)
    loaded = analysis.loaded
    lead = _leading(loaded.args, loaded.kwargs) or 1
    t = report.totals
    comparable = _same_kind(hw, device)
    peak = (t.get("activations") or {}).get("peak_inference_bytes")
    prediction = Prediction(
        flops=float(t["total_flops"]), dram_bytes=float(t["bytes_read"] + t["bytes_written"]),
        precision=report.settings["dtype"],
        latency_s=result.latency_s if result is not None and comparable else None,
        hardware=hw.id if hw is not None and comparable else None,
        tdp_w=hw.tdp_w if hw is not None and comparable else None,
        peak_activation_bytes=peak,
    )
    notes: list[str] = []
    if model is None or isinstance(model, str):
        from ..benchsetup import BenchBuilder

        builder = BenchBuilder(model, inputs, seq, dtype, device, None)
        make_call = builder.make_call
        name = builder.name
    else:
        make_call = _module_call(model, analysis, device)
        name = loaded.name
    if hw is not None and not comparable:
        notes.append(f"the roofline is for {hw.id} ({hw.kind}), the measurement on {device}: "
                     "no roofline efficiency")
    # The batch that was counted, so measured and counted figures describe the same call.
    bench = run_bench(
        make_call, [lead], device=device, predict=lambda _b: prediction, energy=energy,
        meter=select_meter("auto", device) if energy else None,
        conditions={"model": name, "dtype": dtype or report.settings["dtype"], "batches": [lead]},
        **timing,  # type: ignore[arg-type]
    )
    section = measured_section(bench)
    section["notes"] = notes + section["notes"]
    report.measured = section
    report.methods["measured"] = section["method"]


def _module_call(module: Any, analysis: Any, device: str) -> Callable[[int], Callable[[], Any]]:
    """Zero-argument calls of a user's module on its real example inputs (one batch: theirs)."""
    import torch

    loaded = analysis.loaded
    tensors = [p for p in module.parameters()] + list(_tensors((loaded.args, loaded.kwargs)))
    if any(x.is_meta for x in tensors):
        raise UserInputError("the module or its inputs are on the meta device: nothing to measure")
    run = module.eval().to(device)
    args, kwargs = _map(lambda x: x.to(device), (loaded.args, loaded.kwargs))

    def make(_batch: int) -> Callable[[], Any]:
        def call() -> Any:
            with torch.inference_mode():
                return run(*args, **kwargs)
        return call

    return make


def _map(fn: Callable[[Any], Any], value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map(fn, v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_map(fn, v) for v in value)
    return value


def _tensors(value: Any) -> list[Any]:
    found: list[Any] = []
    _map(lambda x: found.append(x) or x, value)
    return found


def _leading(args: Any, kwargs: Any) -> int | None:
    ts = [x for x in _tensors((args, kwargs)) if x.dim() > 0]
    return int(ts[0].shape[0]) if ts else None


# ------------------------------------------------------------------ comparisons


def _split_list(text: str | None, label: str, cast: Callable[[str], Any]) -> list[Any]:
    if text is None:
        return [None]
    items = [p.strip() for p in text.split(",")]
    if any(not p for p in items):
        raise UserInputError(f"--{label} takes a comma-separated list like 'a,b', got {text!r}")
    try:
        return [cast(p) for p in items]
    except ValueError:
        raise UserInputError(f"--{label}: {text!r} is not a list of integers") from None


def build_comparison(models: Sequence[str], *, hardware: str | None = None, dtypes: Sequence[Any] = (None,),
                     batches: Sequence[Any] = (None,), seq: int | None = None,
                     inputs: list[str] | None = None, measure: bool = False, device: str = "cpu",
                     status: Callable[[str], None] | None = None) -> tuple[list[Any], Any]:
    """Reports for every (model, dtype, batch) and their comparison (ratios to the first)."""
    from ..analysis.compare import compare_reports

    if not models:
        models = [None]  # type: ignore[list-item]
    reports = []
    for spec in models:
        for dtype in dtypes:
            for batch in batches:
                reports.append(build_full_report(
                    spec, hardware=hardware, dtype=dtype, batch=batch, seq=seq, inputs=inputs,
                    measure=measure, device=device, energy=measure, environment=False, status=status))
    return reports, compare_reports([r.to_dict() for r in reports])


# ------------------------------------------------------------------ files


def _check_target(target: str | None) -> None:
    """Checked before the run: a typo in a path costs no waiting."""
    if target is None or target == "-":
        return
    p = Path(target)
    if not p.parent.is_dir():
        raise UserInputError(f"cannot write {target}: folder {p.parent} does not exist")
    if p.is_dir():
        raise UserInputError(f"cannot write {target}: it is a folder")


def _write_text(target: str, text: str) -> None:
    """Written whole, then renamed: never half a file."""
    if target == "-":
        click.echo(text, nl=not text.endswith("\n"))
        return
    path = Path(target)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise UserInputError(f"cannot write {target}: {exc.strerror or exc}") from exc


def export_json(report: Any) -> dict[str, Any]:
    """The JSON document: the report (schema modelmeter.report/1) plus its summary rows."""
    from ..report.summary import summary_dicts

    data: dict[str, Any] = report.to_dict()
    data["summary"] = summary_dicts(data)  # derived; Report.from_dict ignores it
    return data


# ------------------------------------------------------------------ commands


@click.command()
@click.argument("model", required=False)
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
@click.option("--db", type=click.Path(dir_okay=False), default=None,
              help="Run store file for --save (default: the user data dir).")
@click.option("--absolute-paths", is_flag=True,
              help="Keep absolute file paths in Markdown/HTML (default: shown as their last part).")
def report(model, inputs, batch, seq, dtype, hardware, measure, device, train, depth, top, json_path,
           csv_path, md_path, html_path, save, db, absolute_paths) -> None:
    """Every efficiency metric of a model in one view: counts, memory, roofline, measurement."""
    for target in (json_path, csv_path, md_path, html_path):
        _check_target(target)
    quiet = json_path == "-"
    console = make_console() if not quiet else _stderr_console()
    with console.status("starting") as spinner:
        rep = build_full_report(model, hardware=hardware, dtype=dtype, batch=batch, seq=seq,
                                inputs=list(inputs) or None, measure=measure, device=device, train=train,
                                status=lambda text: spinner.update(text))
    data = rep.to_dict()
    if json_path is not None:
        write_json(export_json(rep), json_path)
    if not quiet:
        _render_report(console, data, depth, top)
    written = [p for p in (json_path,) if p not in (None, "-")]
    if csv_path:
        from ..report.csv_export import render_csv

        _write_text(csv_path, render_csv(data))
        written.append(csv_path)
    if md_path:
        from ..report.markdown import render_markdown

        _write_text(md_path, render_markdown(data, depth=min(depth, 1), absolute_paths=absolute_paths))
        written.append(md_path)
    if html_path:
        from ..report.html import render_html

        _write_text(html_path, render_html(data, depth=depth, absolute_paths=absolute_paths))
        written.append(html_path)
    for path in written:
        console.print(f"wrote {path}", markup=False, highlight=False)
    if save:
        from ..store import RunStore

        with RunStore(Path(db) if db else None) as store:
            run_id = store.save(data, data.get("environment"))
        console.print(f"saved run {run_id} ({store.path})", markup=False, highlight=False)


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _render_report(console: Any, data: dict[str, Any], depth: int, top: int) -> None:
    from ..report import terminal

    console.print(terminal.report_header(data))
    console.print(terminal.summary_table(data))
    for note in terminal.report_notes(data):
        console.print(f"note: {note}", markup=False, highlight=False)
    console.print(terminal.breakdown_table(data, depth))
    for line in terminal.bound_layers_lines(data, top):
        console.print(line, markup=False, highlight=False)
    uncounted = terminal.uncounted_table(data)
    if uncounted is not None:
        console.print(uncounted)


@click.command()
@click.argument("models", nargs=-1)
@click.option("--hardware", metavar="ID", help="Device for the predicted latency (default: 'local' profile).")
@click.option("--dtype", "dtypes", metavar="LIST", help="Precisions to compare, e.g. fp32,bf16.")
@click.option("--batch", "batches", metavar="LIST", help="Batch sizes to compare, e.g. 1,8.")
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
    dtype_list = _split_list(dtypes, "dtype", str)
    batch_list = _split_list(batches, "batch", int)
    if dtypes is not None:
        from ..core.precision import parse_precision

        dtype_list = [parse_precision(d).name for d in dtype_list]
    if any(b is not None and b <= 0 for b in batch_list):
        raise UserInputError(f"--batch sizes must be positive integers, got {batches!r}")
    for target in (json_path, md_path):
        _check_target(target)
    quiet = json_path == "-"
    console = make_console() if not quiet else _stderr_console()
    with console.status("starting") as spinner:
        reports, comparison = build_comparison(
            list(models), hardware=hardware, dtypes=dtype_list, batches=batch_list, seq=seq,
            inputs=list(inputs) or None, measure=measure, device=device,
            status=lambda text: spinner.update(text))
    comp = comparison.to_dict()
    if json_path is not None:
        write_json({**comp, "reports": [r.to_dict() for r in reports]}, json_path)
    if not quiet:
        from ..report.terminal import comparison_table

        console.print(comparison_table(comp))
        notes = sorted({n for r in reports for n in (r.settings.get("notes") or [])})
        for note in notes:
            console.print(f"note: {note}", markup=False, highlight=False)
    if md_path:
        from ..report.markdown import comparison_markdown

        _write_text(md_path, comparison_markdown(comp, absolute_paths=absolute_paths))
    for path in (json_path, md_path):
        if path not in (None, "-"):
            console.print(f"wrote {path}", markup=False, highlight=False)

