"""Zeus (``zeus.monitor.ZeusMonitor``) as a further energy backend (layer 3).

When the optional ``zeus`` package is importable, its monitor already does
what our meters do — named overlapping windows, NVML counters or power
polling, RAPL with wrap tracking, CUDA sync at window edges — so we only
translate its ``Measurement`` (``time``, ``gpu_energy``, ``cpu_energy``,
``dram_energy``: dicts of joules by index) into an ``EnergyMeasurement``.
Without it the meter is unavailable and says how to install it.

``monitor`` takes a ready monitor object (tests pass a small fake).
"""

from __future__ import annotations

from typing import Any

from ...core.errors import MeasurementError
from ..timer import parse_device
from .base import EnergyMeasurement


class ZeusMeter:
    """Energy windows delegated to a ``ZeusMonitor``."""

    name = "zeus"
    method = "Zeus ZeusMonitor windows"

    def __init__(self, device: str = "cpu", *, monitor: Any = None) -> None:
        self.device = device
        self._monitor = monitor
        self._reason: str | None = None
        if monitor is None:
            self._monitor = self._make_monitor()

    def _make_monitor(self) -> Any:
        try:
            from zeus.monitor import ZeusMonitor  # lazy: an optional dependency
        except ImportError:
            self._reason = "zeus is not installed: install modelmeter[zeus]"
            return None
        kind, index = parse_device(self.device)
        try:
            if kind == "cuda":
                return ZeusMonitor(gpu_indices=[index or 0])
            return ZeusMonitor(gpu_indices=[])  # CPU (RAPL) only
        except Exception as exc:  # noqa: BLE001 - Zeus raises many kinds at start-up
            self._reason = f"ZeusMonitor could not start: {exc}"
            return None

    @property
    def unavailable_reason(self) -> str | None:
        return self._reason

    def available(self) -> bool:
        return self._reason is None and self._monitor is not None

    def begin_window(self, key: str) -> None:
        if not self.available():
            raise MeasurementError(f"zeus meter unavailable: {self._reason}")
        try:
            self._monitor.begin_window(key)
        except Exception as exc:
            raise MeasurementError(f"zeus begin_window failed: {exc}") from exc

    def end_window(self, key: str) -> EnergyMeasurement:
        try:
            m = self._monitor.end_window(key)
        except Exception as exc:
            raise MeasurementError(f"zeus end_window failed: {exc}") from exc
        domains: dict[str, float] = {}
        for prefix, values in (
            ("gpu", getattr(m, "gpu_energy", None)),
            ("cpu", getattr(m, "cpu_energy", None)),
            ("dram", getattr(m, "dram_energy", None)),
        ):
            for index, joules in (values or {}).items():
                domains[f"{prefix}{index}"] = float(joules)
        duration = float(m.time)
        total = sum(domains.values()) if domains else None
        power = total / duration if total is not None and duration > 0 else None
        return EnergyMeasurement(total, duration, power, domains, self.name, self.method)
