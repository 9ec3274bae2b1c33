"""From one traced training step to the planner's per-block profile (layer 3, pure).

The model is traced once (micro-batch 1, the planned sequence length, forward
and backward); its repeated blocks are found as for activation checkpointing
(`memory.checkpoint_blocks`: the children of the shallowest ModuleList with
most of them, `model.layers.N` in a transformer). Every op, parameter and saved
tensor then goes to the block whose module ran or owns it; what is outside the
blocks goes to `first` (ran before the first block: embeddings) or `last`
(after it: final norm, head, loss). Nothing here is written per architecture:
any model modelmeter can trace gets a profile.

Per op the roofline (`roofline.py`, same conventions) gives compute time,
weight-read time and activation-traffic time on the device; the planner scales
compute and activation traffic with the micro-batch, and divides by tp only what
Megatron-LM's tensor parallelism shards: the matrix products, the attention heads
and the MLP's intermediate activations. The ops on the residual stream (norms,
residual adds, the dropout of a block's output, their backward;
`tp_replicated.py`) are *replicated*: every tp rank runs them whole, unless
sequence parallelism splits them along the sequence.

Expert parameters are those of modules whose path has an `experts` component
(the grouping transformers' mixture-of-experts models use); a block holding
some is a mixture-of-experts block and pays expert-parallel all-to-alls.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ..core.events import Trace
from ..core.results import Counts
from ..count.engine import ancestors
from ..hardware import Hardware
from ..hardware.gpumodel import GpuModel
from .memory import checkpoint_blocks
from .plan_gpu import GpuOp, gpu_op
from .plan_layout import Block, OpCost, TrainingProfile
from .roofline import OpTime, roofline
from .tp_replicated import replicated_under_tp

FIRST, LAST = "<before blocks>", "<after blocks>"
_HEAD_KEYS = ("num_attention_heads", "n_head", "num_heads")
_EXPERT_KEYS = ("n_routed_experts", "num_local_experts", "num_experts", "moe_num_experts")
_TOPK_KEYS = ("num_experts_per_tok", "moe_topk", "top_k", "num_experts_per_token")
_HIDDEN_KEYS = ("hidden_size", "n_embd", "d_model", "dim")


def is_expert_path(path: str) -> bool:
    return "experts" in path.split(".")


def build_profile(trace: Trace, forward: Counts, backward: Counts, hw: Hardware, *, model: str, seq: int,
                  efficiency: float | None = None, config: dict[str, Any] | None = None,
                  gpu: GpuModel | None = None) -> TrainingProfile:
    """The per-block profile of a training step traced with `backward=True` at micro-batch 1.

    With `gpu` (a GPU performance model), every op also keeps its shape, and the planner prices
    each layout with that model instead of scaling the roofline (`plan_gpu.py`)."""
    blocks = checkpoint_blocks(trace)
    block_set = set(blocks)
    records = {m.path: m for m in trace.modules}
    fwd = roofline(forward, hw, efficiency=efficiency)
    bwd = roofline(backward, hw, efficiency=efficiency, phase="backward")
    bw = hw.memory_bandwidth_bytes_per_s

    def owner(path: str) -> str | None:
        for anc in reversed(ancestors(path)):  # deepest first, but a block is an ancestor at one depth
            if anc in block_set:
                return anc
        return None

    first_block_op = min((o.index for o in fwd.ops if owner(o.module)), default=0)
    side: dict[str, str] = {}  # non-block module -> FIRST | LAST, from where its forward ops ran
    for o in fwd.ops:
        if owner(o.module) is None and o.module not in side:
            side[o.module] = FIRST if o.index < first_block_op else LAST

    def unit_of(path: str, index: int | None = None) -> str:
        block = owner(path)
        if block is not None:
            return block
        if path in side:
            return side[path]
        for anc in reversed(ancestors(path)):
            if anc in side and anc:
                return side[anc]
        if index is not None and index < first_block_op:
            return FIRST
        return LAST

    units = [FIRST, *blocks, LAST]
    events = {e.index: e for e in trace.events}
    tokens, hidden_dim = _hidden_shape(events, records, blocks) or (seq, _first_int(config or {}, _HIDDEN_KEYS))

    def replicated(o: OpTime) -> bool:
        e = events.get(o.index)
        return e is not None and replicated_under_tp(e, o.category, tokens, hidden_dim)

    ops: dict[str, dict[str, list[OpCost]]] = {u: {"fwd": [], "bwd": []} for u in units}
    flops: dict[str, dict[str, float]] = {u: {"fwd": 0.0, "bwd": 0.0} for u in units}
    for phase, result in (("fwd", fwd), ("bwd", bwd)):
        for o in result.ops:
            if o.category == "view":
                continue
            u = unit_of(o.module, o.index if phase == "fwd" else None)
            shaped = gpu_op(o, events.get(o.index), tokens, hidden_dim) if gpu is not None else None
            ops[u][phase].append(_cost(o, bw, replicated(o), shaped))
            flops[u][phase] += o.flops

    params: dict[str, int] = defaultdict(int)
    experts: dict[str, int] = defaultdict(int)
    for p in trace.parameters:
        u = unit_of(p.module)
        params[u] += p.numel
        if is_expert_path(p.module):
            experts[u] += p.numel

    hidden = (records[blocks[0]].input_bytes or records[blocks[0]].output_bytes) if blocks else 0
    weights = {r.storage for r in (*trace.parameters, *trace.buffers)}
    saved: dict[str, float] = defaultdict(float)
    saved_hidden: dict[str, float] = defaultdict(float)
    for sid, nbytes, module in trace.saved_tensors:
        if sid in weights:
            continue
        u = unit_of(module)
        saved[u] += nbytes
        # Hidden-size tensors (norm inputs, residual stream; fp32 copies of them) are
        # not split by tensor parallelism, only by sequence parallelism.
        if hidden and nbytes in (hidden, 2 * hidden):
            saved_hidden[u] += nbytes

    kinds: dict[tuple[Any, ...], int] = {}
    made: list[Block] = []
    for i, u in enumerate(units):
        rec = records.get(u)
        is_block = u in block_set
        sig = (is_block, params[u], experts[u], flops[u]["fwd"], flops[u]["bwd"], len(ops[u]["fwd"]),
               len(ops[u]["bwd"]), saved[u], saved_hidden[u])
        kind = kinds.setdefault(sig, len(kinds)) if is_block else -1 - i
        made.append(Block(
            path=u, kind=kind, params=params[u], expert_params=experts[u],
            fwd_flops=flops[u]["fwd"], bwd_flops=flops[u]["bwd"],
            fwd_ops=tuple(ops[u]["fwd"]), bwd_ops=tuple(ops[u]["bwd"]),
            saved_bytes=saved[u], saved_hidden_bytes=saved_hidden[u],
            input_bytes=float(rec.input_bytes or rec.output_bytes) if rec else 0.0,
            output_bytes=float(rec.output_bytes) if rec else 0.0,
            tp_all_reduces=2 if is_block else 0, moe=is_block and experts[u] > 0,
        ))
    config = config or {}
    notes = list(fwd.notes) + [n for n in bwd.notes if n not in fwd.notes]
    if not blocks:
        notes.append("no repeated blocks found: the model is planned as one unit (no pipeline split)")
    return TrainingProfile(
        model=model, hardware=hw, dtype=fwd.precision, seq=seq,
        params=sum(p.numel for p in trace.parameters), first=made[0], blocks=tuple(made[1:-1]),
        last=made[-1], peak_flops=hw.peak_flops_for(fwd.precision, "matmul"), efficiency=fwd.efficiency,
        heads=_first_int(config, _HEAD_KEYS), experts=_first_int(config, _EXPERT_KEYS),
        top_k=_first_int(config, _TOPK_KEYS) or 1, notes=tuple(notes), gpu=gpu,
    )


def _cost(o: OpTime, bw: float, replicated: bool, shaped: GpuOp | None) -> OpCost:
    return (o.t_compute_s, o.param_bytes / bw, (o.bytes - o.param_bytes) / bw, replicated, shaped)


def _hidden_shape(events: dict[int, Any], records: dict[str, Any], blocks: list[str]) -> tuple[int, int] | None:
    """(tokens, hidden) of the residual stream: the first block's first floating input."""
    first = events.get(records[blocks[0]].first_event) if blocks else None
    for t in first.inputs if first is not None else ():
        if t.shape and t.dtype.startswith(("float", "bfloat", "half")):
            return t.numel // t.shape[-1], int(t.shape[-1])
    return None


def _first_int(config: dict[str, Any], keys: tuple[str, ...]) -> int | None:
    for k in keys:
        v = config.get(k)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None
