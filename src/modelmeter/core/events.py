"""What one traced forward/backward pass produces (layer 0, stdlib only).

The trace records a flat list of `OpEvent`s, one per aten op, each with the
innermost module that ran it. Tensors are described by `TensorMeta` (shape,
dtype, storage identity and role), never held, so a trace of a 70 B model costs
kilobytes. Every count in modelmeter is a pure function of these records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Any

# Roles of a tensor storage within one trace.
PARAMETER = "parameter"
BUFFER = "buffer"
INPUT = "input"
ACTIVATION = "activation"  # produced by an op during the trace
CONSTANT = "constant"  # made outside the traced ops (python scalars turned tensors, …)
GRADIENT = "gradient"  # produced during the backward pass


@dataclass(frozen=True, slots=True)
class TensorMeta:
    shape: tuple[int, ...]
    dtype: str  # torch dtype name without the 'torch.' prefix
    itemsize: int
    storage: int  # storage id, unique within one trace
    storage_nbytes: int
    role: str

    @property
    def numel(self) -> int:
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.itemsize


@dataclass(frozen=True, slots=True)
class OpEvent:
    index: int
    op: str  # 'aten.mm.default'
    module: str  # innermost module path; '' is the root module
    phase: str  # 'forward' or 'backward'
    inputs: tuple[TensorMeta, ...]  # every tensor argument, flattened in argument order
    outputs: tuple[TensorMeta, ...]
    # Positional/keyword arguments with tensors replaced by their TensorMeta:
    # formulas need strides, groups, flags and the like.
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    # FLOPs from the formula PyTorch registers for this op (torch.utils.flop_counter), if any.
    torch_flops: int | None = None
    # Storages that died right after this op (the liveness timeline).
    freed: tuple[int, ...] = ()

    @property
    def packet(self) -> str:
        """'aten.mm.default' -> 'aten.mm' (the overload packet formulas are keyed by)."""
        parts = self.op.split(".")
        return ".".join(parts[:2]) if len(parts) >= 2 else self.op


@dataclass(frozen=True, slots=True)
class ParamRecord:
    name: str  # fully qualified name; shared tensors appear once under their first name
    module: str  # owning module path
    numel: int
    dtype: str
    itemsize: int
    trainable: bool
    storage: int
    # The tensor's shape: a weight-only quantiser groups along a weight's input features.
    shape: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ModuleRecord:
    path: str
    type: str
    calls: int  # forward calls seen in the trace
    input_bytes: int  # tensor bytes passed in, summed over calls
    output_bytes: int  # tensor bytes returned, summed over calls
    first_event: int | None  # index range of its forward ops (first and last call)
    last_event: int | None
    # Its first call's tensors (positional, then keyword arguments; outputs flattened):
    # shapes and dtype names, empty for a module that never ran.
    input_shapes: tuple[tuple[int, ...], ...] = ()
    input_dtypes: tuple[str, ...] = ()
    output_shapes: tuple[tuple[int, ...], ...] = ()
    output_dtypes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ExpertGroup:
    """A mixture-of-experts layer's routed experts: one module holding all of them.

    Its parameters are stacked along a leading experts dimension, so one token
    uses `top_k / experts` of them.
    """

    module: str  # path of the module holding the stacked expert weights
    experts: int
    top_k: int


@dataclass(frozen=True, slots=True)
class RoutingRecord:
    """One call of an `ExpertGroup`: how many tokens it routed and to how many experts."""

    module: str
    tokens: int
    top_k: int
    experts: int
    # Distinct experts that received at least one token: counted from the router's
    # choice on real tensors; on meta the expectation under balanced routing.
    touched: float
    assumed: bool  # True: meta, routing assumed balanced; False: as the router chose


@dataclass(frozen=True)
class Trace:
    """One pass over a model: op events plus what the model owns."""

    events: tuple[OpEvent, ...]
    modules: tuple[ModuleRecord, ...]  # every named module, depth-first, '' first
    parameters: tuple[ParamRecord, ...]
    buffers: tuple[ParamRecord, ...]
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]
    mode: str  # 'meta', 'fake' or 'real'
    grad_enabled: bool
    # Storage id -> bytes for tensors autograd saved for backward, with the saving module.
    saved_tensors: tuple[tuple[int, int, str], ...] = ()
    # Mixture-of-experts layers found in the model and each routed call (empty for dense models).
    expert_groups: tuple[ExpertGroup, ...] = ()
    routing: tuple[RoutingRecord, ...] = ()
    # The attention implementation SDPA calls were routed to ('flash'/'math'); None when
    # the trace chose none, or the model made no SDPA call (trace/attention.py).
    attention: str | None = None
    # How many SDPA calls took each kernel: (('flash', 2), ('math', 1)); 'device' for calls
    # a GPU dispatched itself. Under 'flash' each call takes the kernel torch's CPU rules pick.
    # Also the fused module kernels of the fast paths (core.attention.FUSED_KERNELS) and their calls.
    attention_kernels: tuple[tuple[str, int], ...] = ()
