"""Trace one LLM inference step and cost its ops (layer 3; torch only here, lazily).

`DecoderTracer` holds a decoder built once on the meta device and traces the
two phases through the model's real transformers cache path:

* prefill: `batch` sequences of `prompt` tokens into an empty `DynamicCache`
  (`logits_to_keep=1`, as `generate()` asks: only the last position's logits);
* decode: one new token per sequence with a `DynamicCache` already holding
  `past` tokens per sequence (meta tensors of the shape a real prefill leaves).

transformers 5.24 takes the cache as `cache=` (`past_key_values=` is its
deprecated alias) and derives `position_ids` from the cache length, so no
`cache_position` is passed.

Attention runs as one fused op while tracing (`trace_model(attention='flash')`,
the default): on meta, SDPA would otherwise decompose into fp32 math with a
materialised score matrix, which no GPU inference engine runs; `attention='math'`
asks for that unfused form as a what-if.

`step_costs` turns a step's trace into per-op costs split into parts the LLM
view rescales independently: matrix FLOPs, vector FLOPs, weight elements,
KV-cache elements read and written, activation bytes. Two corrections to the
unfused per-op bytes of `count/`, both because they describe the trace's
artefacts rather than what an inference engine moves:

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

from ..core.errors import UserInputError
from ..core.events import ACTIVATION, BUFFER, PARAMETER, ExpertGroup, OpEvent, Trace
from ..core.precision import WeightTensor
from ..count.engine import count_op
from ..count.quantization import weight_tensors
from ..count.shapes import gemm_shape
from ..sources import LoadedModel, resolve_model
from ..trace.moe import MetaExperts, find_expert_groups
from ..trace.run import trace_model
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


class DecoderTracer:
    """A decoder built once on meta; each call traces one inference step."""

    def __init__(self, model: str | LoadedModel, *, dtype: str = "fp16",
                 trust_remote_code: bool = False, attention: str = "flash") -> None:
        self.attention = attention  # the SDPA kernel assumed (trace/attention.py)
        if isinstance(model, LoadedModel):
            self.loaded = model
        else:
            self.loaded = resolve_model(model, device="meta", dtype=dtype,
                                        trust_remote_code=trust_remote_code)
        if self.loaded.kind != "decoder" or not self.loaded.config:
            raise UserInputError(
                f"{self.loaded.name} is not a decoder-only language model (kind: {self.loaded.kind}); "
                "the llm view needs a causal LM such as gpt2, llama3-8b or a local *ForCausalLM folder"
            )
        self._layout: list[tuple[tuple[int, ...], tuple[int, ...], Any]] | None = None
        self._weights: tuple[WeightTensor, ...] = ()

    @property
    def params(self) -> int:
        """Parameters, tied ones once (named_parameters removes duplicates)."""
        return sum(p.numel() for p in self.loaded.module.parameters())

    @property
    def weight_tensors(self) -> tuple[WeightTensor, ...]:
        """Parameters classified for the weight-only layout (from the first traced step)."""
        return self._weights

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.loaded.config or {})

    def step(self, batch: int, new_tokens: int, past: int = 0) -> StepCosts:
        """Trace prefill (`past=0`, `new_tokens=prompt`) or decode (`new_tokens=1`)."""
        trace, cache = self._trace(batch, new_tokens, past)
        shapes = {tuple(t.shape) for layer in cache.layers for t in (layer.keys, layer.values)}
        return step_costs(trace, batch=batch, new_tokens=new_tokens, past=past, cache_shapes=shapes,
                          hidden=self._hidden())

    def _hidden(self) -> int | None:
        from ..formulas import decoder_dims

        try:
            return int(decoder_dims(self.config).d_model)
        except (KeyError, TypeError, ValueError, UserInputError):  # a config it cannot read: none marked
            return None

    def trace_step(self, batch: int, new_tokens: int, past: int = 0) -> Trace:
        """The raw trace of one step, as eager transformers runs it (the cache grows by `torch.cat`)."""
        return self._trace(batch, new_tokens, past)[0]

    def _trace(self, batch: int, new_tokens: int, past: int) -> tuple[Trace, Any]:
        import torch
        from transformers import DynamicCache

        module = self.loaded.module
        cache = DynamicCache()
        if past:
            for i, (k_shape, v_shape, dtype) in enumerate(self._cache_layout()):
                keys = torch.empty((batch, k_shape[0], past, k_shape[1]), dtype=dtype, device="meta")
                values = torch.empty((batch, v_shape[0], past, v_shape[1]), dtype=dtype, device="meta")
                cache.update(keys, values, i)
        ids = torch.zeros((batch, new_tokens), dtype=torch.long, device="meta")
        kwargs = {"input_ids": ids, "cache": cache, "use_cache": True, "attention_mask": None,
                  "logits_to_keep": 1}
        trace = trace_model(module, (), kwargs, attention=self.attention)
        if not self._weights:
            self._weights = weight_tensors(trace)
        return trace, cache

    @property
    def expert_groups(self) -> tuple[ExpertGroup, ...]:
        """The model's routed-experts groups (empty for a dense model)."""
        return tuple(g for _, g in find_expert_groups(self.loaded.module))

    @property
    def active_params(self) -> int:
        """Parameters one token uses: all, less the routed experts it is not sent to."""
        unused = sum(sum(p.numel() for p in mod.parameters()) * (g.experts - g.top_k) // g.experts
                     for mod, g in find_expert_groups(self.loaded.module))
        return self.params - unused

    def _cache_layout(self) -> list[tuple[tuple[int, ...], tuple[int, ...], Any]]:
        """(kv_heads, head_dim) of K and V per layer and their dtype, from one untraced token."""
        if self._layout is None:
            import torch
            from transformers import DynamicCache

            cache = DynamicCache()
            ids = torch.zeros((1, 1), dtype=torch.long, device="meta")
            with torch.no_grad(), MetaExperts():
                self.loaded.module(input_ids=ids, cache=cache, use_cache=True, attention_mask=None,
                                   logits_to_keep=1)
            self._layout = [
                ((layer.keys.shape[1], layer.keys.shape[3]),
                 (layer.values.shape[1], layer.values.shape[3]), layer.keys.dtype)
                for layer in cache.layers
            ]
        return self._layout


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
