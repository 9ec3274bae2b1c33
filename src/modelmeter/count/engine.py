"""From a trace to counts: per op, per module, totals (layer 1, pure).

Each op is classified once, by the first rule that applies:
- contraction: MACs from our registry (`contractions.py`); FLOPs = 2 x MACs;
- other: elementwise/normalisation/reduction/pooling FLOPs (`other.py`);
- contraction, source 'pytorch': an op none of our tables know but PyTorch's
  `flop_registry` does (its figure is recorded in the trace). Our formulas are
  the authority: PyTorch's only fills gaps, and each such op is reported as a
  fallback (`Counts.fallback_ops`). PyTorch's registry is also the oracle our
  formulas are tested against (tests/test_formulas_oracle.py), where they
  differ on purpose (e.g. grouped convolution backward) ours is right;
- view: output aliases an input (no bytes move, nothing computed);
- data: copies, creation, gathers (bytes move, nothing computed);
- uncounted: arithmetic we have no formula for; listed, never a silent zero,
  with a lower-bound estimate of its FLOPs from its shapes (`flop_coverage`).

Bytes are unfused: every op reads each tensor argument once and writes each
output once (the upper bound a compiler's fusion lowers).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace

from ..core.events import BUFFER, PARAMETER, OpEvent, Trace
from ..core.results import SOURCE_OURS, SOURCE_PYTORCH, Counts, CountTotals, ModuleCounts, OpCount
from . import contractions  # noqa: F401 - registers the formulas
from .attribution import parameter_owners, work_module
from .moe import active_params, lookup_only_params, routing_mode, scale_expert_reads
from .other import INPLACE_VIEWS, estimated_flops, is_data_movement, other_flops
from .quantization import parameter_sizes
from .registry import macs_formula

_FLOAT_DTYPES = ("float", "bfloat", "half", "double")


def count_op(event: OpEvent) -> OpCount:
    macs = 0
    extra = 0
    estimate = 0
    category, source = "uncounted", ""
    if (formula := macs_formula(event.packet)) is not None:
        try:
            macs, category, source = formula(event), "contraction", SOURCE_OURS
        except (TypeError, ValueError, IndexError):
            pass  # shapes our formula cannot read: PyTorch's figure, if any, below
    if not source:
        flops = other_flops(event)
        if flops is not None:
            extra, category, source = flops, "other", SOURCE_OURS
        elif event.torch_flops is not None:
            # PyTorch's formulas count 2 FLOPs per multiply-accumulate.
            macs, category, source = event.torch_flops // 2, "contraction", SOURCE_PYTORCH
        elif is_data_movement(event):
            category = "view" if _aliases_input(event) else "data"
        else:
            estimate = estimated_flops(event)
    if category == "view":
        read = written = param_read = 0
    elif event.packet == "aten.embedding":
        # A lookup reads only the rows it gathers (plus the indices), not the whole table.
        rows = sum(t.nbytes for t in event.outputs)
        indices = sum(t.nbytes for t in event.inputs[1:])
        read, written, param_read = rows + indices, rows, rows
    else:
        read = sum(t.nbytes for t in event.inputs)
        written = sum(t.nbytes for t in event.outputs)
        param_read = sum(t.nbytes for t in event.inputs if t.role in (PARAMETER, BUFFER))
    return OpCount(
        index=event.index, op=event.op, module=event.module, phase=event.phase,
        category=category, macs=macs, other_flops=extra, bytes_read=read,
        bytes_written=written, dtype=_compute_dtype(event), param_bytes_read=param_read,
        source=source, estimated_flops=estimate,
    )


def _with_module(op: OpCount, module: str) -> OpCount:
    return op if op.module == module else replace(op, module=module)


def _aliases_input(event: OpEvent) -> bool:
    if event.packet in INPLACE_VIEWS:  # restride their input in place: metadata only
        return True
    if event.packet.endswith("_"):  # in-place ops write their input: real traffic
        return False
    sources = {t.storage for t in event.inputs}
    return bool(event.outputs) and all(t.storage in sources for t in event.outputs)


def _compute_dtype(event: OpEvent) -> str:
    for t in event.inputs:
        if t.dtype.startswith(_FLOAT_DTYPES):
            return t.dtype
    for t in event.outputs:
        if t.dtype.startswith(_FLOAT_DTYPES):
            return t.dtype
    return event.inputs[0].dtype if event.inputs else "float32"


def ancestors(path: str) -> list[str]:
    """'a.b.c' -> ['a.b.c', 'a.b', 'a', '']."""
    out = []
    while path:
        out.append(path)
        path = path.rpartition(".")[0]
    out.append("")
    return out


def count_trace(
    trace: Trace,
    *,
    precision: str | None = None,
    group_size: int | None = None,
    phase: str = "forward",
) -> Counts:
    """Count one phase ('forward' or 'backward') of a trace.

    `precision` sets the bytes per parameter (e.g. 'int4'); None keeps the
    traced dtypes' real sizes.
    """
    # Work on a nested module's weight is that module's (attribution.py: MultiheadAttention's out_proj).
    owners = parameter_owners(trace)
    ops = scale_expert_reads(tuple(_with_module(count_op(e), work_module(e, owners))
                                   for e in trace.events if e.phase == phase), trace)
    uncounted = Counter(o.op for o in ops if o.category == "uncounted")

    own: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for o in ops:
        acc = own[o.module]
        acc[0] += o.macs
        acc[1] += o.other_flops
        acc[2] += o.bytes_read
        acc[3] += o.bytes_written
    inclusive: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for path, acc in own.items():
        for anc in ancestors(path):
            inc = inclusive[anc]
            for i in range(4):
                inc[i] += acc[i]

    own_params: Counter[str] = Counter()
    inc_params: Counter[str] = Counter()
    inc_param_bytes: Counter[str] = Counter()
    sizes = parameter_sizes(trace, precision, group_size)
    for p in trace.parameters:
        own_params[p.module] += p.numel
        size = sizes.by_name[p.name]
        for anc in ancestors(p.module):
            inc_params[anc] += p.numel
            inc_param_bytes[anc] += int(size)

    experts = {g.module: (g.experts, g.top_k) for g in trace.expert_groups}
    modules = tuple(
        ModuleCounts(
            path=m.path, type=m.type, depth=0 if not m.path else m.path.count(".") + 1,
            calls=m.calls, params=inc_params[m.path], own_params=own_params[m.path],
            param_bytes=inc_param_bytes[m.path],
            macs=inclusive[m.path][0], other_flops=inclusive[m.path][1],
            bytes_read=inclusive[m.path][2], bytes_written=inclusive[m.path][3],
            input_bytes=m.input_bytes, output_bytes=m.output_bytes,
            experts=experts.get(m.path, (0, 0))[0], top_k=experts.get(m.path, (0, 0))[1],
            input_shapes=m.input_shapes, input_dtypes=m.input_dtypes,
            output_shapes=m.output_shapes, output_dtypes=m.output_dtypes,
        )
        for m in trace.modules
    )

    totals = CountTotals(
        params=sum(p.numel for p in trace.parameters),
        trainable_params=sum(p.numel for p in trace.parameters if p.trainable),
        buffers=sum(b.numel for b in trace.buffers),
        buffer_bytes=sum(b.numel * b.itemsize for b in trace.buffers),
        param_bytes=sizes.param_bytes,
        param_scale_bytes=sizes.scale_bytes,
        macs=sum(o.macs for o in ops),
        other_flops=sum(o.other_flops for o in ops),
        bytes_read=sum(o.bytes_read for o in ops),
        bytes_written=sum(o.bytes_written for o in ops),
        active_params=(active := active_params(trace)),
        active_params_without_embeddings=active - lookup_only_params(trace),
    )
    return Counts(totals, modules, ops, tuple(sorted(uncounted.items(), key=lambda kv: -kv[1])),
                  quantization=sizes.layout, weights=sizes.tensors, routing=routing_mode(trace))
