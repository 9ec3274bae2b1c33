"""MACs of tensor contractions: matmuls, convolutions, attention (layer 1, pure).

One MAC is one multiply-accumulate; FLOPs = 2 x MACs for these ops (PyTorch's
FlopCounterMode convention). Where PyTorch registers a formula for an op, the
trace records its figure and the counter uses it; the formulas here cover the
ops it lacks (CPU attention kernels, nn.MultiheadAttention's fused path, GQA
shapes its asserts reject, mv/dot) and serve as an independent check.

Attention with a causal mask is counted densely, L x S per head, as PyTorch
and the papers (e.g. Kaplan et al. 2020, the FlashAttention papers) do: a
kernel may skip the masked half, but the count describes the operation.
"""

from __future__ import annotations

from math import prod

from ..core.events import OpEvent, TensorMeta
from .registry import register_macs


def _t(event: OpEvent, i: int) -> TensorMeta:
    arg = event.args[i]
    if not isinstance(arg, TensorMeta):
        raise TypeError(f"{event.op}: argument {i} is not a tensor")
    return arg


def mm_macs(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    m, k = a
    k2, n = b
    return m * k * n


def bmm_macs(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    batch, m, k = a
    return batch * m * k * b[-1]


def conv_macs(x: tuple[int, ...], w: tuple[int, ...], out: tuple[int, ...], transposed: bool) -> int:
    """Convolution MACs: each output element sums c_in/groups x kernel products.

    Weight shapes: regular [c_out, c_in/g, *k]; transposed [c_in, c_out/g, *k],
    where each *input* element scatters into c_out/g x kernel outputs.
    """
    kernel = prod(w[2:])
    if transposed:
        return prod(x) * w[1] * kernel
    return prod(out) * w[1] * kernel


def attention_macs(q: tuple[int, ...], k: tuple[int, ...], v: tuple[int, ...]) -> int:
    """Q.K^T plus A.V for q [.., H, L, E], k [.., Hk, S, E], v [.., Hk, S, Ev].

    With grouped-query attention (Hk < H) every query head still multiplies a
    full L x S score matrix, so the count uses H, the query heads.
    """
    *batch_heads, length, e = q
    s = k[-2]
    ev = v[-1]
    return prod(batch_heads) * length * s * (e + ev)


def attention_backward_macs(q: tuple[int, ...], k: tuple[int, ...], v: tuple[int, ...]) -> int:
    """Recomputed scores, dV, dP, dQ and dK: five L x S products per head."""
    *batch_heads, length, e = q
    s = k[-2]
    ev = v[-1]
    return prod(batch_heads) * length * s * (3 * e + 2 * ev)


@register_macs("aten.mm", "aten._int_mm")
def _mm(e: OpEvent) -> int:
    return mm_macs(_t(e, 0).shape, _t(e, 1).shape)


@register_macs("aten.addmm")
def _addmm(e: OpEvent) -> int:
    return mm_macs(_t(e, 1).shape, _t(e, 2).shape)


@register_macs("aten.bmm")
def _bmm(e: OpEvent) -> int:
    return bmm_macs(_t(e, 0).shape, _t(e, 1).shape)


@register_macs("aten.baddbmm", "aten.addbmm")
def _baddbmm(e: OpEvent) -> int:
    return bmm_macs(_t(e, 1).shape, _t(e, 2).shape)


@register_macs("aten.mv")
def _mv(e: OpEvent) -> int:
    return prod(_t(e, 0).shape)


@register_macs("aten.addmv")
def _addmv(e: OpEvent) -> int:
    return prod(_t(e, 1).shape)


@register_macs("aten.dot", "aten.vdot")
def _dot(e: OpEvent) -> int:
    return _t(e, 0).numel


@register_macs("aten.convolution", "aten._convolution", "aten.convolution_overrideable")
def _convolution(e: OpEvent) -> int:
    transposed = bool(e.args[6]) if len(e.args) > 6 else False
    return conv_macs(_t(e, 0).shape, _t(e, 1).shape, e.outputs[0].shape, transposed)


@register_macs(
    "aten._scaled_dot_product_flash_attention_for_cpu",
    "aten._scaled_dot_product_flash_attention",
    "aten._scaled_dot_product_efficient_attention",
    "aten._scaled_dot_product_cudnn_attention",
    "aten._scaled_dot_product_fused_attention_overrideable",
)
def _sdpa(e: OpEvent) -> int:
    return attention_macs(_t(e, 0).shape, _t(e, 1).shape, _t(e, 2).shape)


@register_macs(
    "aten._scaled_dot_product_flash_attention_for_cpu_backward",
    "aten._scaled_dot_product_flash_attention_backward",
    "aten._scaled_dot_product_efficient_attention_backward",
    "aten._scaled_dot_product_cudnn_attention_backward",
)
def _sdpa_backward(e: OpEvent) -> int:
    # (grad_out, query, key, value, ...)
    return attention_backward_macs(_t(e, 1).shape, _t(e, 2).shape, _t(e, 3).shape)


@register_macs("aten._native_multi_head_attention")
def _native_mha(e: OpEvent) -> int:
    """nn.MultiheadAttention's inference fast path: in-projections, attention, out-projection."""
    q, k, v = _t(e, 0).shape, _t(e, 1).shape, _t(e, 2).shape
    embed_dim = int(e.args[3])
    num_heads = int(e.args[4])
    lq, lk = q[-2], k[-2]
    batch = prod(q[:-2])
    head_dim = embed_dim // num_heads
    projections = batch * (lq * q[-1] + lk * k[-1] + lk * v[-1]) * embed_dim
    attention = attention_macs((batch, num_heads, lq, head_dim), (batch, num_heads, lk, head_dim),
                               (batch, num_heads, lk, head_dim))
    out_projection = batch * lq * embed_dim * embed_dim
    return projections + attention + out_projection


@register_macs("aten.convolution_backward")
def _convolution_backward(e: OpEvent) -> int:
    # (grad_out, input, weight, bias_sizes, stride, padding, dilation, transposed,
    #  output_padding, groups, output_mask): grad_input and grad_weight each cost one conv.
    grad_out, x, w = _t(e, 0).shape, _t(e, 1).shape, _t(e, 2).shape
    transposed = bool(e.args[7])
    mask = e.args[10] if len(e.args) > 10 else [True, True, True]
    one = conv_macs(x, w, grad_out, transposed)
    return one * (int(bool(mask[0])) + int(bool(mask[1])))
