"""Build a module on the device asked for, with a CPU fallback for meta (layer 1).

Some constructors read tensor values: torchvision's RegNets compute their
stage widths with `torch.linspace(...).tolist()`, which meta tensors cannot
answer. Such a model is built once on the CPU (random init), checked against
the free memory *while* it allocates, then moved to the meta device, so the
trace is the same meta trace as for every other model. The report says which
way it was built (`LoadedModel.build`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..core.errors import UserInputError
from ..core.failures import first_line, is_out_of_memory, meta_limit
from ..core.units import format_bytes

BUILT_ON_META = "meta"
BUILT_ON_CPU = "cpu"
BUILT_ON_CPU_THEN_META = "cpu, then meta (construction needs real values)"

# Share of the free memory a fallback build may take: the module is moved to
# meta right after, but the machine must stay usable while it exists.
_BUDGET_SHARE = 0.75


def construct(make: Callable[[], Any], device: str, what: str) -> tuple[Any, str]:
    """`make()` under `torch.device(device)` -> (what it returned, how it was built).

    On meta, a constructor that needs real values is rebuilt on the CPU and its
    module moved to meta (`make` may return a module or `(module, example)`).
    Out-of-memory while building is a UserInputError that says what to do.
    """
    import torch

    if device != "meta":
        try:
            with torch.device(device):
                return make(), BUILT_ON_CPU
        except (MemoryError, RuntimeError) as exc:
            if not is_out_of_memory(exc):
                raise
            raise UserInputError(
                f"building {what} on {device} ran out of memory ({first_line(exc)}); count it on "
                "the meta device instead (--device meta, the default: no weights are allocated)"
            ) from exc
    try:
        with torch.device("meta"):
            return make(), BUILT_ON_META
    except Exception as exc:  # noqa: BLE001 - only a meta limit falls back; the rest re-raise
        limit = meta_limit(exc)
        if limit is None:
            raise
    made = _build_on_cpu(make, what, limit.what)
    return _moved_to_meta(made), BUILT_ON_CPU_THEN_META


def to_meta(module: Any) -> Any:
    """Move every parameter and buffer to meta in place, keeping tied weights tied.

    `module.to("meta")` makes a new Parameter per owning module (CPU and meta
    storages are not interchangeable), so a tied embedding would count twice.
    """
    import torch

    moved: dict[int, Any] = {}
    for sub in module.modules():
        for name, p in list(sub._parameters.items()):
            if p is not None and not p.is_meta:
                if id(p) not in moved:
                    moved[id(p)] = torch.nn.Parameter(p.detach().to("meta"), p.requires_grad)
                sub._parameters[name] = moved[id(p)]
        for name, b in list(sub._buffers.items()):
            if b is not None and not b.is_meta:
                if id(b) not in moved:
                    moved[id(b)] = b.to("meta")
                sub._buffers[name] = moved[id(b)]
    return module


def _moved_to_meta(made: Any) -> Any:
    import torch

    if isinstance(made, torch.nn.Module):
        return to_meta(made)
    if isinstance(made, tuple) and made and isinstance(made[0], torch.nn.Module):
        return (to_meta(made[0]), *made[1:])
    return made


def _build_on_cpu(make: Callable[[], Any], what: str, reason: str) -> Any:
    import torch

    from .allocguard import AllocationGuard, TooLarge

    budget = _memory_budget()
    cannot = f"{what} cannot be built on the meta device ({reason}), and building it on cpu first"
    try:
        with torch.device("cpu"), AllocationGuard(budget):
            return make()
    except TooLarge as exc:
        raise UserInputError(
            f"{cannot} would allocate over {format_bytes(exc.args[0])}, more than modelmeter "
            f"allows itself ({format_bytes(budget)}, {_BUDGET_SHARE:.0%} of the free memory); "
            "run it on a machine with more memory"
        ) from None
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        raise UserInputError(f"{cannot} ran out of memory ({first_line(exc)})") from exc


def _memory_budget() -> int | None:
    """Bytes a fallback build may allocate: a share of the available memory (None: unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(int(line.split()[1]) * 1024 * _BUDGET_SHARE)
    except (OSError, ValueError, IndexError):
        pass
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return int(free * _BUDGET_SHARE) if free > 0 else None
