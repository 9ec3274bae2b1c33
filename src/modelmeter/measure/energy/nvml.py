"""NVIDIA GPU energy through NVML (``pynvml`` from the ``nvidia-ml-py`` package) (layer 3).

Two methods, chosen per GPU when the meter starts:

* **Energy counter** — ``nvmlDeviceGetTotalEnergyConsumption``: millijoules
  since the driver was loaded, Volta and newer. Read at both window edges and
  subtract. The counter refreshes every few tens of ms, so a window much
  shorter than that can read 0 J; ``measure_energy`` warns about it.
* **Power sampling** — older GPUs answer ``NVML_ERROR_NOT_SUPPORTED`` to the
  counter; then ``nvmlDeviceGetPowerUsage`` (milliwatts, board power) is
  sampled in a background thread while any window is open and integrated with
  the trapezoid rule. On those GPUs (GA100 and older) the reading is
  instantaneous; on newer GPUs it is a 1-second average, which is why the
  counter is preferred wherever it exists.

``pynvml`` is imported lazily; the ``nvml`` argument takes any object with the
same functions (tests pass a small fake class). The GPU is chosen from the
torch device (``cuda:N``), mapped through ``CUDA_VISIBLE_DEVICES`` because NVML
numbers physical GPUs while torch numbers visible ones.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from ...core.errors import MeasurementError
from ..timer import parse_device
from .base import CounterMeter, EnergyMeasurement, synchronize

_NOT_SUPPORTED = 3  # NVML_ERROR_NOT_SUPPORTED in nvml.h


class NvmlMeter(CounterMeter):
    """Energy windows for one NVIDIA GPU."""

    name = "nvml"
    method = "NVML total-energy counter"

    def __init__(
        self, device: str = "cuda", *, nvml: Any = None, poll_interval_s: float = 0.01
    ) -> None:
        super().__init__(device)
        kind, index = parse_device(device)
        self.logical_index = index or 0
        self.domain = f"gpu{self.logical_index}"
        self.poll_interval_s = poll_interval_s
        self.mode: str | None = None  # 'counter' | 'sampling'
        self._nvml = nvml
        self._handle: Any = None
        self._reason: str | None = None
        self._lock = threading.Lock()
        self._samples: list[tuple[float, float]] = []  # (perf_counter s, power W)
        self._sample_windows: dict[str, tuple[float, int]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start()
        if self._reason is not None and self._handle is not None:
            self.close()  # NVML started but is no use here: release it now

    @property
    def unavailable_reason(self) -> str | None:
        return self._reason

    # Start-up ------------------------------------------------------------
    def _start(self) -> None:
        if self._nvml is None:
            try:
                import pynvml  # lazy: an optional dependency
            except ImportError:
                self._reason = "nvidia-ml-py is not installed: install modelmeter[gpu]"
                return
            self._nvml = pynvml
        nvml = self._nvml
        error = getattr(nvml, "NVMLError", Exception)
        try:
            nvml.nvmlInit()
            self._handle = self._get_handle()
        except error as exc:
            self._reason = f"NVML could not open GPU {self.logical_index}: {exc}"
            return
        try:
            nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            self.mode = "counter"
            return
        except error as exc:
            if getattr(exc, "value", _NOT_SUPPORTED) != getattr(
                nvml, "NVML_ERROR_NOT_SUPPORTED", _NOT_SUPPORTED
            ):
                self._reason = f"NVML energy counter failed: {exc}"
                return
        try:
            nvml.nvmlDeviceGetPowerUsage(self._handle)
        except error as exc:
            self._reason = (
                f"GPU {self.logical_index} supports neither the NVML energy counter "
                f"(Volta+) nor power readings: {exc}"
            )
            return
        self.mode = "sampling"
        self.method = (
            f"NVML power sampling every {self.poll_interval_s * 1e3:g} ms, trapezoid integration"
        )

    def _get_handle(self) -> Any:
        nvml = self._nvml
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible:
            entries = [e.strip() for e in visible.split(",") if e.strip()]
            if self.logical_index < len(entries):
                entry = entries[self.logical_index]
                if entry.isdigit():
                    return nvml.nvmlDeviceGetHandleByIndex(int(entry))
                return nvml.nvmlDeviceGetHandleByUUID(entry)
        return nvml.nvmlDeviceGetHandleByIndex(self.logical_index)

    def close(self) -> None:
        """Stop sampling and release NVML (it is reference-counted, so this is safe)."""
        self._stop_sampler()
        if self._handle is not None and self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001 - shutting down must never raise
                pass
            self._handle = None

    # Counter mode (CounterMeter does the windows) -------------------------
    def read_counters(self) -> dict[str, int]:
        try:
            return {self.domain: int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))}
        except Exception as exc:
            raise MeasurementError(f"NVML energy read failed: {exc}") from exc

    def delta_j(self, domain: str, begin: int, end: int) -> float:
        return (end - begin) * 1e-3  # mJ -> J, the one unit conversion

    # Windows ----------------------------------------------------------------
    def begin_window(self, key: str) -> None:
        if self.mode != "sampling":
            super().begin_window(key)
            return
        if key in self._sample_windows:
            raise MeasurementError(f"energy window {key!r} is already open")
        synchronize(self.device)
        with self._lock:
            if not self._sample_windows:
                self._samples.clear()
            self._sample_windows[key] = (time.perf_counter(), len(self._samples))
        self._sample_now()
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._poll, name="modelmeter-nvml", daemon=True)
            self._thread.start()

    def end_window(self, key: str) -> EnergyMeasurement:
        if self.mode != "sampling":
            return super().end_window(key)
        if key not in self._sample_windows:
            raise MeasurementError(f"energy window {key!r} was never begun")
        with self._lock:
            begin_t, first = self._sample_windows.pop(key)
        try:
            synchronize(self.device)
            self._sample_now()
            end_t = time.perf_counter()
            with self._lock:
                window = list(self._samples[first:])
        finally:
            if not self._sample_windows:
                self._stop_sampler()
        energy = integrate_trapezoid(window)
        duration = end_t - begin_t
        power = energy / duration if duration > 0 else None
        return EnergyMeasurement(
            energy, duration, power, {self.domain: energy}, self.name, self.method
        )

    # Sampling ---------------------------------------------------------------
    def _sample_now(self) -> None:
        try:
            milliwatts = self._nvml.nvmlDeviceGetPowerUsage(self._handle)
        except Exception as exc:
            raise MeasurementError(f"NVML power read failed: {exc}") from exc
        with self._lock:
            self._samples.append((time.perf_counter(), milliwatts * 1e-3))  # mW -> W

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            try:
                self._sample_now()
            except MeasurementError:
                # Skip a failed reading; the edges are read synchronously and raise there.
                continue

    def _stop_sampler(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None


def integrate_trapezoid(samples: list[tuple[float, float]]) -> float:
    """Joules from (time s, power W) samples; needs two samples (else 0 J over 0 s)."""
    total = 0.0
    for (t0, p0), (t1, p1) in zip(samples, samples[1:], strict=False):
        total += (p0 + p1) * 0.5 * (t1 - t0)
    return total
