"""The energy-meter protocol and the window bookkeeping meters share (layer 3).

A meter measures named, possibly overlapping windows::

    meter.begin_window("infer")
    run()
    m = meter.end_window("infer")   # EnergyMeasurement

Counter meters (RAPL, NVML total energy) read cumulative counters at each
edge and subtract, so overlapping windows cost nothing extra. On CUDA the
accelerator is synchronised at both edges, so queued kernels are billed to
the window that launched them. Units are converted once, at the meter's
boundary with the device: everything here is joules, seconds and watts.
``None`` means "not measured", never 0.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ...core.errors import MeasurementError
from ..timer import parse_device


@dataclass(frozen=True)
class EnergyMeasurement:
    """Energy of one window, as measured by a meter."""

    energy_j: float | None
    duration_s: float
    average_power_w: float | None
    # Joules per domain (e.g. 'package-0', 'dram-0', 'gpu0'); the total is their sum.
    domains: Mapping[str, float] = field(default_factory=dict)
    # The meter's name: 'rapl', 'nvml', 'zeus'. Estimates use EnergyEstimate instead.
    source: str = ""
    # How the meter got the number (e.g. 'energy counter', 'power sampling (trapezoid)').
    method: str = ""


@runtime_checkable
class EnergyMeter(Protocol):
    """What every meter offers; see the module docstring."""

    name: str

    @property
    def unavailable_reason(self) -> str | None: ...

    def available(self) -> bool: ...

    def begin_window(self, key: str) -> None: ...

    def end_window(self, key: str) -> EnergyMeasurement: ...


def synchronize(device: str) -> None:
    """Wait for queued accelerator work, so it is billed to the right window."""
    kind, index = parse_device(device)
    if kind == "cuda":
        import torch

        torch.cuda.synchronize(index)


class CounterMeter:
    """Windows over cumulative per-domain counters.

    Subclasses implement ``read_counters()`` (raw counter of every domain now,
    in the device's own unit) and ``delta_j(domain, begin, end)``, which turns
    two raw readings into joules — the one place units are converted (and
    where RAPL handles wrap-around).
    """

    name = "counter"
    method = "energy counter"

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        parse_device(device)  # validate early
        self._windows: dict[str, tuple[float, dict[str, int]]] = {}

    @property
    def unavailable_reason(self) -> str | None:
        raise NotImplementedError

    def available(self) -> bool:
        return self.unavailable_reason is None

    def read_counters(self) -> dict[str, int]:
        raise NotImplementedError

    def delta_j(self, domain: str, begin: int, end: int) -> float:
        raise NotImplementedError

    def begin_window(self, key: str) -> None:
        if key in self._windows:
            raise MeasurementError(f"energy window {key!r} is already open")
        reason = self.unavailable_reason
        if reason is not None:
            raise MeasurementError(f"{self.name} meter unavailable: {reason}")
        synchronize(self.device)
        self._windows[key] = (time.perf_counter(), self.read_counters())

    def end_window(self, key: str) -> EnergyMeasurement:
        if key not in self._windows:
            raise MeasurementError(f"energy window {key!r} was never begun")
        # Pop first: a failed read must not leave the window open forever.
        begin_t, begin_counters = self._windows.pop(key)
        synchronize(self.device)
        end_counters = self.read_counters()
        end_t = time.perf_counter()
        domains = {
            d: self.delta_j(d, begin_counters[d], end_counters[d])
            for d in begin_counters
            if d in end_counters
        }
        duration = end_t - begin_t
        total = sum(domains.values()) if domains else None
        power = total / duration if total is not None and duration > 0 else None
        return EnergyMeasurement(total, duration, power, domains, self.name, self.method)
