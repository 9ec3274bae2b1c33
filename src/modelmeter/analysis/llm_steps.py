"""Cost vectors of one traced LLM inference step (layer 3; pure: no model, no torch).

`pipeline/llm_trace.py` builds a decoder on meta and traces its prefill and
decode steps; `step_costs` turns one step's trace into per-op costs split into
parts the LLM view rescales independently: matrix FLOPs, vector FLOPs, weight
elements, KV-cache elements read and written, activation bytes. Two
corrections to the unfused per-op bytes of `count/`, both because they describe
the trace's artefacts rather than what an inference engine moves:

* the KV cache. `DynamicCache.update` is `torch.cat(past, new)`: it copies the
  whole cache every step. Serving engines (paged or static caches) append in
  place, so the append costs the new token's K/V only. The meta math path of
  SDPA then materialises K/V again (GQA `repeat_kv` clones, the K scaling),
  which fused attention kernels never do: those copies cost no bytes, and the
  attention products read the cache once, at its real (un-repeated) size;
* embedding lookups gather `batch x tokens` rows, not the whole table.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..core.events import ACTIVATION, BUFFER, PARAMETER, ExpertGroup, OpEvent, Trace
from ..count.engine import count_op
from ..count.shapes import gemm_shape
from .tp_replicated import replicated_under_tp

# Fields of one op's cost vector, in order.
# expert_weight_elems: weights of routed experts (all E of a group); a step reads the share
# of them its tokens are routed to, which the LLM view computes per batch (`llm.py`).
FIELDS = ("matmul_flops", "vector_flops", "weight_elems", "kv_read_elems", "kv_write_elems", "act_bytes",
          "expert_weight_elems")
MATMUL, VECTOR, WEIGHT, KV_READ, KV_WRITE, ACT, EXPERT = range(len(FIELDS))

OpKey = tuple[str, str, int]  # (module, op, occurrence of that pair): aligns ops across traces


@dataclass(frozen=True)
class OpInfo:
    op: str
    module: str
    dtype: str  # traced compute dtype
    memory_only: bool  # data movement or uncounted: no compute time
    experts: int = 0  # op of a routed-experts group of this many experts (0: not one)
    top_k: int = 0
    layer: int | None = None  # decoder layer index from the module path ('model.layers.3.…')
    # Not a matrix product, and its largest output is one hidden-size tensor (tokens x hidden):
    # norms, residual adds. Tensor parallelism does not split it (every rank runs it whole).
    replicated: bool = False
    # A layer's weight GEMM: its (N, K) (M is the step's tokens), for the GPU model's tile and
    # K ramps; None for every other op.
    gemm_nk: tuple[int, int] | None = None


@dataclass(frozen=True)
class StepCosts:
    """One traced step: per-op cost vectors and what the step leaves in the cache."""

    batch: int
    new_tokens: int  # per sequence
    past: int  # cached tokens per sequence before the step
    ops: dict[OpKey, tuple[float, ...]]
    info: dict[OpKey, OpInfo]
    kv_elems_written: int  # cache elements appended (all layers, K and V, all sequences)
    kv_written_by_layer: dict[int | None, int]  # the same, per decoder layer
    kv_itemsize: int  # bytes per cache element as traced
    peak_activation_bytes: int  # live activations at the peak, KV cache excluded
    uncounted: tuple[str, ...]
    events: int

    @property
    def kv_elems_per_token(self) -> float:
        return self.kv_elems_written / (self.batch * self.new_tokens)


def step_costs(trace: Trace, *, batch: int, new_tokens: int, past: int,
               cache_shapes: set[tuple[int, ...]], hidden: int | None = None) -> StepCosts:
    """Cost vectors per op (see the module docstring for the two corrections)."""
    ops: dict[OpKey, tuple[float, ...]] = {}
    info: dict[OpKey, OpInfo] = {}
    seen: Counter[tuple[str, str]] = Counter()
    kv: dict[int, int] = {}  # storage -> elements of the cache tensor it holds or copies
    written = 0
    by_layer: Counter[int | None] = Counter()
    itemsize = 0
    groups = {g.module: g for g in trace.expert_groups}
    expert_storage = {p.storage for p in trace.parameters if _group_of(p.module, groups) is not None}
    uncounted: set[str] = set()
    live: dict[int, int] = {}
    current = peak = 0
    for e in trace.events:
        if e.phase != "forward":
            continue
        c = count_op(e)
        values = [0.0] * len(FIELDS)
        if c.category == "view":
            pass  # views share their base's storage: the cache mark follows them
        elif _is_cache_append(e, cache_shapes):
            # The cache append: in place in an engine, so only the new K/V move.
            new, out = e.inputs[-1], e.outputs[0]
            kv[out.storage] = out.numel
            for t in e.inputs[:-1]:
                kv[t.storage] = t.numel
            values[ACT] = new.nbytes
            values[KV_WRITE] = new.numel
            written += new.numel
            by_layer[layer_index(e.module)] += new.numel
            itemsize = out.itemsize
        elif any(t.storage in kv for t in e.inputs) and c.category != "contraction":
            # Math-path copies of the cache (GQA repeat, K scaling): no bytes in a fused kernel.
            root = max(kv[t.storage] for t in e.inputs if t.storage in kv)
            for t in e.outputs:
                kv[t.storage] = root
            values[VECTOR] = c.other_flops
        else:
            values[MATMUL] = 2 * c.macs
            values[VECTOR] = c.other_flops
            counted: set[int] = set()
            for t in e.inputs:
                if t.storage in kv:
                    if t.storage not in counted:  # one read of the cache per product
                        values[KV_READ] += kv[t.storage]
                        counted.add(t.storage)
                elif t.storage in expert_storage:
                    values[EXPERT] += t.numel
                elif t.role in (PARAMETER, BUFFER):
                    values[WEIGHT] += e.outputs[0].numel if e.packet == "aten.embedding" else t.numel
                else:
                    values[ACT] += t.nbytes
            values[ACT] += sum(t.nbytes for t in e.outputs)
            if c.category == "uncounted":
                uncounted.add(e.op)
        # Liveness of activations (the cache and its math-path copies excluded).
        for t in e.outputs:
            if t.role == ACTIVATION and t.storage not in kv and t.storage not in live:
                live[t.storage] = t.storage_nbytes
                current += t.storage_nbytes
        peak = max(peak, current)
        for sid in e.freed:
            current -= live.pop(sid, 0)
        if not any(values):
            continue
        seen[(e.module, e.op)] += 1
        key = (e.module, e.op, seen[(e.module, e.op)])
        ops[key] = tuple(values)
        group = _group_of(e.module, groups)
        info[key] = OpInfo(e.op, e.module, c.dtype, c.category in ("data", "uncounted"),
                           experts=group.experts if group else 0, top_k=group.top_k if group else 0,
                           layer=layer_index(e.module),
                           replicated=replicated_under_tp(e, c.category, batch * new_tokens, hidden),
                           gemm_nk=_weight_gemm(e) if c.category == "contraction" else None)
    return StepCosts(
        batch=batch, new_tokens=new_tokens, past=past, ops=ops, info=info,
        kv_elems_written=written, kv_written_by_layer=dict(by_layer), kv_itemsize=itemsize, peak_activation_bytes=peak,
        uncounted=tuple(sorted(uncounted)), events=len(trace.events),
    )


def _weight_gemm(e: Any) -> tuple[int, int] | None:
    g = gemm_shape(e)
    return (g.n, g.k) if g is not None and g.weight and g.batch == 1 else None


def _group_of(module: str, groups: dict[str, ExpertGroup]) -> ExpertGroup | None:
    """The routed-experts group an op or parameter of `module` belongs to, if any."""
    for path, group in groups.items():
        if module == path or module.startswith(path + "."):
            return group
    return None


def layer_index(module: str) -> int | None:
    """3 for 'model.layers.3.self_attn.k_proj' (the decoder stack's ModuleList), else None."""
    parts = module.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in ("layers", "h", "blocks") and parts[i + 1].isdigit():
            return int(parts[i + 1])
    return None


def _is_cache_append(e: OpEvent, cache_shapes: set[tuple[int, ...]]) -> bool:
    """`torch.cat([past, new], dim=-2)` producing a tensor the cache holds after the step.

    The dim test matters: in a prefill, rotary's `rotate_half` concatenates
    halves of K along the last dim into the very same shape.
    """
    if e.packet != "aten.cat" or not e.outputs or tuple(e.outputs[0].shape) not in cache_shapes:
        return False
    dim = e.args[1] if len(e.args) > 1 else e.kwargs.get("dim", 0)
    ndim = len(e.outputs[0].shape)
    return isinstance(dim, int) and dim % ndim == ndim - 2
