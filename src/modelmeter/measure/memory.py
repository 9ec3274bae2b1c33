"""Measured peak memory while a piece of code runs (layer 3).

CUDA: ``torch.cuda.reset_peak_memory_stats`` at the start, then
``torch.cuda.max_memory_allocated`` at the end — bytes held by tensors through
the caching allocator (not the cache's reserve, not the CUDA context).

CPU: the process's resident set. Linux keeps a high-water mark (``VmHWM`` in
``/proc/self/status``) that writing ``5`` to ``/proc/self/clear_refs`` resets
to the current RSS (Linux >= 4.0). When that write works, the peak is exact
and costs nothing while the code runs — it even catches a short-lived buffer
that the allocator hands back to the OS at once, which sampling would miss.
When it does not (not Linux, a locked-down /proc), a background thread samples
``VmRSS`` every millisecond; the ``method`` field says which was used.

Figures: ``peak_bytes`` is the highest level seen in the window;
``growth_bytes`` is that peak minus the level at the start (what the code
itself needed on top of what was already resident: activations, workspace).
``None`` means "not measured", never 0.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from .timer import parse_device

_KB = 1024  # /proc/self/status reports "kB", which the kernel means as KiB
_FIELD = re.compile(r"^(VmRSS|VmHWM):\s+(\d+)\s+kB", re.MULTILINE)


@dataclass(frozen=True)
class MemoryMeasurement:
    """Peak memory in one window; ``None`` fields were not measured."""

    device: str
    method: str  # 'cuda-allocator' | 'vmhwm' | 'rss-sampling' | 'unavailable'
    baseline_bytes: int | None
    peak_bytes: int | None
    growth_bytes: int | None


def read_proc_status(proc_self: Path) -> dict[str, int]:
    """VmRSS and VmHWM of a process in bytes (empty when unreadable)."""
    try:
        text = (proc_self / "status").read_text()
    except OSError:
        return {}
    return {key: int(value) * _KB for key, value in _FIELD.findall(text)}


def reset_peak_rss(proc_self: Path) -> bool:
    """Reset VmHWM to the current RSS; True when the kernel accepted it."""
    try:
        (proc_self / "clear_refs").write_text("5")
    except OSError:
        return False
    status = read_proc_status(proc_self)
    # Trust the reset only when it visibly took effect (HWM back at, or near, RSS).
    return "VmHWM" in status and "VmRSS" in status and status["VmHWM"] <= status["VmRSS"] + 4 * _KB


class PeakMemory:
    """Context manager: ``with PeakMemory("cpu") as pm: ...; pm.result``."""

    def __init__(
        self,
        device: str = "cpu",
        *,
        proc_self: Path = Path("/proc/self"),
        sample_interval_s: float = 0.001,
        use_clear_refs: bool = True,
    ) -> None:
        self.device = device
        self._kind, self._index = parse_device(device)
        self._proc = proc_self
        self._interval_s = sample_interval_s
        self._use_clear_refs = use_clear_refs
        self._method = "unavailable"
        self._baseline: int | None = None
        self._sampled_peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.result: MemoryMeasurement | None = None

    def __enter__(self) -> PeakMemory:
        if self._kind == "cuda":
            self._enter_cuda()
        else:
            self._enter_cpu()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Always stop the sampler, even on KeyboardInterrupt or OOM.
        peak = self._exit_cuda() if self._kind == "cuda" else self._exit_cpu()
        growth = None if peak is None or self._baseline is None else max(0, peak - self._baseline)
        self.result = MemoryMeasurement(self.device, self._method, self._baseline, peak, growth)

    # CUDA ----------------------------------------------------------------
    def _enter_cuda(self) -> None:
        import torch

        torch.cuda.synchronize(self._index)
        torch.cuda.reset_peak_memory_stats(self._index)
        self._baseline = int(torch.cuda.memory_allocated(self._index))
        self._method = "cuda-allocator"

    def _exit_cuda(self) -> int | None:
        import torch

        try:
            torch.cuda.synchronize(self._index)
            return int(torch.cuda.max_memory_allocated(self._index))
        except RuntimeError:  # e.g. the context is unusable after a device error
            return None

    # CPU -----------------------------------------------------------------
    def _enter_cpu(self) -> None:
        if self._use_clear_refs and reset_peak_rss(self._proc):
            self._baseline = read_proc_status(self._proc).get("VmRSS")
            self._method = "vmhwm"
            return
        rss = read_proc_status(self._proc).get("VmRSS")
        if rss is None:
            self._method = "unavailable"
            return
        self._baseline = self._sampled_peak = rss
        self._method = "rss-sampling"
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="modelmeter-rss", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self._interval_s):
            rss = read_proc_status(self._proc).get("VmRSS")
            if rss is not None and rss > self._sampled_peak:
                self._sampled_peak = rss

    def _exit_cpu(self) -> int | None:
        if self._method == "vmhwm":
            return read_proc_status(self._proc).get("VmHWM")
        if self._method == "rss-sampling" and self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            last = read_proc_status(self._proc).get("VmRSS") or 0
            return max(self._sampled_peak, last)
        return None
