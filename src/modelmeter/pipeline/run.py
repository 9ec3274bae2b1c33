"""The one path from a model to a report (layer 5).

Every command and every public function comes through here::

    options (validated once)          pipeline/options.py
      -> model: resolve, trace once, count      pipeline/model.py  (sources, trace, count)
      -> sections: counts, memory, roofline,    pipeline/sections.py (analysis, measure)
         measurement, LLM, run notes
      -> Report = Sections.to_report()          assembled once, never patched

`count`, `memory`, `roofline`, `bench` and `report` differ only in which
sections they add to the counts; `compare` is `report` per variant. Each
returns `Sections` (typed, frozen); `api` hands back their `Report`, the CLI
renders them. Progress is reported through `Hooks`, so a command shows a
spinner or rows as they finish without re-implementing a step. Nothing here
prints.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..analysis.compare import Comparison, compare_reports
from ..analysis.gpu_predict import gpu_predict
from ..analysis.llm import llm_estimate
from ..analysis.llm_gpu import predicted_view
from ..analysis.quant_activations import check_activations, default_weights
from ..analysis.roofline import check_precisions
from ..analysis.roofline import roofline as roofline_model
from ..core.errors import UserInputError
from ..core.jsonable import to_json
from ..core.precision import parse_precision
from ..core.report import Report
from ..hardware import Hardware
from ..hardware.environment import environment_fingerprint
from ..hardware.gpumodel import gpu_model, has_gpu_model
from ..hardware.precision_choice import fastest_precision
from ..hardware.specs import LOCAL_ID
from ..measure.backends import backends_section, run_backends
from ..measure.bench import BenchRow, Prediction, run_bench
from ..measure.energy import select_meter
from ..measure.module_times import time_modules
from .calibrated import (
    any_progress,
    calibrated_prediction,
    local_for_these_threads,
    local_perf_model,
)
from .devices import (
    check_device,
    precision_check,
    prediction_hardware,
    report_hardware,
    resolve_hardware,
    same_kind,
)
from .llm_measure import local_steps
from .llm_trace import trace_costs
from .model import (
    Analysis,
    BatchModels,
    analyse,
    counted_peak_activations,
    leading_dim,
    module_calls,
    module_state,
    other_attention_traces,
    trace_training,
)
from .options import (
    BenchOptions,
    LLMOptions,
    MemoryOptions,
    ModelOptions,
    ReportOptions,
    RooflineOptions,
    TimingOptions,
)
from .sections import (
    CountSection,
    LLMSection,
    MeasuredSection,
    MemorySection,
    RooflineSection,
    RunInfo,
    Sections,
)

# The report's automatic measurement: on the CPU, for one forward pass under 50 GFLOPs
# and under 1e9 parameters — a few seconds on a laptop. Otherwise one call alone could
# take seconds and the weights gigabytes; on an accelerator timing is asked for.
AUTO_MEASURE_MAX_FLOPS = 50e9
AUTO_MEASURE_MAX_PARAMS = 1e9

# The module figures each command copies from its roofline into the report's module rows.
ROOFLINE_MODULE_KEYS = ("t_compute_s", "t_memory_s", "bound")
REPORT_MODULE_KEYS = (*ROOFLINE_MODULE_KEYS, "latency_s")  # + the module's own predicted time


@dataclass(frozen=True)
class Hooks:
    """Progress callbacks; each optional. The library never prints: the caller shows these.

    on_status(text): before each slow step ('tracing and counting', 'measuring on cpu').
    on_progress(batch, phase, calls, elapsed_s): while a batch is warmed up and timed.
    on_row(row): each finished `measure.bench.BenchRow`, as soon as it is done.
    on_calibration(description, done, total): while this machine is calibrated on first use
    (about 15 s, once per CPU, thread count and torch version); without it, on_status gets
    the percentage.
    """

    on_status: Callable[[str], None] | None = None
    on_progress: Callable[[int, str, int, float], None] | None = None
    on_row: Callable[[BenchRow], None] | None = None
    on_calibration: Callable[[str, int, int], None] | None = None

    def status(self, text: str) -> None:
        if self.on_status is not None:
            self.on_status(text)

    def calibration(self) -> Callable[[str, int, int], None] | None:
        return any_progress(self.on_calibration, self.on_status)


NO_HOOKS = Hooks()


# ------------------------------------------------------------------ count, memory, roofline


def count(model: ModelOptions) -> Sections:
    """Parameters, bytes, MACs/FLOPs per module and in total (of an ONNX graph for a `.onnx` path)."""
    from ..sources.onnx_graph import is_onnx_path

    if is_onnx_path(model.model):
        from .onnx_count import onnx_count_section

        return Sections(onnx_count_section(model))
    return Sections(CountSection.from_analysis(analyse(model)))


def memory_section(analysis: Analysis, options: MemoryOptions) -> MemorySection:
    """Activation liveness of the trace; with `train`, the training step traced and budgeted.

    The attention kernel not assumed is traced too, so the section shows both
    (`activations_by_attention`): the one figure that depends on an assumption.
    """
    train_trace = backward_counts = None
    if options.train:
        precision = parse_precision(analysis.precision or analysis.traced_dtype)
        if precision.quantised:
            raise UserInputError(f"--train with --dtype {precision.name}: quantised weights are not trained "
                                 "directly (gradients and updates need fp32, bf16 or fp16); budget training at "
                                 "one of those")
        if analysis.counts.totals.trainable_params == 0:
            raise UserInputError("the model has no trainable parameters; --train needs some")
        train_trace, backward_counts = trace_training(analysis, dropout=options.dropout)
    return MemorySection.from_traces(analysis, train_trace, backward_counts, optimizer=options.optimizer,
                                     master_fp32=options.master_fp32 is not False, checkpoint=options.checkpoint,
                                     other_attention=other_attention_traces(analysis, options.train,
                                                                            dropout=options.dropout),
                                     dropout=options.dropout)


def memory(model: ModelOptions, options: MemoryOptions) -> Sections:
    """Counts plus peak activation memory (and, with `train`, the training budget)."""
    analysis = analyse(model)
    return Sections(CountSection.from_analysis(analysis), memory=memory_section(analysis, options))


def roofline_section(analysis: Analysis, hw: Hardware, *, weights: str | None = None,
                     efficiency: float | str | None = None, depth: int | None = None,
                     module_keys: tuple[str, ...] = ROOFLINE_MODULE_KEYS,
                     activations: str | None = None,
                     calibrated_on: str | None = None, runtime: str = "eager") -> RooflineSection:
    """The roofline bound; with `calibrated_on` (a device), also this machine's calibrated
    prediction when `hw` is its cached 'local' profile; on a GPU entry, the shape-aware GPU
    performance model's prediction beside the bound (`runtime`: how kernels are launched)."""
    result = roofline_model(analysis.counts, hw, dtype=analysis.precision, weights=weights,
                            efficiency=efficiency, input_bytes=analysis.input_bytes,
                            activations=activations)
    calibrated = None
    if calibrated_on is not None:
        calibrated = calibrated_prediction(analysis.counts, result, local_perf_model(hw, calibrated_on))
    predicted = None
    if has_gpu_model(hw):
        events = {e.index: e for e in analysis.trace.events}
        predicted = gpu_predict(events, analysis.counts, result, gpu_model(hw, runtime))
    return RooflineSection(result, depth, module_keys, calibrated, predicted)


def roofline(model: ModelOptions, options: RooflineOptions, hooks: Hooks = NO_HOOKS) -> Sections:
    """Counts plus the predicted latency on a device (and, on 'local', the calibrated
    prediction). The device and precisions are checked before the trace, so a typo fails at once."""
    hw = resolve_hardware(options.hardware)
    weights = options.weights
    act = check_activations(hw, options.activations)
    if act is not None:
        # Quantised activations (W8A8, W4A8, fp8): the work around the matrix products stays
        # 16-bit (fp16 unless --dtype says), and the weights follow the activations unless given.
        model = replace(model, dtype=model.dtype or "fp16")
        weights = default_weights(act, weights)
    check_precisions(hw, model.dtype, weights)
    hooks.status("tracing and counting")
    analysis = analyse(model, check=precision_check(hw, model.dtype, weights))
    hooks.status(f"roofline on {hw.id}")
    # On this machine's 'local' profile, the calibrated prediction sits beside the bound
    # (when one is cached for the current threads and torch; never calibrated here).
    return Sections(CountSection.from_analysis(analysis),
                    roofline=roofline_section(analysis, hw, weights=weights,
                                              efficiency=options.efficiency, depth=options.depth,
                                              activations=options.activations, calibrated_on="cpu",
                                              runtime=options.runtime))


# ------------------------------------------------------------------ measurement


def _timed(timing: TimingOptions) -> dict[str, Any]:
    return {"min_time_s": timing.min_time_s, "min_iters": timing.min_iters, "warmup_s": timing.warmup_s,
            "malloc": timing.malloc}


def _prediction(analysis: Analysis, hw: Hardware | None, section: RooflineSection | None) -> Prediction:
    t = analysis.counts.totals
    result = section.result if section is not None else None
    return Prediction(
        flops=float(t.flops + t.other_flops), dram_bytes=float(t.bytes_read + t.bytes_written),
        precision=analysis.precision or "fp32",
        latency_s=result.latency_s if result is not None else None,
        hardware=hw.id if hw is not None else None, tdp_w=hw.tdp_w if hw is not None else None,
        peak_activation_bytes=counted_peak_activations(analysis),
        calibrated_latency_s=section.calibrated_latency_s if section is not None else None,
    )


def other_chip_note(hw: Hardware, device: str) -> str:
    """Why a measurement has no roofline efficiency: the roofline is another kind of chip's."""
    return f"the roofline is for {hw.id} ({hw.kind}), the measurement on {device}: no roofline efficiency"


def bench(model: ModelOptions, options: BenchOptions, hooks: Hooks = NO_HOOKS) -> Sections:
    """Measured latency, throughput, memory and energy per batch, beside each batch's roofline.

    The model is built once on the device; each batch is counted on the meta
    device for its prediction. The sections hold the counts and roofline of the
    first batch predicted, and the `measured` sweep.
    """
    if not model.is_spec:
        raise UserInputError("bench takes a model spec string (a preset, folder, pkg.module:factory…)")
    device = check_device(options.device)
    meter = select_meter(options.meter, device) if options.energy else None
    models = BatchModels(model, device)
    # The precision the predictions will count, known before anything is timed: a device
    # named that lacks it is refused here, not in every row after the measurement.
    hw, hw_note = prediction_hardware(options.hardware, device, models.precision(), hooks.calibration())
    batches = list(options.batches) if options.batches else [models.default_batch()]
    first: list[tuple[Analysis, RooflineSection | None]] = []  # the first batch predicted
    current = {"batch": batches[0]}

    def make_call(batch: int) -> Callable[[], Any]:
        current["batch"] = batch
        return models.make_call(batch)

    # A roofline of another kind of chip (a GPU's, measured here on the cpu) stays in the
    # report as asked, but the rows compare nothing with it: no efficiency, and its TDP
    # bounds no energy here (as `report` does).
    comparable = same_kind(hw, device)

    def predict(batch: int) -> Prediction:
        analysis = models.analyse(batch)
        section = (roofline_section(analysis, hw, depth=2, module_keys=(), calibrated_on=device)
                   if hw is not None else None)
        if not first:
            first.append((analysis, section))
        return _prediction(analysis, hw if comparable else None, section if comparable else None)

    on_progress = hooks.on_progress
    result = run_bench(
        make_call, batches, device=device, predict=predict, energy=options.energy, meter=meter,
        region=options.region, pue=float(options.pue), **_timed(options.timing),
        progress=(lambda phase, n, s: on_progress(current["batch"], phase, n, s)) if on_progress else None,
        on_row=hooks.on_row,
        conditions={"model": models.name, "dtype": model.dtype or "fp32", "batches": batches},
    )
    backends: list[dict[str, Any]] = []
    if len(options.backends) > 1 and not result.interrupted:
        hooks.status(f"timing {', '.join(options.backends[1:])} beside eager "
                     "(export/compile time is reported apart)")

        def inputs(batch: int) -> tuple[Any, tuple, dict]:
            current["batch"] = batch
            return models.bench_inputs(batch)

        ok = [r.batch for r in result.rows if r.status == "ok"]  # a batch eager could not run is skipped
        runs = run_backends(
            options.backends, inputs, ok, device=device, **_timed(options.timing),
            progress=(lambda phase, n, s: on_progress(current["batch"], phase, n, s)) if on_progress else None,
            conditions={"model": models.name}) if ok else []
        backends = backends_section(result, runs)
    if first:
        analysis, rl = first[0]
        count_section = CountSection.from_analysis(analysis)
    else:  # no batch got as far as its prediction
        count_section, rl = CountSection.bare(models.name, model.dtype), None
    notes = ([hw_note] if hw_note else []) + models.notes
    if hw is not None and not comparable:
        notes.append(other_chip_note(hw, device))
    return Sections(count_section, roofline=rl, measured=MeasuredSection(result, tuple(notes), tuple(backends)))


# ------------------------------------------------------------------ LLM


LLM_DEFAULT_DTYPE = "fp16"


def llm(model: Any, options: LLMOptions, hooks: Hooks = NO_HOOKS) -> LLMSection:
    """Prefill, decode, KV cache and memory fit per batch for a decoder (estimated).

    On this machine's 'local' profile (or with `measure`), `local` adds the first batch's
    TTFT/TPOT bound, calibrated prediction and, when asked, measurement here. Without a
    `dtype`: fp16, or on the 'local' profile the precision it measured fastest (said so).
    """
    hw = local_for_these_threads(resolve_hardware(options.hardware))
    check_activations(hw, options.activations)  # before minutes of tracing
    serving = options.rate is not None or options.ttft_target_s is not None or options.tpot_target_s is not None
    if serving and not has_gpu_model(hw):
        raise UserInputError(f"a request rate and TTFT/TPOT targets use the GPU performance model; {hw.id} "
                             "is not a GPU with peaks in the database")
    dtype, dtype_reason = llm_dtype(hw, options.dtype)
    hooks.status("tracing prefill and decode, costing each batch")
    hw.peak_flops_for(dtype, "matmul")  # the device has a peak at this precision: before the traces
    costs = trace_costs(model, options, dtype)
    result = llm_estimate(costs, hw, batches=options.batches, weights=options.weights,
                          kv_dtype=options.kv_dtype, max_batch=options.max_batch,
                          activations=options.activations)
    local = None
    if hw.id == "local" or options.measure:
        hooks.status("measuring prefill and decode here" if options.measure else "calibrated prediction")
        local = local_steps(model, prompt=options.prompt, gen=options.gen, batch=options.batches[0], hw=hw,
                            dtype=dtype, measure=options.measure)
    predicted = None
    if has_gpu_model(hw):
        predicted = predicted_view(
            result.costs, hw, gpu_model(hw, "eager" if options.runtime == "eager" else "graphs"),
            weights=result.weights, kv_dtype=result.kv_dtype, activations=options.activations,
            batches=tuple(b.batch for b in result.batches), max_batch=result.max_batch,
            runtime=options.runtime, rate=options.rate, ttft_target_s=options.ttft_target_s,
            tpot_target_s=options.tpot_target_s)
    return LLMSection(result, local, dtype_reason, predicted)


def llm_dtype(hw: Hardware, dtype: str | None) -> tuple[str, str | None]:
    """(precision, why it was chosen): as asked (no why); on the 'local' profile the one it
    measured fastest; else fp16, the serving precision of the accelerators in the database."""
    if dtype is not None:
        return dtype, None
    if hw.id == LOCAL_ID:
        choice = fastest_precision(hw)
        return choice.precision, choice.reason
    return LLM_DEFAULT_DTYPE, None


# ------------------------------------------------------------------ the full report


def should_measure(totals: Any, options: ReportOptions) -> tuple[bool, str]:
    """(measure?, why): as asked, else the automatic rule (small model, on the CPU)."""
    if options.measure is not None:
        return options.measure, "asked"
    small = (totals["total_flops"] < AUTO_MEASURE_MAX_FLOPS and totals["params"] < AUTO_MEASURE_MAX_PARAMS
             and options.device == "cpu")
    return small, (f"automatic: {'under' if small else 'not under'} {AUTO_MEASURE_MAX_FLOPS / 1e9:g} GFLOPs "
                   f"and {AUTO_MEASURE_MAX_PARAMS:.0e} parameters on cpu")


def _measure_one_batch(model: ModelOptions, analysis: Analysis, hw: Hardware | None,
                       rl: RooflineSection | None, memory: MemorySection,
                       options: ReportOptions) -> MeasuredSection:
    """Time the counted call itself (its batch), so measured and counted figures agree; then,
    in a separate pass with hooks, each module to `options.module_depth`."""
    device = check_device(options.device)
    loaded = analysis.loaded
    lead = leading_dim(loaded.args, loaded.kwargs) or 1
    comparable = same_kind(hw, device)
    t = analysis.counts.totals
    dtype = analysis.precision or analysis.traced_dtype
    # A spec is built in `dtype`; a user's module runs as given, in the dtype it was traced in.
    ran_in = (model.dtype or dtype) if model.is_spec else (analysis.trace_dtype or analysis.traced_dtype)
    prediction = Prediction(
        flops=float(t.flops + t.other_flops), dram_bytes=float(t.bytes_read + t.bytes_written),
        precision=dtype if model.is_spec else ran_in,
        latency_s=rl.latency_s if rl is not None and comparable else None,
        hardware=hw.id if hw is not None and comparable else None,
        tdp_w=hw.tdp_w if hw is not None and comparable else None,
        peak_activation_bytes=memory.activations.get("peak_inference_bytes"),
        calibrated_latency_s=rl.calibrated_latency_s if rl is not None and comparable else None,
    )
    restore = None
    if model.is_spec:
        models = BatchModels(replace(model, batch=None, device=None), device)
        make_batch_call, name = models.make_call, models.name
    else:
        restore = module_state(model.model)
        make_batch_call, name = module_calls(model, analysis, device), loaded.name
    notes = []
    if hw is not None and not comparable:
        notes.append(other_chip_note(hw, device))
    calls: dict[int, Callable[[], Any]] = {}

    def make_call(batch: int) -> Callable[[], Any]:
        calls[batch] = make_batch_call(batch)  # the per-module pass reruns the very call timed
        return calls[batch]

    times = None
    try:
        result = run_bench(
            make_call, [lead], device=device, predict=lambda _b: prediction, energy=options.energy,
            meter=select_meter("auto", device) if options.energy else None,
            conditions={"model": name, "dtype": ran_in, "batches": [lead]},
            **_timed(options.timing),
        )
        if options.module_depth is not None and result.primary is not None and lead in calls:
            module = models.module if model.is_spec else model.model
            paths = [m.path for m in analysis.counts.modules if m.depth <= options.module_depth]
            try:
                times = time_modules(module, calls[lead], paths, device=device,
                                     repeats=max(5, options.timing.min_iters))
            except Exception as exc:  # noqa: BLE001 - a failed breakdown must not cost the measurement
                notes.append(f"no per-module times: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}")
    finally:
        calls.clear()
        if restore is not None:
            restore()
    depths = {m.path: m.depth for m in analysis.counts.modules}
    return MeasuredSection(result, tuple(notes), module_times=times, module_depths=depths)


def report(model: ModelOptions, options: ReportOptions, hooks: Hooks = NO_HOOKS) -> Sections:
    """count + memory + roofline (when a device profile is known) + a measurement (when asked,
    or automatically for small models on the CPU), and the environment."""
    notes: list[str] = []
    hw, note = report_hardware(options.hardware, model.dtype, hooks.calibration())  # before the trace: a typo fails at once
    if note:
        notes.append(note)

    hooks.status("tracing and counting")
    # A spec is built on meta; batch, seq and inputs that cannot apply are refused there, and a
    # device named by id that lacks the model's precision before the trace.
    named = hw if options.hardware is not None else None
    analysis = analyse(model, check=precision_check(named, model.dtype, weights_option=False)
                       if named is not None else None)
    counts = CountSection.from_analysis(analysis)
    hooks.status("activation memory")
    memory = memory_section(analysis, MemoryOptions(train=options.train,
                                                    optimizer=options.optimizer if options.train else None))
    rl = None
    if hw is not None:
        hooks.status(f"roofline on {hw.id}")
        # Every module (depth None): the CSV and HTML tables show predicted times at any depth.
        rl = roofline_section(analysis, hw, module_keys=REPORT_MODULE_KEYS, calibrated_on="cpu")

    run_it, reason = should_measure(to_json(counts.totals), options)
    measured = None
    if run_it:
        hooks.status(f"measuring on {options.device}")
        try:
            measured = _measure_one_batch(model, analysis, hw, rl, memory, options)
        except UserInputError:
            if options.measure is not None:
                raise
            notes.append(f"not measured: the model could not run on {options.device}")
        except Exception as exc:  # noqa: BLE001 - a failed measurement must not cost the counts
            notes.append(f"not measured: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    elif options.measure is None:
        notes.append("not measured (automatic rule: under 50 GFLOPs and 1e9 parameters, on cpu); "
                     "pass --measure to time it here")

    environment = None
    if options.environment:
        try:
            environment = environment_fingerprint(hw.id if hw is not None else None)
        except Exception as exc:  # noqa: BLE001 - the fingerprint is context, never worth a failed run
            notes.append(f"no environment fingerprint: {type(exc).__name__}")
    run = RunInfo({"ran": measured is not None, "reason": reason, "device": options.device},
                  tuple(notes), environment)
    return Sections(counts, memory=memory, roofline=rl, measured=measured, run=run)


def compare(models: Sequence[str | None], *, dtypes: Sequence[str | None] = (None,),
            batches: Sequence[int | None] = (None,), seq: int | None = None,
            inputs: Sequence[str] | None = None, options: ReportOptions | None = None,
            hooks: Hooks = NO_HOOKS) -> tuple[list[Report], Comparison]:
    """A report for every (model, dtype, batch), and their comparison (ratios to the first)."""
    columns = len(models or [None]) * len(dtypes) * len(batches)
    if columns < 2:
        raise UserInputError("compare needs two or more columns: give two or more models, or several "
                             "--dtype or --batch values (one model alone: `modelmeter report`)")
    options = options or ReportOptions(measure=False, energy=False, environment=False)
    if options.hardware is not None:
        for dtype in dtypes:  # every column's precision on the device, before the first trace
            if dtype is not None:
                report_hardware(options.hardware, dtype)
    reports = [
        report(ModelOptions(spec, inputs=tuple(inputs) if inputs else None, batch=batch, seq=seq,
                            dtype=dtype), options, hooks).to_report()
        for spec in (models or [None]) for dtype in dtypes for batch in batches
    ]
    return reports, compare_reports([r.to_dict() for r in reports])
