"""Counting results (layer 0): plain dataclasses in base units."""

from __future__ import annotations

from dataclasses import dataclass

from .precision import QuantLayout, WeightTensor

# OpCount.source: whose formula produced an op's figure.
SOURCE_OURS = "modelmeter"
SOURCE_PYTORCH = "pytorch"  # PyTorch's flop_registry, a fallback for ops we have no formula for


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
    # Whose formula counted it: 'modelmeter', 'pytorch' (PyTorch's flop_registry as a
    # fallback for an op modelmeter has no formula for), or '' (data, view, uncounted).
    source: str = ""
    # Uncounted ops only: a lower bound of their FLOPs from their shapes (one per
    # element of the largest tensor they read or write); 0 otherwise.
    estimated_flops: int = 0

    @property
    def flops(self) -> int:
        return 2 * self.macs


@dataclass(frozen=True, slots=True)
class ModuleCounts:
    """One module, inclusive of its submodules (own_params = parameters directly in it)."""

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
    experts: int = 0  # a mixture-of-experts group: how many experts it stacks (0: not one)
    top_k: int = 0  # experts each token is routed to
    # Its first call's tensors, as the trace recorded them (`ModuleRecord`): shapes and dtypes.
    input_shapes: tuple[tuple[int, ...], ...] = ()
    input_dtypes: tuple[str, ...] = ()
    output_shapes: tuple[tuple[int, ...], ...] = ()
    output_dtypes: tuple[str, ...] = ()

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def seed_bytes(self) -> int:
        """The seed's module-level traffic: parameters + input + output activations."""
        return self.param_bytes + self.input_bytes + self.output_bytes


@dataclass(frozen=True, slots=True)
class OperatorTotals:
    """One op kind summed over its calls (fvcore's `by_operator`, FlopCounterMode's per-op view)."""

    op: str  # 'aten.mm.default'
    category: str  # of its first call: 'contraction' | 'other' | 'data' | 'view' | 'uncounted'
    calls: int
    macs: int
    other_flops: int
    bytes_read: int
    bytes_written: int

    @property
    def flops(self) -> int:
        return 2 * self.macs


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
    # The weight-only layout of a quantised what-if precision (None: no quantised precision).
    quantization: QuantLayout | None = None
    # Every parameter, classified for that layout (empty for hand-made counts).
    weights: tuple[WeightTensor, ...] = ()
    # How routed experts were costed: 'balanced (assumed on meta)', 'as the router chose
    # (real tensors)', or None for a model without mixture-of-experts layers.
    routing: str | None = None

    @property
    def coverage(self) -> float:
        """The report's `coverage` key, kept for compatibility: the call coverage."""
        return self.call_coverage

    @property
    def call_coverage(self) -> float:
        """Share of op *calls* that do arithmetic and have a formula (1.0 = all of them)."""
        arithmetic = sum(1 for o in self.ops if o.category in ("contraction", "other", "uncounted"))
        missing = sum(n for _, n in self.uncounted_ops)
        return 1.0 if arithmetic == 0 else 1 - missing / arithmetic

    @property
    def uncounted_flops_estimate(self) -> int:
        """Lower bound of the FLOPs of the ops without a formula, from their shapes."""
        return sum(o.estimated_flops for o in self.ops if o.category == "uncounted")

    def uncounted_estimates(self) -> dict[str, int]:
        """Uncounted op -> the shape estimate of its FLOPs, summed over its calls."""
        out: dict[str, int] = {}
        for o in self.ops:
            if o.category == "uncounted":
                out[o.op] = out.get(o.op, 0) + o.estimated_flops
        return out

    @property
    def flop_coverage(self) -> float:
        """Share of the arithmetic (FLOPs) that was counted: counted FLOPs over counted
        plus the uncounted ops' shape estimate. The estimate is a lower bound, so this
        share is an upper bound; an uncounted op shows in `call_coverage` regardless."""
        counted = self.totals.flops + self.totals.other_flops
        whole = counted + self.uncounted_flops_estimate
        return 1.0 if whole == 0 else counted / whole

    @property
    def by_operator(self) -> tuple[OperatorTotals, ...]:
        """Every op kind of the counted phase, most FLOPs (matrix + other) first, then most bytes.

        Sums of its columns are the totals': every op event belongs to exactly one row.
        """
        rows: dict[str, list] = {}
        for o in self.ops:
            acc = rows.setdefault(o.op, [o.category, 0, 0, 0, 0, 0])
            acc[1] += 1
            acc[2] += o.macs
            acc[3] += o.other_flops
            acc[4] += o.bytes_read
            acc[5] += o.bytes_written
        out = [OperatorTotals(op, *acc) for op, acc in rows.items()]
        return tuple(sorted(out, key=lambda r: (-(r.flops + r.other_flops),
                                                -(r.bytes_read + r.bytes_written), r.op)))

    @property
    def fallback_ops(self) -> tuple[tuple[str, int, int], ...]:
        """(op, calls, FLOPs) counted with PyTorch's formula because we have none."""
        calls: dict[str, list[int]] = {}
        for o in self.ops:
            if o.source == SOURCE_PYTORCH:
                acc = calls.setdefault(o.op, [0, 0])
                acc[0] += 1
                acc[1] += o.flops
        return tuple((op, n, f) for op, (n, f) in sorted(calls.items(), key=lambda kv: -kv[1][1]))
