"""The benchmark: sweep, prediction, energy and carbon per batch size (layer 3).

``run_bench`` orchestrates the measure layer only. It takes

* ``make_call(batch)`` — builds the zero-argument call of one forward pass at
  that batch size (the caller owns models, devices and ``inference_mode``);
* ``predict(batch)`` (optional) — what the counts say about that call: FLOPs,
  bytes and, when a device profile exists, the roofline latency. It is a
  callable so this module never imports the api or the tracer.

For each batch, in order: one-batch :func:`~.sweep.throughput_sweep` (peak
memory, warm-up, timed latency, throughput = batch / p50), then the
prediction, then — when asked — one energy window of the same call, sized to
last about ``min_time_s`` (a second run: the timed loop keeps no meter on its
hot path). Energy falls back to the count-based estimate when no meter works
or a meter fails part-way; the source always says which.

Stops: an out-of-memory batch ends the sweep (``largest_batch_that_fit``);
``KeyboardInterrupt`` anywhere in a batch ends it too, keeping every finished
row, and ``interrupted`` says so — the caller decides how to exit.

``roofline_efficiency`` = predicted latency / measured p50 = measured
throughput / roofline throughput: 1.0 means the model runs at the roofline,
0.25 means four times slower than the roofline predicts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import UserInputError
from .allocator import DEFAULT, POLICIES, RETAIN, allocator_condition, retain_freed_memory
from .carbon import carbon_g
from .energy import EnergyMeter, EnergyResult, estimate_energy, measure_energy
from .sweep import SweepRow, best_throughput, largest_batch_that_fit, throughput_sweep
from .timer import ProgressFn, check_timing, default_conditions


@dataclass(frozen=True)
class Prediction:
    """What the counts say about one call at one batch size (all estimates or counts)."""

    flops: float | None  # total FLOPs (contraction + other) of one call
    dram_bytes: float | None  # unfused bytes read + written of one call
    precision: str  # compute precision, for the energy estimate
    latency_s: float | None = None  # roofline latency; None without a device profile
    hardware: str | None = None  # id of the device the roofline used
    tdp_w: float | None = None  # the energy estimate's upper bound
    peak_activation_bytes: int | None = None  # counted, when the memory analysis exists
    # The calibrated prediction (this machine's measured per-op-class rates and dispatch
    # costs, `analysis.predict`); None without a calibrated profile for this device.
    calibrated_latency_s: float | None = None


@dataclass(frozen=True)
class BenchRow:
    """One batch size: the sweep row plus prediction, energy and carbon."""

    sweep: SweepRow
    prediction: Prediction | None = None
    prediction_error: str | None = None
    energy: EnergyResult | None = None
    energy_j_per_inference: float | None = None
    average_power_w: float | None = None
    carbon_g_per_1000: float | None = None

    @property
    def batch(self) -> int:
        return self.sweep.batch

    @property
    def status(self) -> str:
        return self.sweep.status

    @property
    def throughput_per_s(self) -> float | None:
        return self.sweep.throughput_per_s

    @property
    def roofline_efficiency(self) -> float | None:
        """Predicted / measured latency (1.0 = at the roofline); None when either is missing."""
        lat = self.sweep.latency
        pred = self.prediction.latency_s if self.prediction is not None else None
        if lat is None or pred is None or lat.p50_s <= 0:
            return None
        return pred / lat.p50_s

    @property
    def calibrated_error(self) -> float | None:
        """Calibrated prediction / measured p50 - 1 (0.1 = predicted 10 % slow); None when missing."""
        lat = self.sweep.latency
        pred = self.prediction.calibrated_latency_s if self.prediction is not None else None
        if lat is None or pred is None or lat.p50_s <= 0:
            return None
        return pred / lat.p50_s - 1


@dataclass(frozen=True)
class BenchResult:
    rows: tuple[BenchRow, ...]
    device: str
    interrupted: bool
    oom: bool
    conditions: Mapping[str, Any]
    energy_requested: bool
    region: str
    pue: float
    notes: tuple[str, ...] = field(default=())

    @property
    def primary(self) -> BenchRow | None:
        """The first finished row: the figures the report's headline fields show."""
        return next((r for r in self.rows if r.status == "ok"), None)

    @property
    def largest_batch_that_fit(self) -> int | None:
        return largest_batch_that_fit(self.rows)

    @property
    def best_batch(self) -> BenchRow | None:
        return best_throughput(self.rows)


def bench_conditions(device: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Device (the CPU's name, or the GPU's), threads, torch version, + extra."""
    conditions = default_conditions(device)
    conditions.update(extra or {})
    return conditions


def run_bench(
    make_call: Callable[[int], Callable[[], Any]],
    batches: Sequence[int],
    *,
    device: str = "cpu",
    predict: Callable[[int], Prediction | None] | None = None,
    energy: bool = False,
    meter: EnergyMeter | None = None,
    region: str = "world",
    pue: float = 1.0,
    min_time_s: float = 2.0,
    min_iters: int = 10,
    warmup_s: float = 0.5,
    warmup_iters: int = 3,
    max_iters: int | None = None,
    progress: ProgressFn | None = None,
    on_row: Callable[[BenchRow], None] | None = None,
    conditions: Mapping[str, Any] | None = None,
    malloc: str = DEFAULT,
) -> BenchResult:
    """Benchmark ``make_call`` at each batch size; see the module docstring.

    ``malloc='retain'`` makes glibc keep freed memory for the rest of the
    process before any model is built, so the timed calls do not pay page
    faults whose number varies from process to process (see :mod:`.allocator`);
    ``'default'`` (the default: a library call must not change its caller's
    process for good, and glibc's settings cannot be put back) leaves the
    allocator alone. The CLI, whose process ends with the command, passes
    'retain'. The conditions record the policy (``malloc``) and the state
    (``allocator``).
    """
    if not batches:
        raise UserInputError("the benchmark needs at least one batch size")
    check_timing(min_time_s, min_iters, warmup_s, warmup_iters, max_iters)
    if malloc not in POLICIES:
        raise UserInputError(f"unknown malloc policy {malloc!r}; use {' or '.join(POLICIES)}")
    carbon_g(0.0, region, pue)  # validates region and PUE before any model runs
    if malloc == RETAIN:
        retain_freed_memory()
    conds = bench_conditions(device, conditions)
    conds["malloc"] = malloc
    conds["allocator"] = allocator_condition()
    rows: list[BenchRow] = []
    notes: list[str] = []
    interrupted = oom = False
    timer = dict(min_time_s=min_time_s, min_iters=min_iters, warmup_s=warmup_s,
                 warmup_iters=warmup_iters, max_iters=max_iters)
    calls: dict[int, Callable[[], Any]] = {}

    def remembering(batch: int) -> Callable[[], Any]:
        # The energy window reruns the very call the sweep timed.
        calls[batch] = make_call(batch)
        return calls[batch]

    for batch in batches:
        swept = throughput_sweep(remembering, [batch], device=device, progress=progress,
                                 conditions=conds, **timer)  # type: ignore[arg-type]
        srow = swept.rows[0]
        row = BenchRow(srow)
        if srow.status == "ok":
            try:
                row = _complete_row(srow, calls[batch], device, predict, energy, meter, region,
                                    pue, min_time_s, min_iters, max_iters)
            except KeyboardInterrupt:
                # The timed part finished: keep it, stop the sweep.
                interrupted = True
                notes.append(f"interrupted after timing batch {batch}; its prediction/energy were skipped")
        interrupted = interrupted or swept.interrupted
        oom = oom or swept.oom
        calls.clear()  # drop the model inputs of this batch before the next one
        rows.append(row)
        if on_row is not None:
            try:
                on_row(row)
            except KeyboardInterrupt:  # while the caller showed the row: it is kept all the same
                interrupted = True
        if interrupted or oom:
            break

    return BenchResult(
        rows=tuple(rows), device=device, interrupted=interrupted, oom=oom, conditions=conds,
        energy_requested=energy, region=region, pue=pue, notes=tuple(notes),
    )


def _complete_row(
    srow: SweepRow,
    call: Callable[[], Any],
    device: str,
    predict: Callable[[int], Prediction | None] | None,
    energy: bool,
    meter: EnergyMeter | None,
    region: str,
    pue: float,
    min_time_s: float,
    min_iters: int,
    max_iters: int | None,
) -> BenchRow:
    assert srow.latency is not None
    prediction: Prediction | None = None
    error: str | None = None
    if predict is not None:
        try:
            prediction = predict(srow.batch)
        except Exception as exc:  # noqa: BLE001 - a failed prediction must not cost the measurement
            error = f"{type(exc).__name__}: {exc}".splitlines()[0]
    if not energy:
        return BenchRow(srow, prediction, error)

    p50 = srow.latency.p50_s
    estimate = None
    if prediction is not None and prediction.flops is not None and prediction.dram_bytes is not None:
        estimate = estimate_energy(prediction.flops, prediction.dram_bytes, prediction.precision,
                                   latency_s=p50, tdp_w=prediction.tdp_w)
    # Long enough for counters that update every ~1 ms (RAPL) to ~100 ms (some NVML boards).
    iterations = max(min_iters, math.ceil(min_time_s / p50) if p50 > 0 else min_iters)
    if max_iters is not None:
        iterations = min(iterations, max_iters)
    result = measure_energy(meter, call, iterations, estimate=estimate)
    per_call = result.energy_per_iteration_j
    per_inference = per_call / srow.batch if per_call is not None else None
    if result.measured and result.measurement is not None:
        power = result.measurement.average_power_w
    else:
        # The estimate's energy over the measured latency: an estimated power, labelled by source.
        power = per_call / p50 if per_call is not None and p50 > 0 else None
    carbon = carbon_g(per_inference * 1000, region, pue) if per_inference is not None else None
    return BenchRow(srow, prediction, error, result, per_inference, power, carbon)


# ---------------------------------------------------------------- the report section


_LATENCY_KEYS = ("min", "mean", "std", "p50", "p90", "p99", "iterations")


def _latency_dict(row: BenchRow) -> dict[str, Any] | None:
    lat = row.sweep.latency
    if lat is None:
        return None
    full = lat.to_dict()
    return {k: full[k] for k in _LATENCY_KEYS}


def _row_dict(row: BenchRow) -> dict[str, Any]:
    s, p, e = row.sweep, row.prediction, row.energy
    lat = s.latency
    return {
        "batch": s.batch,
        "status": s.status,
        "latency_s": _latency_dict(row),
        "noisy": lat.noisy if lat is not None else None,
        "noise_reason": lat.noise_reason if lat is not None else None,
        "throughput_per_s": s.throughput_per_s,
        "peak_memory_bytes": s.peak_memory_bytes,
        "peak_memory_method": s.memory.method if s.memory is not None else None,
        "counted_peak_activation_bytes": p.peak_activation_bytes if p is not None else None,
        "predicted_latency_s": p.latency_s if p is not None else None,
        "roofline_efficiency": row.roofline_efficiency,
        "prediction_error": row.prediction_error,
        # Kept apart from the two keys above, whose meaning is older: `predicted_latency_s`
        # is the roofline bound and `prediction_error` the text of a failed prediction.
        "roofline_latency_s": p.latency_s if p is not None else None,
        "calibrated_latency_s": p.calibrated_latency_s if p is not None else None,
        "calibrated_prediction_error": row.calibrated_error,
        "energy_j_per_inference": row.energy_j_per_inference,
        "energy_source": e.source if e is not None else None,
        "energy_warning": e.warning if e is not None else None,
        "energy_iterations": e.iterations if e is not None else None,
        "average_power_w": row.average_power_w,
        "carbon_g_per_1000": row.carbon_g_per_1000,
        "error": s.error,
    }


def measured_section(result: BenchResult) -> dict[str, Any]:
    """The report's ``measured`` section: headline figures of the first finished batch + the sweep."""
    primary = result.primary
    head = _row_dict(primary) if primary is not None else {}
    best = result.best_batch
    hardware = next((r.prediction.hardware for r in result.rows
                     if r.prediction is not None and r.prediction.hardware), None)
    return {
        "device": result.device,
        "batch": primary.batch if primary is not None else None,
        "latency_s": head.get("latency_s"),
        "throughput_per_s": head.get("throughput_per_s"),
        "peak_memory_bytes": head.get("peak_memory_bytes"),
        "energy_j_per_inference": head.get("energy_j_per_inference"),
        "energy_source": head.get("energy_source"),
        "carbon_g_per_1000": head.get("carbon_g_per_1000"),
        "carbon_region": result.region if result.energy_requested else None,
        "pue": result.pue if result.energy_requested else None,
        "prediction_hardware": hardware,
        "roofline_latency_s": head.get("roofline_latency_s"),
        "calibrated_latency_s": head.get("calibrated_latency_s"),
        "calibrated_prediction_error": head.get("calibrated_prediction_error"),
        "sweep": [_row_dict(r) for r in result.rows],
        # Conditions of the headline figures: the sweep's plus the batch they were measured at.
        "conditions": {**result.conditions, "batch": primary.batch if primary is not None else None},
        "best_batch": best.batch if best is not None else None,
        "interrupted": result.interrupted,
        "oom": result.oom,
        "largest_batch_that_fit": result.largest_batch_that_fit,
        "notes": list(result.notes),
        "method": (
            "measured: wall clock per call after warm-up (CUDA events on GPU), throughput = "
            "batch / p50; peak memory above the pre-call level; energy from the named meter, "
            "or 'estimate' from the counts when no meter works; roofline_efficiency = "
            "predicted / measured latency; roofline_latency_s (= predicted_latency_s) is the bound at "
            "the device peaks, calibrated_latency_s the prediction from this machine's calibration, "
            "calibrated_prediction_error = calibrated / measured - 1"
        ),
    }
