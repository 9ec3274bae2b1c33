"""The GEMM and attention shapes of an op event (layer 1, core only).

A shape-aware performance model prices a matrix product by its M, N, K (and
batch), not by its FLOPs alone: the same FLOPs in a 4096 x 4096 x 4096 GEMM and
in a 1 x 4096 x 16M one run at very different rates. These pure functions read
them from the traced tensor shapes:

* mm / addmm: ``A[m, k] @ B[k, n]``; bmm / baddbmm: ``A[b, m, k] @ B[b, k, n]``;
* convolution as the implicit GEMM cuDNN runs: ``m = N x output pixels``,
  ``n = C_out / groups``, ``k = C_in / groups x kernel elements``, batch = groups;
  its backward as the two GEMMs of the same sizes (counted once per event, as
  the event's FLOPs are);
* fused attention (flash, memory-efficient, cpu flash; forward and backward):
  batch x heads, query length, key length, head dim.

Anything else returns None: the performance model prices it by its bytes and
vector work.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from ..core.events import PARAMETER, OpEvent

__all__ = ["AttentionShape", "GemmShape", "attention_shape", "gemm_shape"]

_ATTENTION = ("_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
              "_scaled_dot_product_cudnn_attention", "_flash_attention", "_efficient_attention")


@dataclass(frozen=True, slots=True)
class GemmShape:
    batch: int
    m: int
    n: int
    k: int
    weight: bool = False  # one operand is a parameter (a layer's weight: its bytes do not grow with tokens)


@dataclass(frozen=True, slots=True)
class AttentionShape:
    batch_heads: int
    q_len: int
    kv_len: int
    head_dim: int


def _is_weight(e: OpEvent) -> bool:
    return any(t.role == PARAMETER for t in e.inputs)


def gemm_shape(e: OpEvent) -> GemmShape | None:
    """The GEMM an op runs, or None (not a matrix product, or shapes it cannot read)."""
    packet = e.packet
    mats = [t.shape for t in e.inputs]
    try:
        if packet in ("aten.mm", "aten.addmm", "aten._int_mm", "aten._scaled_mm"):
            a, b = (mats[1], mats[2]) if packet == "aten.addmm" else (mats[0], mats[1])
            if len(a) == 2 and len(b) == 2:
                return GemmShape(1, a[0], b[1], a[1], _is_weight(e))
        elif packet in ("aten.bmm", "aten.baddbmm"):
            a, b = (mats[1], mats[2]) if packet == "aten.baddbmm" else (mats[0], mats[1])
            if len(a) == 3 and len(b) == 3:
                return GemmShape(a[0], a[1], b[2], a[2], _is_weight(e))
        elif packet in ("aten.convolution", "aten.convolution_backward"):
            return _conv_shape(e)
    except (IndexError, TypeError):
        return None
    return None


def _conv_shape(e: OpEvent) -> GemmShape | None:
    x, w = e.inputs[0].shape, e.inputs[1].shape
    if e.packet == "aten.convolution_backward":  # (grad_out, input, weight, ...)
        x, w = e.inputs[1].shape, e.inputs[2].shape
        out = e.inputs[0].shape
    else:
        out = e.outputs[0].shape
    if len(x) < 3 or len(w) < 3 or len(out) < 3:
        return None
    groups = max(1, x[1] // w[1]) if w[1] else 1
    m = out[0] * prod(out[2:])
    return GemmShape(groups, m, w[0] // groups, w[1] * prod(w[2:]), True)


def attention_shape(e: OpEvent) -> AttentionShape | None:
    """The shape of a fused attention kernel (query, key tensors [B, H, L, E]), or None."""
    name = e.op.split(".")[1] if "." in e.op else e.op
    if not name.startswith(_ATTENTION):
        return None
    if "backward" in name:
        # (grad_out, query, key, value, ...): the query is the second tensor.
        q, k = (e.inputs[1].shape, e.inputs[2].shape) if len(e.inputs) > 2 else (None, None)
    else:
        q, k = (e.inputs[0].shape, e.inputs[1].shape) if len(e.inputs) > 1 else (None, None)
    if q is None or k is None or len(q) != 4 or len(k) != 4:
        return None
    return AttentionShape(q[0] * q[1], q[2], k[2], q[3])
