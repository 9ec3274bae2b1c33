"""Deeply immutable JSON data, and the fresh mutable copy back (layer 0).

A `Report` is frozen, and so is what it holds: `freeze` turns every dict into a
read-only `MappingProxyType` over a dict nobody else holds and every list into a
tuple, so `report.totals["flops"] = 0` raises instead of changing a report other
code already read. `thaw` gives writers a plain dict/list copy (JSON has no
tuples, so every tuple becomes a list).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["freeze", "thaw"]


def freeze(value: Any) -> Any:
    """`value` with every mapping read-only and every list or tuple a tuple, all the way down."""
    if isinstance(value, Mapping):
        return MappingProxyType({key: freeze(item) for key, item in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(item) for item in value)
    return value


def thaw(value: Any) -> Any:
    """A fresh mutable copy: every mapping a dict, every list or tuple a list."""
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(item) for item in value]
    return value
