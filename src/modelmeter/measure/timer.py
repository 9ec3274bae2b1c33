"""Wall-clock latency of a callable, with warm-up and adaptive stopping (layer 3).

Method, in order:

1. **Warm-up** runs the callable until *both* ``warmup_s`` seconds have passed
   and ``warmup_iters`` calls were made: the first calls pay for lazy
   initialisation, allocator growth, kernel selection and cold caches.
2. **Timed iterations** run until *both* ``min_time_s`` seconds of wall time
   have passed and ``min_iters`` calls were timed (``max_iters`` caps the
   count). Each call is timed on its own, so the raw samples are kept and the
   spread is visible.
3. On CPU each call is bracketed by ``time.perf_counter_ns`` (monotonic,
   integer nanoseconds, no float allocation on the hot path). On CUDA one
   reused pair of ``torch.cuda.Event(enable_timing=True)`` brackets the call
   and the end event is synchronised before the next call, so each sample is
   the device time of one call and kernels never pile up in the queue.

The timer does not change thread settings; it records ``torch.get_num_threads``
in ``conditions`` so a user can compare like with like.

Quality flag: a measurement is ``noisy`` when the interquartile range exceeds
10 % of the median (the threshold ``torch.utils.benchmark`` warns at), when the
tail is long (p99 > 1.5 × p50: a scheduler hiccup, a GC pause, frequency
scaling), when the median of the first half of the samples (in time order) and
that of the second half differ by more than 5 % (the machine's speed changed
during the run: a shared VM's neighbours, thermal or power limits — the kind
of drift that makes two runs disagree although each looks tight), or when
fewer than 3 samples exist (spread cannot be judged).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import UserInputError
from ..hardware.detect import cpu_name

# Thresholds of the quality flag (see the module docstring).
IQR_NOISE_RATIO = 0.10
TAIL_NOISE_RATIO = 1.5
DRIFT_NOISE_RATIO = 0.05  # the run-to-run repeatability goal of `modelmeter bench`
MIN_SAMPLES_TO_JUDGE = 3
MIN_SAMPLES_FOR_DRIFT = 10  # five per half: fewer and a half's median is itself noise
# The progress callback is called at most this often, so it never shows up in the samples.
_PROGRESS_PERIOD_NS = 100_000_000

ProgressFn = Callable[[str, int, float], None]
"""progress(phase, iterations_done, elapsed_s); phase is 'warmup' or 'timed'."""


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default 'linear' method)."""
    n = len(sorted_values)
    if n == 1:
        return sorted_values[0]
    pos = (n - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


@dataclass(frozen=True)
class LatencyStats:
    """Raw per-call samples, statistics derived from them, and a quality flag."""

    samples_s: tuple[float, ...]
    iterations: int
    min_s: float
    mean_s: float
    std_s: float
    p25_s: float
    p50_s: float
    p75_s: float
    p90_s: float
    p99_s: float
    noisy: bool
    noise_reason: str | None
    # What was measured and under which conditions (device, threads, torch version, dtype, batch).
    conditions: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_samples(
        cls, samples_s: Sequence[float], conditions: Mapping[str, Any] | None = None
    ) -> LatencyStats:
        if not samples_s:
            raise UserInputError("latency statistics need at least one sample")
        ordered = sorted(samples_s)
        n = len(ordered)
        mean = math.fsum(ordered) / n
        # Sample standard deviation (n - 1); zero for a single sample rather than undefined.
        var = math.fsum((x - mean) ** 2 for x in ordered) / (n - 1) if n > 1 else 0.0
        p25, p50, p75 = (_percentile(ordered, q) for q in (0.25, 0.50, 0.75))
        p90, p99 = _percentile(ordered, 0.90), _percentile(ordered, 0.99)
        noisy, reason = _judge_noise(n, p25, p50, p75, p99, _drift(samples_s))
        return cls(
            samples_s=tuple(samples_s),
            iterations=n,
            min_s=ordered[0],
            mean_s=mean,
            std_s=math.sqrt(var),
            p25_s=p25,
            p50_s=p50,
            p75_s=p75,
            p90_s=p90,
            p99_s=p99,
            noisy=noisy,
            noise_reason=reason,
            conditions=dict(conditions or {}),
        )

    @property
    def median_s(self) -> float:
        return self.p50_s

    @property
    def iqr_s(self) -> float:
        return self.p75_s - self.p25_s

    def to_dict(self) -> dict[str, Any]:
        """Statistics in seconds (base units), without the raw samples."""
        return {
            "min": self.min_s,
            "mean": self.mean_s,
            "std": self.std_s,
            "p50": self.p50_s,
            "p90": self.p90_s,
            "p99": self.p99_s,
            "iterations": self.iterations,
            "noisy": self.noisy,
            "noise_reason": self.noise_reason,
        }


def _drift(samples_in_time_order: Sequence[float]) -> float | None:
    """Relative difference between the medians of the first and the second half."""
    n = len(samples_in_time_order)
    if n < MIN_SAMPLES_FOR_DRIFT:
        return None
    first = sorted(samples_in_time_order[: n // 2])
    second = sorted(samples_in_time_order[n // 2:])
    m1, m2 = _percentile(first, 0.5), _percentile(second, 0.5)
    return abs(m2 - m1) / min(m1, m2) if min(m1, m2) > 0 else None


def _judge_noise(
    n: int, p25: float, p50: float, p75: float, p99: float, drift: float | None = None
) -> tuple[bool, str | None]:
    if n < MIN_SAMPLES_TO_JUDGE:
        return True, f"only {n} sample(s): the spread cannot be judged"
    if p50 <= 0:
        return True, "median is zero: the timer resolution is coarser than the call"
    iqr_ratio = (p75 - p25) / p50
    if iqr_ratio > IQR_NOISE_RATIO:
        return True, f"IQR is {iqr_ratio:.0%} of the median (> {IQR_NOISE_RATIO:.0%})"
    if p99 / p50 > TAIL_NOISE_RATIO:
        return True, f"p99 is {p99 / p50:.2f}x the median (> {TAIL_NOISE_RATIO}x): long tail"
    if drift is not None and drift > DRIFT_NOISE_RATIO:
        return True, (f"the median moved {drift:.1%} between the first and second half of the run "
                      f"(> {DRIFT_NOISE_RATIO:.0%}): the machine's speed changed while it ran")
    return False, None


def parse_device(device: str) -> tuple[str, int | None]:
    """'cpu' -> ('cpu', None); 'cuda' / 'cuda:1' -> ('cuda', index or None)."""
    text = device.strip().lower()
    if text == "cpu":
        return "cpu", None
    if text == "cuda":
        return "cuda", None
    if text.startswith("cuda:") and text[5:].isdigit():
        return "cuda", int(text[5:])
    raise UserInputError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'")


def default_conditions(device: str) -> dict[str, Any]:
    """What a latency depends on besides the model: device name, threads, torch version."""
    import torch  # lazy: keeps `import modelmeter.measure` light

    kind, index = parse_device(device)
    if kind == "cuda":
        name = torch.cuda.get_device_name(index if index is not None else torch.cuda.current_device())
    else:
        name = cpu_name()
    return {
        "device": device,
        "device_name": name,
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
    }


def check_timing(
    min_time_s: float, min_iters: int, warmup_s: float, warmup_iters: int, max_iters: int | None
) -> None:
    """Reject timing options that cannot work; callers run it before building anything."""
    if not min_time_s > 0:  # also rejects NaN
        raise UserInputError(f"min_time_s must be > 0 seconds, got {min_time_s}")
    if min_iters < 1:
        raise UserInputError(f"min_iters must be >= 1, got {min_iters}")
    if not warmup_s >= 0:
        raise UserInputError(f"warmup_s must be >= 0 seconds, got {warmup_s}")
    if warmup_iters < 0:
        raise UserInputError(f"warmup_iters must be >= 0, got {warmup_iters}")
    if max_iters is not None and max_iters < min_iters:
        raise UserInputError(f"max_iters ({max_iters}) must be >= min_iters ({min_iters})")


def measure_latency(
    fn: Callable[[], Any],
    *,
    device: str = "cpu",
    min_time_s: float = 2.0,
    min_iters: int = 10,
    warmup_s: float = 0.5,
    warmup_iters: int = 3,
    max_iters: int | None = None,
    progress: ProgressFn | None = None,
    conditions: Mapping[str, Any] | None = None,
) -> LatencyStats:
    """Time ``fn()`` repeatedly; see the module docstring for the method.

    ``conditions`` (dtype, batch, model name, ...) is merged over the detected
    device/threads/torch-version conditions and carried in the result.
    """
    check_timing(min_time_s, min_iters, warmup_s, warmup_iters, max_iters)
    kind, index = parse_device(device)
    merged = default_conditions(device)
    merged.update(conditions or {})
    if kind == "cuda":
        samples_ns = _run_cuda(fn, index, min_time_s, min_iters, warmup_s, warmup_iters, max_iters, progress)
    else:
        samples_ns = _run_cpu(fn, min_time_s, min_iters, warmup_s, warmup_iters, max_iters, progress)
    return LatencyStats.from_samples([ns * 1e-9 for ns in samples_ns], merged)


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


def _run_cpu(
    fn: Callable[[], Any],
    min_time_s: float,
    min_iters: int,
    warmup_s: float,
    warmup_iters: int,
    max_iters: int | None,
    progress: ProgressFn | None,
) -> list[int]:
    _warm_up(fn, warmup_s, warmup_iters, progress)
    clock = time.perf_counter_ns
    samples: list[int] = []
    append = samples.append  # bound once: the loop does nothing but call, read the clock, append
    cap = max_iters if max_iters is not None else -1
    start = clock()
    deadline = start + int(min_time_s * 1e9)
    next_report = start + _PROGRESS_PERIOD_NS
    n = 0
    while True:
        t0 = clock()
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


def _run_cuda(
    fn: Callable[[], Any],
    index: int | None,
    min_time_s: float,
    min_iters: int,
    warmup_s: float,
    warmup_iters: int,
    max_iters: int | None,
    progress: ProgressFn | None,
) -> list[int]:
    import torch

    if not torch.cuda.is_available():
        raise UserInputError("device 'cuda' requested but torch sees no CUDA device; use --device cpu")
    dev = torch.device("cuda", index) if index is not None else torch.device("cuda")
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
        while True:
            begin.record()
            fn()
            end.record()
            # Synchronise each call: the pair of events is reused, and the wall-clock
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
