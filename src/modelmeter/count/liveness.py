"""Activation memory from the trace's liveness timeline (layer 1, pure).

A storage is allocated when an op first produces it and freed when eager
PyTorch let it go (`OpEvent.freed`, from weak references during the trace), so
the peak is what eager execution really holds, not a sum of layer outputs.
Views share their base's storage and are counted once. Parameters, buffers
and the model's inputs are the static part, reported beside the peak.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..core.events import ACTIVATION, BUFFER, GRADIENT, INPUT, PARAMETER, Trace

_STATIC = (PARAMETER, BUFFER, INPUT)


def _allocated_outputs(event):  # type: ignore[no-untyped-def]
    """Outputs that really allocate. Batch norm in eval mode returns empty mean/invstd
    tensors on CPU and CUDA, but its meta kernel gives them C elements each."""
    if event.packet == "aten.native_batch_norm" and len(event.args) > 5 and not event.args[5]:
        return event.outputs[:1]
    return event.outputs


@dataclass(frozen=True)
class LivenessPeak:
    peak_bytes: int  # live activation (and gradient) bytes at the peak
    static_bytes: int  # parameters + buffers + inputs, alive throughout
    index: int | None  # op index where the peak happens
    op: str | None
    module: str | None
    # Bytes live at the peak by the module whose op produced them.
    by_module: dict[str, int] = field(default_factory=dict)

    @property
    def peak_total_bytes(self) -> int:
        return self.peak_bytes + self.static_bytes


def static_bytes(trace: Trace) -> int:
    sizes: dict[int, int] = {}
    for record in (*trace.parameters, *trace.buffers):
        sizes[record.storage] = record.numel * record.itemsize
    for t in trace.inputs:
        sizes[t.storage] = t.storage_nbytes
    return sum(sizes.values())


def live_peak(trace: Trace, phases: tuple[str, ...] = ("forward",),
              count_from: str | None = None) -> LivenessPeak:
    """Peak of live activation/gradient bytes over the events of `phases`.

    The timeline always starts at the first event (tensors made in the forward
    are still alive in the backward); `count_from` restricts where the peak
    is looked for, e.g. 'backward' for the backward pass's own peak.
    """
    live: dict[int, tuple[int, str]] = {}  # storage -> (bytes, producing module)
    total = 0
    best = -1
    best_at: tuple[int, str, str] | None = None
    best_live: dict[int, tuple[int, str]] = {}
    for event in trace.events:
        if event.phase not in phases:
            continue
        for t in _allocated_outputs(event):
            if t.role in (ACTIVATION, GRADIENT) and t.storage not in live:
                live[t.storage] = (t.storage_nbytes, event.module)
                total += t.storage_nbytes
        if (count_from is None or event.phase == count_from) and total > best:
            best, best_at, best_live = total, (event.index, event.op, event.module), dict(live)
        for sid in event.freed:
            gone = live.pop(sid, None)
            if gone is not None:
                total -= gone[0]
    by_module: Counter[str] = Counter()
    for nbytes, module in best_live.values():
        by_module[module] += nbytes
    index, op, module = best_at if best_at else (None, None, None)
    return LivenessPeak(max(best, 0), static_bytes(trace), index, op, module, dict(by_module))


@dataclass(frozen=True)
class SavedTensors:
    total_bytes: int
    by_module: dict[str, int]  # own (the module whose op saved it)


def saved_for_backward(trace: Trace) -> SavedTensors:
    """Bytes autograd keeps for backward, one count per storage; weights excluded.

    Parameters and buffers saved by an op (a Linear keeps its weight) are not
    extra memory: they are the weights. The model's inputs, when saved, are.
    """
    weights = {r.storage for r in (*trace.parameters, *trace.buffers)}
    by_module: Counter[str] = Counter()
    for sid, nbytes, module in trace.saved_tensors:
        if sid not in weights:
            by_module[module] += nbytes
    return SavedTensors(sum(by_module.values()), dict(by_module))


def inclusive(by_module: dict[str, int], paths: list[str]) -> dict[str, int]:
    """Own figures per module summed up the module tree, for every path in `paths`."""
    out = dict.fromkeys(paths, 0)
    for path, value in by_module.items():
        while True:
            if path in out:
                out[path] += value
            if not path:
                break
            path = path.rpartition(".")[0]
    return out
