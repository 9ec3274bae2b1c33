"""TEMP (dropped on merge): MACs of aten._grouped_mm, until the formulas branch adds its own."""

from __future__ import annotations

from math import prod

from ..core.events import OpEvent, TensorMeta
from .registry import register_macs


@register_macs("aten._grouped_mm")
def _grouped_mm_macs(event: OpEvent) -> int:
    a, b = event.args[0], event.args[1]
    if not isinstance(a, TensorMeta) or not isinstance(b, TensorMeta):
        raise TypeError("_grouped_mm: operands are not tensors")
    if len(a.shape) == 2 and len(b.shape) == 2:  # groups split the contracted dimension
        return a.shape[0] * a.shape[1] * b.shape[1]
    return prod(event.outputs[0].shape) * a.shape[-1]
