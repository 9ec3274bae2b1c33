"""Energy meters, their factory, and the measure-or-estimate rule (layer 3).

Meters: ``nvml`` (NVIDIA GPUs), ``rapl`` (CPU package + DRAM on Linux),
``zeus`` (the optional Zeus monitor). ``select_meter`` probes them;
``measure_energy`` runs a callable inside one window and, when the meter
fails part-way, falls back to the count-based estimate with a ``warning``
instead of crashing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...core.errors import UserInputError
from ..timer import parse_device
from .base import CounterMeter, EnergyMeasurement, EnergyMeter
from .estimate import EnergyEstimate, estimate_energy
from .nvml import NvmlMeter
from .rapl import RaplMeter
from .zeus_meter import ZeusMeter

__all__ = [
    "METER_NAMES",
    "CounterMeter",
    "EnergyEstimate",
    "EnergyMeasurement",
    "EnergyMeter",
    "EnergyResult",
    "NvmlMeter",
    "RaplMeter",
    "ZeusMeter",
    "estimate_energy",
    "measure_energy",
    "select_meter",
]

METER_NAMES = ("auto", "nvml", "rapl", "zeus", "none")


def _build(name: str, device: str, rapl_root: Path | None) -> EnergyMeter:
    if name == "nvml":
        return NvmlMeter(device if parse_device(device)[0] == "cuda" else "cuda")
    if name == "rapl":
        return RaplMeter(rapl_root, device=device)
    return ZeusMeter(device)


def select_meter(
    name: str = "auto", device: str = "cpu", *, rapl_root: Path | None = None
) -> EnergyMeter | None:
    """The meter to use, or None when none is wanted or (for 'auto') none works.

    'auto' tries nvml on CUDA, rapl on CPU, then zeus. A meter asked for by
    name that cannot work here raises UserInputError with its reason (the fix).
    """
    key = name.strip().lower()
    if key not in METER_NAMES:
        raise UserInputError(f"unknown energy meter {name!r}; choose one of {', '.join(METER_NAMES)}")
    kind, _ = parse_device(device)
    if key == "none":
        return None
    if key == "auto":
        order = ("nvml", "zeus") if kind == "cuda" else ("rapl", "zeus")
        for candidate in order:
            meter = _build(candidate, device, rapl_root)
            if meter.available():
                return meter
        return None
    meter = _build(key, device, rapl_root)
    if not meter.available():
        raise UserInputError(f"energy meter {key!r} is unavailable: {meter.unavailable_reason}")
    return meter


@dataclass(frozen=True)
class EnergyResult:
    """Energy of ``iterations`` calls: measured when a meter worked, else the estimate."""

    source: str  # the meter's name, 'estimate', or 'none'
    iterations: int
    energy_per_iteration_j: float | None
    measurement: EnergyMeasurement | None
    estimate: EnergyEstimate | None
    warning: str | None = None

    @property
    def measured(self) -> bool:
        return self.measurement is not None and self.measurement.energy_j is not None


def _fallback(
    estimate: EnergyEstimate | None, iterations: int, warning: str | None
) -> EnergyResult:
    if estimate is None:
        return EnergyResult("none", iterations, None, None, None, warning)
    return EnergyResult("estimate", iterations, estimate.energy_j, None, estimate, warning)


def measure_energy(
    meter: EnergyMeter | None,
    fn: Callable[[], Any],
    iterations: int,
    *,
    estimate: EnergyEstimate | None = None,
    key: str = "modelmeter.measure_energy",
) -> EnergyResult:
    """Run ``fn`` ``iterations`` times inside one energy window.

    ``estimate`` is the per-iteration estimate to fall back on. A meter that
    raises (at either edge) never crashes the run: the result carries the
    estimate and a ``warning``. An exception from ``fn`` itself propagates.
    """
    if iterations < 1:
        raise UserInputError(f"iterations must be >= 1, got {iterations}")
    if meter is None:
        return _fallback(estimate, iterations, None)
    try:
        meter.begin_window(key)
    except Exception as exc:  # noqa: BLE001 - any meter failure falls back, by design
        return _fallback(estimate, iterations, f"{meter.name} meter failed to start ({exc}); using the estimate")
    try:
        for _ in range(iterations):
            fn()
    except BaseException:
        try:
            meter.end_window(key)  # close the window so the meter stays usable
        except Exception:  # noqa: BLE001 - the original error matters more
            pass
        raise
    try:
        measurement = meter.end_window(key)
    except Exception as exc:  # noqa: BLE001 - see begin_window above
        return _fallback(estimate, iterations, f"{meter.name} meter failed during the run ({exc}); using the estimate")
    if measurement.energy_j is None:
        return _fallback(estimate, iterations, f"{meter.name} meter returned no energy; using the estimate")
    warning = None
    if measurement.energy_j == 0:
        warning = (
            f"{meter.name} reported 0 J over {measurement.duration_s:.3g} s: the window is "
            "shorter than the counter's update period; use more iterations"
        )
    return EnergyResult(
        meter.name, iterations, measurement.energy_j / iterations, measurement, estimate, warning
    )
