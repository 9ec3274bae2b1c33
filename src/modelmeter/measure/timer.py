"""Wall-clock latency of a callable, with warm-up and adaptive stopping (layer 3).

The clocks and the sampling loop are the package's one timing engine,
`modelmeter.hardware.timing` (calibration times through it too); its docstring
gives the method: warm-up until both ``warmup_s`` and ``warmup_iters`` are
met, then one sample per call until both ``min_time_s`` and ``min_iters``
are met (``max_iters`` caps the count), ``perf_counter_ns`` on CPU and a
reused pair of CUDA events on a GPU. This module adds the benchmark's
statistics and its quality flag. The names the engine defines
(``ProgressFn``) stay importable from here.

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
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import UserInputError
from ..core.units import percent_beyond
from ..hardware.detect import cpu_name
from ..hardware.timing import NOISY_IQR_RATIO, ProgressFn, percentile, time_calls

# Thresholds of the quality flag (see the module docstring).
IQR_NOISE_RATIO = NOISY_IQR_RATIO
TAIL_NOISE_RATIO = 1.5
DRIFT_NOISE_RATIO = 0.05  # the run-to-run repeatability goal of `modelmeter bench`
MIN_SAMPLES_TO_JUDGE = 3
MIN_SAMPLES_FOR_DRIFT = 10  # five per half: fewer and a half's median is itself noise

__all__ = [
    "LatencyStats", "ProgressFn", "check_timing", "default_conditions", "measure_latency",
    "parse_device",
]


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
        p25, p50, p75 = (percentile(ordered, q) for q in (0.25, 0.50, 0.75))
        p90, p99 = percentile(ordered, 0.90), percentile(ordered, 0.99)
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
    m1, m2 = percentile(first, 0.5), percentile(second, 0.5)
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
        shown, limit = percent_beyond(iqr_ratio, IQR_NOISE_RATIO)
        return True, f"IQR is {shown} of the median (> {limit})"
    if p99 / p50 > TAIL_NOISE_RATIO:
        return True, f"p99 is {p99 / p50:.2f}x the median (> {TAIL_NOISE_RATIO}x): long tail"
    if drift is not None and drift > DRIFT_NOISE_RATIO:
        shown, limit = percent_beyond(drift, DRIFT_NOISE_RATIO, decimals=1)
        return True, (f"the median moved {shown} between the first and second half of the run "
                      f"(> {limit}): the machine's speed changed while it ran")
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
    conditions = {
        "device": device,
        "device_name": name,
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
    }
    if kind == "cpu":
        conditions.update(load_conditions())
    return conditions


def load_conditions(loadavg: Callable[[], float | None] | None = None) -> dict[str, Any]:
    """The 1-minute load average and CPU count when timing started, and a sentence when it exceeded them.

    Two threads on two busy cores wait for each other at every parallel op: a latency
    measured then says more about the other programs than about the model.
    """
    from ..hardware.local import load_warning, system_load

    load = (loadavg or system_load)()
    cpus = os.cpu_count() or 1
    return {"load_average": load, "cpus": cpus, "load_warning": load_warning(load, cpus)}


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
    cuda: Any = None
    if kind == "cuda":
        import torch

        # Before the conditions, which ask torch for the device's name.
        if not torch.cuda.is_available():
            raise UserInputError("device 'cuda' requested but torch sees no CUDA device; use --device cpu")
        cuda = torch.device("cuda", index if index is not None else torch.cuda.current_device())
    merged = default_conditions(device)
    merged.update(conditions or {})
    samples_s = time_calls(fn, cuda=cuda, min_time_s=min_time_s, min_iters=min_iters,
                           max_iters=max_iters, warmup_s=warmup_s, warmup_iters=warmup_iters,
                           progress=progress)
    return LatencyStats.from_samples(samples_s, merged)
