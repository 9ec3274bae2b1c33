"""Counting results (layer 0): plain dataclasses in base units."""

from __future__ import annotations

from dataclasses import dataclass

from .precision import QuantLayout, WeightTensor


@dataclass(frozen=True, slots=True)
class OpCount:
    """What one op event costs."""

    index: int
    op: str
    module: str
    phase: str
    category: str  # 'contraction' | 'other' | 'data' | 'view' | 'uncounted'
    macs: int
    other_flops: int
    bytes_read: int
    bytes_written: int
    dtype: str  # dtype of the op's first floating input (its compute precision)
    param_bytes_read: int  # part of bytes_read that is parameters/buffers

    @property
    def flops(self) -> int:
        return 2 * self.macs


@dataclass(frozen=True, slots=True)
class ModuleCounts:
    """One module, inclusive of its submodules (own_* = ops/params directly in it)."""

    path: str
    type: str
    depth: int
    calls: int
    params: int
    own_params: int
    param_bytes: int
    macs: int
    other_flops: int
    bytes_read: int
    bytes_written: int
    input_bytes: int
    output_bytes: int
    own_macs: int = 0
    own_other_flops: int = 0

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def seed_bytes(self) -> int:
        """The seed's module-level traffic: parameters + input + output activations."""
        return self.param_bytes + self.input_bytes + self.output_bytes


@dataclass(frozen=True, slots=True)
class CountTotals:
    params: int
    trainable_params: int
    buffers: int
    buffer_bytes: int
    param_bytes: float  # at the requested precision (may be fractional bits -> bytes)
    param_scale_bytes: float  # quantisation scales, included in param_bytes
    macs: int
    other_flops: int
    bytes_read: int
    bytes_written: int

    @property
    def flops(self) -> int:
        return 2 * self.macs


@dataclass(frozen=True)
class Counts:
    totals: CountTotals
    modules: tuple[ModuleCounts, ...]
    ops: tuple[OpCount, ...]
    uncounted_ops: tuple[tuple[str, int], ...]  # (op, calls) with arithmetic but no formula
    # The weight-only layout of a quantised what-if precision (None: no quantised precision).
    quantization: QuantLayout | None = None
    # Every parameter, classified for that layout (empty for hand-made counts).
    weights: tuple[WeightTensor, ...] = ()

    @property
    def coverage(self) -> float:
        """Share of ops that do arithmetic and have a formula (1.0 = everything counted)."""
        arithmetic = sum(1 for o in self.ops if o.category in ("contraction", "other", "uncounted"))
        missing = sum(n for _, n in self.uncounted_ops)
        return 1.0 if arithmetic == 0 else 1 - missing / arithmetic
