"""How much of a device's memory a real runtime can use (layer 2).

A GPU's datasheet capacity is not what a model gets: the CUDA context takes its
share before the first tensor and the caching allocator fragments the rest. The
rule and its sourced figures live in `specs.json` (`runtime_memory_headroom`):
headroom = max(reserve fraction x capacity, CUDA context), on GPUs only (a CPU's
RAM is shared with everything else and is not planned here). Every fit test
(`llm` fits and max batch, `plan`) compares against the usable figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .specs import Hardware, _raw


@dataclass(frozen=True)
class MemoryBudget:
    """A device's memory, the headroom the runtime keeps, and what is left for the model."""

    device_bytes: float
    headroom_bytes: float
    reserve_fraction: float
    cuda_context_bytes: float

    @property
    def usable_bytes(self) -> float:
        return self.device_bytes - self.headroom_bytes

    def to_dict(self) -> dict[str, Any]:
        rule = _rule()
        return {"device_bytes": self.device_bytes, "headroom_bytes": self.headroom_bytes,
                "usable_bytes": self.usable_bytes, "reserve_fraction": self.reserve_fraction,
                "cuda_context_bytes": self.cuda_context_bytes, "rule": rule["rule"],
                "sources": [s["url"] for s in rule["sources"].values()]}


def _rule() -> dict[str, Any]:
    rule: dict[str, Any] = _raw()["runtime_memory_headroom"]
    return rule


def memory_budget(hw: Hardware) -> MemoryBudget | None:
    """`hw`'s budget; None when its memory is unknown. No headroom where the rule does not apply."""
    if not hw.memory_bytes:
        return None
    rule = _rule()
    capacity = float(hw.memory_bytes)
    if hw.kind not in rule["applies_to"]:
        return MemoryBudget(capacity, 0.0, 0.0, 0.0)
    fraction, context = float(rule["reserve_fraction"]), float(rule["cuda_context_bytes"])
    return MemoryBudget(capacity, max(fraction * capacity, context), fraction, context)


def usable_memory_bytes(hw: Hardware) -> float | None:
    """What fits are tested against: the device's memory less the runtime's headroom."""
    budget = memory_budget(hw)
    return budget.usable_bytes if budget is not None else None


__all__ = ["MemoryBudget", "memory_budget", "usable_memory_bytes"]
