"""The formula registry: aten op -> MACs of one call (layer 1, pure).

Formulas are pure functions of the recorded `OpEvent` (shapes and scalar
arguments), registered by decorator; registering an op twice is refused so
two formulas can never disagree silently. Users can add their own with
`register_macs("aten.my_op")`.
"""

from __future__ import annotations

from collections.abc import Callable

from ..core.events import OpEvent

MacsFormula = Callable[[OpEvent], int]

_MACS: dict[str, MacsFormula] = {}


def register_macs(*ops: str) -> Callable[[MacsFormula], MacsFormula]:
    """Register a MACs formula for aten overload packets such as 'aten.mm'."""

    def decorate(fn: MacsFormula) -> MacsFormula:
        for op in ops:
            if op in _MACS:
                raise ValueError(f"a MACs formula for {op} is already registered")
            _MACS[op] = fn
        return fn

    return decorate


def macs_formula(packet: str) -> MacsFormula | None:
    return _MACS.get(packet)


def registered_ops() -> tuple[str, ...]:
    return tuple(sorted(_MACS))
