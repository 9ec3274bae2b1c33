"""Building the full efficiency report and comparisons (layer 5).

`api.report`, `api.compare` and the `report`/`compare` commands share this:
count, memory, roofline (when a device profile is known) and, for small
models on CPU, a short measurement, merged into one `Report`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .benchsetup import leading_dim, map_tensors, tensors_in
from .core.errors import UserInputError

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
    timing: dict[str, Any] | None = None,
    status: Callable[[str], None] | None = None,
) -> Any:
    """count + memory + roofline + (measurement) of one model as one `Report`.

    `measure`: True / False, or None for the automatic rule (module docstring).
    `timing`: overrides of `run_bench`'s timing options (min_time_s, min_iters, warmup_s)
    and its `malloc` policy ('default', leaving the C allocator alone, or 'retain',
    which lasts for the rest of the process: the `report` command passes it).
    `status(text)` is called before each slow step (the CLI shows a spinner).
    """
    from . import api
    from .core.precision import parse_precision

    say = status or (lambda _text: None)
    notes: list[str] = []
    if dtype is not None:
        dtype = parse_precision(dtype).name
    hw = _hardware(hardware, dtype, notes, _calibration_progress(say))  # before the trace: a typo fails at once
    if train:
        from .analysis.memory import check_optimizer

        optimizer = check_optimizer(optimizer)

    say("tracing and counting")
    # A spec is built on meta; batch, seq and inputs that cannot apply are refused there.
    analysis = api.analyse(model, example_inputs, dtype=dtype, inputs=inputs, batch=batch, seq=seq)
    report = api.count_report(analysis)
    say("activation memory")
    api.add_memory_sections(report, analysis, train=train, optimizer=optimizer)
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
            from .store import environment_fingerprint

            report.environment = environment_fingerprint(hw.id if hw is not None else None)
        except Exception as exc:  # noqa: BLE001 - the fingerprint is context, never worth a failed run
            notes.append(f"no environment fingerprint: {type(exc).__name__}")
    report.settings["notes"] = report.settings.get("notes", []) + notes
    return report


def _local_hardware(notes: list[str], progress: Any) -> Any:
    """This machine's profile, calibrated on first use; None with a note when there is none."""
    from .benchsetup import local_hardware_for_prediction

    hw, why = local_hardware_for_prediction(progress)
    if hw is None:
        notes.append(NO_HARDWARE_NOTE if why and "no calibrated" in why else str(why))
    return hw


def _calibration_progress(say: Callable[[str], None]) -> Any:
    return lambda _desc, done, total: say(
        f"calibrating this machine once (cached for later runs): {100 * done // max(total, 1)}%")


def _hardware(hw_id: str | None, dtype: str | None, notes: list[str], progress: Any = None) -> Any:
    """The roofline device: the named one (errors are the user's), else 'local', else None + note."""
    try:
        from .analysis.roofline import check_precisions
        from .hardware import get_hardware
    except ImportError:  # roofline part not installed in this tree
        notes.append("no roofline: the roofline analysis is not available in this build")
        return None
    if hw_id is not None:
        hw = get_hardware(hw_id)
        check_precisions(hw, dtype)
        return hw
    hw = _local_hardware(notes, progress)
    if hw is None:
        return None
    try:
        check_precisions(hw, dtype)
    except UserInputError as exc:
        notes.append(f"no roofline on the 'local' profile: {exc}")
        return None
    return hw


def _add_roofline(report: Any, analysis: Any, hw: Any, dtype: str | None, notes: list[str]) -> Any:
    from .analysis.roofline import merge_into_modules, roofline, roofline_section

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
    _add_calibrated(report, analysis, result, hw)
    return result


def _add_calibrated(report: Any, analysis: Any, result: Any, hw: Any) -> None:
    """`roofline.calibrated`: this machine's calibrated prediction beside the bound (cpu profile only)."""
    from .analysis.predict import predict, prediction_section
    from .benchsetup import local_perf_model

    model = local_perf_model(hw, "cpu")
    pred = predict(analysis.counts, result, model) if model is not None else None
    if pred is not None:
        report.roofline["calibrated"] = prediction_section(pred)
        report.roofline["predicted_latency_s"] = pred.predicted_latency_s
        report.roofline["roofline_latency_s"] = result.latency_s


def _same_kind(hw: Any, device: str) -> bool:
    """A roofline prediction only compares with a measurement made on that kind of chip."""
    return hw is not None and (hw.kind == "cpu") == (device == "cpu")


def _add_measurement(report: Any, analysis: Any, model: Any, hw: Any, result: Any, dtype: str | None,
                     seq: int | None, inputs: list[str] | None, device: str,
                     energy: bool, timing: dict[str, Any]) -> None:
    from .benchsetup import check_device
    from .measure.bench import Prediction, measured_section, run_bench
    from .measure.energy import select_meter

    device = check_device(device)
    loaded = analysis.loaded
    lead = leading_dim(loaded.args, loaded.kwargs) or 1
    t = report.totals
    comparable = _same_kind(hw, device)
    peak = (t.get("activations") or {}).get("peak_inference_bytes")
    spec = model is None or isinstance(model, str)
    # A spec is built in `dtype`; a user's module runs as given, in the dtype it was traced in.
    ran_in = (dtype or report.settings["dtype"]) if spec else report.settings["trace_dtype"]
    prediction = Prediction(
        flops=float(t["total_flops"]), dram_bytes=float(t["bytes_read"] + t["bytes_written"]),
        precision=report.settings["dtype"] if spec else ran_in,
        latency_s=result.latency_s if result is not None and comparable else None,
        hardware=hw.id if hw is not None and comparable else None,
        tdp_w=hw.tdp_w if hw is not None and comparable else None,
        peak_activation_bytes=peak,
        calibrated_latency_s=((report.roofline or {}).get("predicted_latency_s")
                              if comparable else None),
    )
    notes: list[str] = []
    restore = None
    if spec:
        from .benchsetup import BenchBuilder

        builder = BenchBuilder(model, inputs, seq, dtype, device, None)
        make_call = builder.make_call
        name = builder.name
    else:
        restore = _module_state(model)
        make_call = _module_call(model, analysis, device)
        name = loaded.name
    if hw is not None and not comparable:
        notes.append(f"the roofline is for {hw.id} ({hw.kind}), the measurement on {device}: "
                     "no roofline efficiency")
    # The batch that was counted, so measured and counted figures describe the same call.
    try:
        bench = run_bench(
            make_call, [lead], device=device, predict=lambda _b: prediction, energy=energy,
            meter=select_meter("auto", device) if energy else None,
            conditions={"model": name, "dtype": ran_in, "batches": [lead]},
            **timing,  # type: ignore[arg-type]
        )
    finally:
        if restore is not None:
            restore()
    section = measured_section(bench)
    section["notes"] = notes + section["notes"]
    report.measured = section
    report.methods["measured"] = section["method"]


def _module_state(module: Any) -> Callable[[], None]:
    """A function that puts the user's module back in the mode (per submodule) and on the
    device it had: measuring needs it in eval mode on the measured device, not for good."""
    import itertools

    modes = [(m, m.training) for m in module.modules()]
    devices = {t.device for t in itertools.chain(module.parameters(), module.buffers())}

    def restore() -> None:
        for m, training in modes:
            m.training = training
        if len(devices) == 1:
            module.to(next(iter(devices)))

    return restore


def _module_call(module: Any, analysis: Any, device: str) -> Callable[[int], Callable[[], Any]]:
    """Zero-argument calls of a user's module on its real example inputs (one batch: theirs)."""
    import torch

    loaded = analysis.loaded
    tensors = [p for p in module.parameters()] + list(tensors_in((loaded.args, loaded.kwargs)))
    if any(x.is_meta for x in tensors):
        raise UserInputError("the module or its inputs are on the meta device: nothing to measure")
    run = module.eval().to(device)
    args, kwargs = map_tensors(lambda x: x.to(device), (loaded.args, loaded.kwargs))

    def make(_batch: int) -> Callable[[], Any]:
        def call() -> Any:
            with torch.inference_mode():
                return run(*args, **kwargs)
        return call

    return make


# ------------------------------------------------------------------ comparisons


def split_list(text: str | None, label: str, cast: Callable[[str], Any]) -> list[Any]:
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
    from .analysis.compare import compare_reports

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
