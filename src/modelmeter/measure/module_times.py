"""Measured time per module: forward pre- and post-hooks around each chosen module (layer 3).

The whole-model latency (`measure.bench`) is timed with no hooks. This is a
*separate* pass, run after it: a forward pre-hook and a forward hook on each
chosen module read the clock when the module's `forward` starts and ends, and
a module called several times in one forward pass (a shared activation, a
module applied per layer) adds its calls up. After one warm-up pass, `repeats`
passes are timed and each module's figure is the **median per pass**. Each
hooked pass follows one without hooks (`unhooked_latency_s`, their median), so
what the hooks cost the whole pass is measured under the same load.

The clock: `time.perf_counter_ns` on the CPU; on CUDA each hook first
synchronises the device, so a module's interval covers its kernels rather
than their launch. That synchronisation removes the overlap of host and
device between modules, so on a GPU the per-module figures add up to more
than the unhooked latency.

Honesty about the hooks' own cost: a module's interval includes the hooks of
every timed module inside it (their Python call and clock reads), and the
root's includes all of them. `hook_overhead_s` is measured here (a pair of the
same hooks on an `nn.Identity`, timed with and without them) and each row
says how many hooked calls ran inside it, so `hooked_calls_inside x
hook_overhead_s` estimates what the hooks added; the figures themselves are
left as measured, never corrected. `hooked_latency_s` is the root's time
under the hooks, to put beside `unhooked_latency_s`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..hardware.timing import iqr_ratio, time_calls

__all__ = ["ModuleTime", "ModuleTimes", "module_times_section", "time_modules"]

METHOD = ("measured: forward pre/post hooks on each module to the report's depth, in a separate "
          "pass after the unhooked timing; median per forward pass over the repeats (calls of one "
          "module in a pass add up); perf_counter on cpu, device synchronised at each hook on cuda; "
          "each figure includes the hooks' own overhead (hook_overhead_s per hooked call inside it)")


@dataclass(frozen=True)
class ModuleTime:
    path: str  # '' = the model itself
    calls: int  # calls per forward pass
    latency_s: float  # median per pass
    spread: float  # IQR / median of the passes
    hooked_calls_inside: int  # calls of other timed modules inside it, per pass


@dataclass(frozen=True)
class ModuleTimes:
    modules: tuple[ModuleTime, ...]  # in the order asked for; modules never called are left out
    repeats: int
    hook_overhead_s: float  # added by one hooked call (pre- + post-hook), measured
    device: str
    missing: tuple[str, ...] = ()  # asked for, but not a submodule of the model
    unhooked_latency_s: float | None = None  # median of the passes without hooks, interleaved

    def by_path(self) -> dict[str, ModuleTime]:
        return {m.path: m for m in self.modules}

    @property
    def hooked_latency_s(self) -> float | None:
        """The root's median under the hooks (None when the root was not timed)."""
        root = self.by_path().get("")
        return root.latency_s if root is not None else None


def _hooks(path: str, clock: Callable[[], int], sync: Callable[[], None] | None,
           totals: dict[str, int], calls: dict[str, int], open_: list[str],
           inside: dict[str, int]) -> tuple[Callable[..., None], Callable[..., None]]:
    """A (pre, post) hook pair accumulating `path`'s nanoseconds and calls in this pass."""
    starts: list[int] = []  # a stack: a module may run inside itself

    def pre(_module: Any, _args: Any) -> None:
        for outer in open_:  # every timed module still running holds this call inside it
            inside[outer] += 1
        open_.append(path)
        if sync is not None:
            sync()
        starts.append(clock())

    def post(_module: Any, _args: Any, _out: Any) -> None:
        if sync is not None:
            sync()
        end = clock()
        if starts:
            totals[path] += end - starts.pop()
            calls[path] += 1
        if open_ and open_[-1] == path:
            open_.pop()

    return pre, post


def time_modules(module: Any, call: Callable[[], Any], paths: Sequence[str], *, device: str = "cpu",
                 repeats: int = 5, warmup: int = 1) -> ModuleTimes:
    """Time `call()` (one forward pass of `module`) with hooks on the submodules named by `paths`.

    `paths` are `named_modules()` names ('' = `module` itself). The hooks are removed on return,
    an exception included.
    """
    import torch

    named = dict(module.named_modules())
    targets = [(p, named[p]) for p in dict.fromkeys(paths) if p in named]
    missing = tuple(p for p in paths if p not in named)
    cuda = device != "cpu"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else None
    clock = time.perf_counter_ns
    totals = {p: 0 for p, _ in targets}
    calls = {p: 0 for p, _ in targets}
    inside = {p: 0 for p, _ in targets}
    open_: list[str] = []
    pairs = [(m, *_hooks(p, clock, sync, totals, calls, open_, inside)) for p, m in targets]
    handles: list[Any] = []

    def attach() -> None:
        for m, pre, post in pairs:
            handles.append(m.register_forward_pre_hook(pre))
            handles.append(m.register_forward_hook(post))

    def detach() -> None:
        while handles:
            handles.pop().remove()

    def whole() -> float:
        if sync is not None:
            sync()
        t0 = clock()
        call()
        if sync is not None:
            sync()
        return (clock() - t0) * 1e-9

    samples: dict[str, list[float]] = {p: [] for p, _ in targets}
    plain: list[float] = []
    per_pass_calls: dict[str, int] = {}
    per_pass_inside: dict[str, int] = {}
    try:
        attach()
        for _ in range(warmup):
            call()
        for _ in range(max(1, repeats)):
            # A pass without hooks, then one with them: the same conditions for both, so
            # what the hooks cost is not confused with the machine's load changing.
            detach()
            plain.append(whole())
            attach()
            for p in totals:
                totals[p] = calls[p] = inside[p] = 0
            open_.clear()
            whole()
            for p in totals:
                samples[p].append(totals[p] * 1e-9)
            per_pass_calls, per_pass_inside = dict(calls), dict(inside)
    finally:
        detach()
    rows = tuple(
        ModuleTime(p, per_pass_calls.get(p, 0), statistics.median(samples[p]), iqr_ratio(samples[p]),
                   per_pass_inside.get(p, 0))
        for p, _ in targets if per_pass_calls.get(p, 0) > 0
    )
    return ModuleTimes(rows, max(1, repeats), hook_overhead(device), device, missing,
                       unhooked_latency_s=statistics.median(plain))


def hook_overhead(device: str = "cpu") -> float:
    """Seconds one hooked module call adds: an `nn.Identity` timed with and without a hook pair."""
    import torch

    ident = torch.nn.Identity()
    x = torch.zeros(1, device=device)
    cuda = device != "cpu"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else None
    counters: dict[str, int] = {"x": 0}

    def median(fn: Callable[[], Any]) -> float:
        return statistics.median(time_calls(fn, inner=200, warmup_iters=1, min_iters=5, max_iters=5))

    plain = median(lambda: ident(x))
    pre, post = _hooks("x", time.perf_counter_ns, sync, counters, dict(counters), [], {})
    handles = [ident.register_forward_pre_hook(pre), ident.register_forward_hook(post)]
    try:
        hooked = median(lambda: ident(x))
    finally:
        for h in handles:
            h.remove()
    return max(0.0, hooked - plain)


def module_times_section(times: ModuleTimes, depths: dict[str, int] | None = None) -> dict[str, Any]:
    """The `measured.module_timing` section: how the per-module figures were taken, and the rows."""
    hooked, plain = times.hooked_latency_s, times.unhooked_latency_s
    return {
        "device": times.device,
        "repeats": times.repeats,
        "hook_overhead_s": times.hook_overhead_s,
        "hooked_latency_s": hooked,
        "unhooked_latency_s": plain,
        # What the hooks cost the whole pass: hooked root / unhooked, passes interleaved.
        "hook_inflation": hooked / plain - 1 if hooked is not None and plain else None,
        "modules": [
            {"path": m.path, **({"depth": depths[m.path]} if depths and m.path in depths else {}),
             "calls": m.calls, "latency_s": m.latency_s, "spread": m.spread,
             "hooked_calls_inside": m.hooked_calls_inside,
             "hook_overhead_estimate_s": m.hooked_calls_inside * times.hook_overhead_s}
            for m in times.modules
        ],
        "missing": list(times.missing),
        "method": METHOD,
    }
