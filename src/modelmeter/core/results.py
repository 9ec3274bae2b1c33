"""Counting results (layer 0): plain dataclasses in base units."""

from __future__ import annotations

from dataclasses import dataclass


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
    experts: int = 0  # a mixture-of-experts group: how many experts it stacks (0: not one)
    top_k: int = 0  # experts each token is routed to

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
    # What one token uses: everything but the routed experts it is not sent to (= params when dense).
    active_params: int | None = None
    # active_params less the tables only looked up (input embeddings): a token reads one row.
    active_params_without_embeddings: int | None = None

    @property
    def flops(self) -> int:
        return 2 * self.macs


@dataclass(frozen=True)
class Counts:
    totals: CountTotals
    modules: tuple[ModuleCounts, ...]
    ops: tuple[OpCount, ...]
    uncounted_ops: tuple[tuple[str, int], ...]  # (op, calls) with arithmetic but no formula
    # How routed experts were costed: 'balanced (assumed on meta)', 'as the router chose
    # (real tensors)', or None for a model without mixture-of-experts layers.
    routing: str | None = None

    @property
    def coverage(self) -> float:
        """Share of ops that do arithmetic and have a formula (1.0 = everything counted)."""
        arithmetic = sum(1 for o in self.ops if o.category in ("contraction", "other", "uncounted"))
        missing = sum(n for _, n in self.uncounted_ops)
        return 1.0 if arithmetic == 0 else 1 - missing / arithmetic
