"""One traced op of a training profile, re-shaped for any micro-batch and tensor-parallel size (layer 3).

The planner traces a step once, at micro-batch 1 on one device, and prices
every layout from it. The roofline scales an op's time linearly; a GPU does
not (tile and wave quantisation, the K ramp, small-GEMM bandwidth), so for the
GPU performance model each op keeps its shape and is re-shaped per layout:

* the *token axis* (the dimension equal to the tokens of one micro-batch:
  M of a forward or input-gradient GEMM, K of a weight-gradient GEMM, the batch
  of an attention bmm) grows with the micro-batch;
* the *tensor-parallel axis* shrinks by tp: the heads of attention, and of a
  layer's GEMM the non-token dimension that is not the hidden size (the MLP's
  intermediate size, the 3h of a fused QKV: Megatron-LM's column and row
  parallel split); when both are the hidden size (the attention output
  projection), its K (row parallel). Replicated ops (norms, residual adds) keep
  their size unless sequence parallelism splits their tokens.

Bytes follow the roofline's split: weight bytes / tp, activation bytes x
micro-batch / tp (replicated: whole, or / tp with sequence parallelism).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..core.events import OpEvent
from ..count.shapes import attention_shape, gemm_shape
from ..hardware.gpumodel import GpuModel
from .roofline import OpTime

__all__ = ["GpuOp", "gpu_op"]

GEMM, ATTENTION, MATRIX, VECTOR, MEMORY, NONE = "gemm", "attention", "matrix", "vector", "memory", "none"


@dataclass(frozen=True, slots=True)
class GpuOp:
    kind: str
    precision: str
    dims: tuple[int, int, int, int]  # (batch, m, n, k) of a GEMM; (batch x heads, q, kv, head dim) of attention
    token_axis: int | None  # index into dims that grows with the micro-batch
    tp_axis: int | None  # index into dims that tensor parallelism divides
    flops: float  # matrix FLOPs at micro-batch 1 (attention: the kernel's)
    vector_flops: float
    weight_bytes: float
    act_bytes: float

    def seconds(self, model: GpuModel, mb: int, tp: int, replicated: bool, sp: bool) -> float:
        split = tp if (not replicated or sp) else 1
        nbytes = self.weight_bytes / (tp if not replicated else 1) + self.act_bytes * mb / split
        if self.kind == MEMORY:
            return model.memory_s(nbytes)
        if self.kind == NONE:
            return 0.0
        if self.kind == VECTOR:
            return model.vector_s(self.vector_flops * mb / split, nbytes, self.precision)
        if self.kind == MATRIX:  # a product whose shapes were not readable: at the best-shape rate
            rate = model.matmul_rate(self.precision)
            return max(self.flops * mb / split / rate if rate else 0.0, model.memory_s(nbytes))
        dims = list(self.dims)
        if self.token_axis is not None:
            dims[self.token_axis] *= mb
        if self.tp_axis is not None and split > 1:
            dims[self.tp_axis] = max(1, math.ceil(dims[self.tp_axis] / split))
        if self.kind == ATTENTION:
            return model.attention_s(dims[0], dims[1], dims[2], self.flops * mb / split, self.precision, nbytes)
        return model.gemm_s(dims[0], dims[1], dims[2], dims[3], self.precision, nbytes)


def _axis(values: tuple[int, ...], target: int, start: int = 1) -> int | None:
    for i in range(start, len(values)):
        if values[i] == target:
            return i
    return None


def gpu_op(o: OpTime, event: OpEvent | None, tokens: int, hidden: int | None) -> GpuOp:
    """The re-shapeable record of one costed op (`tokens`: of one micro-batch of 1)."""
    weight = float(o.param_bytes)
    act = float(o.bytes - o.param_bytes)
    if o.category == "view":
        return GpuOp(NONE, o.precision, (0, 0, 0, 0), None, None, 0.0, 0.0, 0.0, 0.0)
    if event is not None and o.category == "contraction":
        g = gemm_shape(event)
        if g is not None:
            dims = (g.batch, g.m, g.n, g.k)
            if g.batch > 1 and not g.weight:  # an attention bmm: batch = heads x micro-batch
                return GpuOp(GEMM, o.precision, dims, 0, 0, float(o.flops), 0.0, weight, act)
            token = _axis(dims, tokens)
            rest = [i for i in (1, 2, 3) if i != token]
            wide = [i for i in rest if hidden is None or dims[i] != hidden]
            tp_axis = max(wide, key=lambda i: dims[i]) if wide else (rest[-1] if rest else None)
            return GpuOp(GEMM, o.precision, dims, token, tp_axis, float(o.flops), 0.0, weight, act)
        a = attention_shape(event)
        if a is not None:
            return GpuOp(ATTENTION, o.precision, (a.batch_heads, a.q_len, a.kv_len, a.head_dim), 0, 0,
                         float(o.flops), 0.0, weight, act)
    if o.category in ("data", "uncounted"):
        return GpuOp(MEMORY, o.precision, (0, 0, 0, 0), None, None, 0.0, 0.0, weight, act)
    if o.category == "contraction":
        return GpuOp(MATRIX, o.precision, (0, 0, 0, 0), None, None, float(o.flops), 0.0, weight, act)
    return GpuOp(VECTOR, o.precision, (0, 0, 0, 0), None, None, 0.0, float(o.other_flops), weight, act)
