"""The one timing engine: warm up, then time calls on a CPU or CUDA clock (layer 2).

Calibration (this layer) and benchmarking (``measure.timer``, layer 3) both
time through `time_calls`, so a FLOP/s figure and a latency are taken with the
same clock, the same warm-up rule and the same spread measure.

Method, in order:

1. **Warm-up** runs the callable until *both* ``warmup_s`` seconds have passed
   and ``warmup_iters`` calls were made: the first calls pay for lazy
   initialisation, allocator growth, kernel selection and cold caches.
2. **Samples** are taken until *both* ``min_time_s`` seconds of wall time have
   passed and ``min_iters`` samples exist (``max_iters`` caps the count). A
   sample is ``inner`` back-to-back calls, reported per call: benchmarking
   times each call on its own (``inner=1``) to keep the spread visible;
   calibration batches calls too short for the clock.
3. On CPU each sample is bracketed by ``time.perf_counter_ns`` (monotonic,
   integer nanoseconds, no float allocation on the hot path; the ``inner=1``
   loop does nothing but call, read the clock and append). On CUDA one reused
   pair of ``torch.cuda.Event(enable_timing=True)`` brackets the sample on the
   chosen device, and the end event is synchronised before the next sample,
   so each sample is device time and kernels never pile up in the queue.

The engine validates nothing: callers check their options first and say
which option was wrong in their own words.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..core.errors import UserInputError

__all__ = ["NOISY_IQR_RATIO", "ProgressFn", "iqr_ratio", "percentile", "time_calls"]

# Interquartile range / median above which samples are noisy: the threshold
# torch.utils.benchmark warns at; contention from other processes is the usual cause.
NOISY_IQR_RATIO = 0.10
# The progress callback is called at most this often, so it never shows up in the samples.
_PROGRESS_PERIOD_NS = 100_000_000

ProgressFn = Callable[[str, int, float], None]
"""progress(phase, iterations_done, elapsed_s); phase is 'warmup' or 'timed'."""


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default 'linear' method)."""
    n = len(sorted_values)
    if n == 1:
        return sorted_values[0]
    pos = (n - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


def iqr_ratio(samples: Sequence[float]) -> float:
    """Interquartile range / median: torch.utils.benchmark's measure of spread (0 under 2 samples)."""
    if len(samples) < 2:
        return 0.0
    ordered = sorted(samples)
    median = percentile(ordered, 0.5)
    return (percentile(ordered, 0.75) - percentile(ordered, 0.25)) / median if median > 0 else math.inf


def time_calls(
    fn: Callable[[], Any],
    *,
    cuda: Any = None,
    inner: int = 1,
    min_time_s: float = 0.0,
    min_iters: int = 1,
    max_iters: int | None = None,
    warmup_s: float = 0.0,
    warmup_iters: int = 0,
    progress: ProgressFn | None = None,
) -> list[float]:
    """Seconds per call of ``fn()``, one value per sample, in time order (see the module docstring).

    ``cuda``: None times on the CPU's wall clock; a CUDA device (``torch.device``
    or index) times with CUDA events on that device.
    """
    if cuda is None:
        _warm_up(fn, warmup_s, warmup_iters, progress)
        samples_ns = _cpu_samples(fn, inner, min_time_s, min_iters, max_iters, progress)
    else:
        samples_ns = _cuda_samples(fn, cuda, inner, min_time_s, min_iters, max_iters,
                                   warmup_s, warmup_iters, progress)
    scale = 1e-9 / inner
    return [ns * scale for ns in samples_ns]


def _warm_up(
    fn: Callable[[], Any], warmup_s: float, warmup_iters: int, progress: ProgressFn | None
) -> None:
    clock = time.perf_counter_ns
    start = clock()
    deadline = start + int(warmup_s * 1e9)
    done = 0
    while done < warmup_iters or clock() < deadline:
        fn()
        done += 1
    if progress is not None:
        progress("warmup", done, (clock() - start) * 1e-9)


def _cpu_samples(
    fn: Callable[[], Any],
    inner: int,
    min_time_s: float,
    min_iters: int,
    max_iters: int | None,
    progress: ProgressFn | None,
) -> list[int]:
    clock = time.perf_counter_ns
    samples: list[int] = []
    append = samples.append  # bound once: the loop does nothing but call, read the clock, append
    cap = max_iters if max_iters is not None else -1
    start = clock()
    deadline = start + int(min_time_s * 1e9)
    next_report = start + _PROGRESS_PERIOD_NS
    n = 0
    repeat = range(inner)
    while True:
        if inner == 1:  # the benchmark's case: no inner loop between the clock reads
            t0 = clock()
            fn()
            t1 = clock()
        else:
            t0 = clock()
            for _ in repeat:
                fn()
            t1 = clock()
        append(t1 - t0)
        n += 1
        if n == cap or (n >= min_iters and t1 >= deadline):
            break
        if progress is not None and t1 >= next_report:
            progress("timed", n, (t1 - start) * 1e-9)
            next_report = t1 + _PROGRESS_PERIOD_NS
    if progress is not None:
        progress("timed", n, (clock() - start) * 1e-9)
    return samples


def _cuda_samples(
    fn: Callable[[], Any],
    device: Any,
    inner: int,
    min_time_s: float,
    min_iters: int,
    max_iters: int | None,
    warmup_s: float,
    warmup_iters: int,
    progress: ProgressFn | None,
) -> list[int]:
    import torch  # only on this path: CPU timing never imports torch

    if not torch.cuda.is_available():
        raise UserInputError("device 'cuda' requested but torch sees no CUDA device; use --device cpu")
    dev = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    # The events and the work must be on the same device: record on the chosen one.
    with torch.cuda.device(dev):
        _warm_up(fn, warmup_s, warmup_iters, progress)
        torch.cuda.synchronize()
        begin = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        clock = time.perf_counter_ns
        samples: list[int] = []
        append = samples.append
        cap = max_iters if max_iters is not None else -1
        start = clock()
        deadline = start + int(min_time_s * 1e9)
        next_report = start + _PROGRESS_PERIOD_NS
        n = 0
        repeat = range(inner)
        while True:
            begin.record()
            for _ in repeat:
                fn()
            end.record()
            # Synchronise each sample: the pair of events is reused, and the wall-clock
            # deadline must track the device, not how far ahead the host has queued.
            end.synchronize()
            append(round(begin.elapsed_time(end) * 1e6))  # ms -> ns
            n += 1
            now = clock()
            if n == cap or (n >= min_iters and now >= deadline):
                break
            if progress is not None and now >= next_report:
                progress("timed", n, (now - start) * 1e-9)
                next_report = now + _PROGRESS_PERIOD_NS
        if progress is not None:
            progress("timed", n, (clock() - start) * 1e-9)
    return samples
