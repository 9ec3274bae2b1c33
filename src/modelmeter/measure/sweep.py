"""Throughput sweep over batch sizes (layer 3).

For each batch size: build the call (``make_call(batch)``), run it once under
:func:`~modelmeter.measure.allocator.resident_tracks_live_memory` and
:class:`~modelmeter.measure.memory.PeakMemory` (this first call is also the
start of the warm-up, and keeps the memory probe out of the timed loop), then
time it with :func:`~modelmeter.measure.timer.measure_latency`. Throughput is
``batch / p50``: the median is robust to the odd slow call.

Stopping rules, each visible in the result:

* out of memory (``torch.cuda.OutOfMemoryError``, or a ``RuntimeError`` whose
  message says it could not allocate) — the row is recorded with status
  ``'oom'``, larger batches are skipped, ``largest_batch_that_fit`` says how far
  it got;
* ``KeyboardInterrupt`` (Ctrl-C) — the batch being measured is recorded with
  status ``'interrupted'``, finished rows are kept, ``interrupted`` is True.
  The interrupt is not swallowed silently: the caller sees it in the result.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from ..core.errors import UserInputError
from ..core.lists import parse_batch_sizes
from .allocator import resident_tracks_live_memory
from .memory import MemoryMeasurement, PeakMemory
from .timer import LatencyStats, ProgressFn, check_timing, measure_latency, parse_device

RowStatus = Literal["ok", "oom", "interrupted"]

# Messages of allocation failures that are not torch.cuda.OutOfMemoryError
# (older torch, CPU allocator, cuBLAS/cuDNN workspace allocation).
_OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory")


@dataclass(frozen=True)
class SweepRow:
    batch: int
    status: RowStatus
    latency: LatencyStats | None
    throughput_per_s: float | None
    # Peak memory the call needed above what was resident before it (see memory.py).
    peak_memory_bytes: int | None
    memory: MemoryMeasurement | None = None
    error: str | None = None


class BatchRow(Protocol):
    """What the summaries below read of a row (a `SweepRow`, or a benchmark row around one)."""

    @property
    def batch(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def throughput_per_s(self) -> float | None: ...


Row = TypeVar("Row", bound=BatchRow)


def largest_batch_that_fit(rows: Sequence[BatchRow]) -> int | None:
    """The largest batch whose row finished (None when none did)."""
    fitted = [r.batch for r in rows if r.status == "ok"]
    return max(fitted) if fitted else None


def best_throughput(rows: Sequence[Row]) -> Row | None:
    """The finished row with the highest throughput (None when none finished)."""
    ok = [r for r in rows if r.status == "ok" and r.throughput_per_s is not None]
    return max(ok, key=lambda r: r.throughput_per_s or 0.0) if ok else None


@dataclass(frozen=True)
class SweepResult:
    rows: tuple[SweepRow, ...]
    device: str
    interrupted: bool
    oom: bool

    @property
    def largest_batch_that_fit(self) -> int | None:
        return largest_batch_that_fit(self.rows)

    @property
    def best_batch(self) -> SweepRow | None:
        """The finished row with the highest throughput (None when none finished)."""
        return best_throughput(self.rows)


def parse_batches(text: str) -> list[int]:
    """'1,8,32' -> [1, 8, 32] (`core.lists.parse_batch_sizes`), sorted ascending: the OOM rule assumes growth."""
    return sorted(parse_batch_sizes(text))


def is_oom_error(exc: BaseException) -> bool:
    """True for an allocation failure, whichever layer reported it."""
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):  # torch without the OOM class (< 1.13)
        pass
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _OOM_MARKERS)


def _release_memory(kind: str) -> None:
    # Drop the failed batch's tensors so the caller can go on using the device.
    gc.collect()
    if kind == "cuda":
        import torch

        torch.cuda.empty_cache()


def throughput_sweep(
    make_call: Callable[[int], Callable[[], Any]],
    batches: Sequence[int],
    *,
    device: str = "cpu",
    min_time_s: float = 2.0,
    min_iters: int = 10,
    warmup_s: float = 0.5,
    warmup_iters: int = 3,
    max_iters: int | None = None,
    measure_memory: bool = True,
    progress: ProgressFn | None = None,
    on_row: Callable[[SweepRow], None] | None = None,
    conditions: Mapping[str, Any] | None = None,
) -> SweepResult:
    """Measure latency, throughput and peak memory at each batch size, in order."""
    if not batches:
        raise UserInputError("the sweep needs at least one batch size")
    for b in batches:
        if not isinstance(b, int) or isinstance(b, bool) or b <= 0:
            raise UserInputError(f"batch sizes must be positive integers, got {b!r}")
    check_timing(min_time_s, min_iters, warmup_s, warmup_iters, max_iters)
    kind, _ = parse_device(device)
    rows: list[SweepRow] = []
    interrupted = oom = False

    for batch in batches:
        try:
            row = _measure_row(
                make_call, batch, device, measure_memory,
                dict(min_time_s=min_time_s, min_iters=min_iters, warmup_s=warmup_s,
                     warmup_iters=warmup_iters, max_iters=max_iters, progress=progress),
                {**(conditions or {}), "batch": batch},
            )
        except KeyboardInterrupt:
            rows.append(SweepRow(batch, "interrupted", None, None, None, error="KeyboardInterrupt"))
            interrupted = True
        except (RuntimeError, MemoryError) as exc:
            if not is_oom_error(exc):
                raise
            _release_memory(kind)
            rows.append(SweepRow(batch, "oom", None, None, None, error=str(exc).splitlines()[0]))
            oom = True
        else:
            rows.append(row)
        if on_row is not None:
            on_row(rows[-1])
        if interrupted or oom:
            break

    return SweepResult(rows=tuple(rows), device=device, interrupted=interrupted, oom=oom)


def _measure_row(
    make_call: Callable[[int], Callable[[], Any]],
    batch: int,
    device: str,
    measure_memory: bool,
    timer_kwargs: dict[str, Any],
    conditions: dict[str, Any],
) -> SweepRow:
    call = make_call(batch)
    memory: MemoryMeasurement | None = None
    if measure_memory:
        with resident_tracks_live_memory(), PeakMemory(device) as probe:
            call()
        memory = probe.result
    stats: LatencyStats = measure_latency(call, device=device, conditions=conditions, **timer_kwargs)
    throughput = batch / stats.p50_s if stats.p50_s > 0 else None
    return SweepRow(
        batch=batch,
        status="ok",
        latency=stats,
        throughput_per_s=throughput,
        peak_memory_bytes=memory.growth_bytes if memory is not None else None,
        memory=memory,
    )
