"""MACs of tensor contractions: matmuls, convolutions, attention (layer 1, pure).

One MAC is one multiply-accumulate; FLOPs = 2 x MACs for these ops (PyTorch's
FlopCounterMode convention). These formulas are the authority: the counter
uses PyTorch's registered figure (recorded in the trace) only for ops that
have no formula here. They also cover what PyTorch's registry lacks (CPU
attention kernels, nn.MultiheadAttention's fused path, mv/dot, grouped
matmuls of mixture-of-experts layers) and get right
what it gets wrong: its convolution backward ignores `groups` for the weight
gradient, and its formulas for the kernels below SDPA swap heads and length.
tests/test_formulas_oracle.py compares both on every op both know.

Attention with a causal mask is counted densely, L x S per head, as PyTorch
and the papers (e.g. Kaplan et al. 2020, the FlashAttention papers) do: a
kernel may skip the masked half, but the count describes the operation.
"""

from __future__ import annotations

from collections.abc import Iterable
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


def grouped_mm_macs(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """`torch._grouped_mm(a, b, offs)`: E groups of matmuls in one call, as mixture-of-
    experts layers run their experts. Offsets (data, not shapes) split one dimension
    into groups, so the shapes give the whole: every row of `a` meets one group's
    weights. The variants torch supports:

    - 2D x 3D, a [S, K], b [E, K, N], offs split S (tokens sorted by expert): S·K·N;
    - 3D x 2D, a [E, M, K], b [K, N], offs split N: each group's M x K block meets
      its N-slice: M·K·N;
    - 2D x 2D, a [M, K], b [K, N], offs split K, out [E, M, N] (the weight gradient
      of the 2D x 3D case): each group sums its K-slice: M·K·N;
    - 3D x 3D, a [E, M, K], b [E, K, N], no offs: a batched matmul, E·M·K·N.

    Rows past the last offset (padding) are counted too: the shapes cannot say.
    """
    if len(a) == 3 and len(b) == 3:
        return bmm_macs(a, b)
    if len(a) == 3:  # 3D x 2D
        return a[1] * a[2] * b[1]
    return a[0] * a[1] * b[-1]  # 2D x 3D and 2D x 2D


@register_macs("aten.mm", "aten._int_mm", "aten._scaled_mm")
def _mm(e: OpEvent) -> int:
    return mm_macs(_t(e, 0).shape, _t(e, 1).shape)


@register_macs("aten._grouped_mm", "aten._scaled_grouped_mm")
def _grouped_mm(e: OpEvent) -> int:
    # Its backward runs as two more _grouped_mm calls, counted by this same formula:
    # grad input [S, N] x [E, N, K] (2D x 3D) and grad weight [K, S] x [S, N] (2D x 2D).
    return grouped_mm_macs(_t(e, 0).shape, _t(e, 1).shape)


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


# The device kernels convolution dispatches to, when a trace sees them directly
# (input, weight, ...) -> output; weight layouts as in conv_macs.
@register_macs("aten._slow_conv2d_forward", "aten.thnn_conv2d", "aten.slow_conv3d_forward",
               "aten.slow_conv_dilated2d", "aten.slow_conv_dilated3d", "aten._conv_depthwise2d",
               "aten.conv_depthwise3d", "aten.cudnn_convolution", "aten.mkldnn_convolution",
               "aten.miopen_convolution", "aten.miopen_depthwise_convolution")
def _conv_kernel(e: OpEvent) -> int:
    return conv_macs(_t(e, 0).shape, _t(e, 1).shape, e.outputs[0].shape, False)


@register_macs("aten.cudnn_convolution_transpose", "aten.slow_conv_transpose2d",
               "aten.slow_conv_transpose3d", "aten.miopen_convolution_transpose")
def _conv_transpose_kernel(e: OpEvent) -> int:
    return conv_macs(_t(e, 0).shape, _t(e, 1).shape, e.outputs[0].shape, True)


@register_macs(
    "aten._scaled_dot_product_flash_attention_for_cpu",
    "aten._scaled_dot_product_flash_attention",
    "aten._scaled_dot_product_efficient_attention",
    "aten._scaled_dot_product_cudnn_attention",
    "aten._scaled_dot_product_fused_attention_overrideable",
)
def _sdpa(e: OpEvent) -> int:
    return attention_macs(_t(e, 0).shape, _t(e, 1).shape, _t(e, 2).shape)


_SDPA_BACKWARDS = (
    "aten._scaled_dot_product_flash_attention_for_cpu_backward",
    "aten._scaled_dot_product_flash_attention_backward",
    "aten._scaled_dot_product_efficient_attention_backward",
    "aten._scaled_dot_product_cudnn_attention_backward",
)


@register_macs(*_SDPA_BACKWARDS)
def _sdpa_backward(e: OpEvent) -> int:
    return attention_backward_macs(*_fused_backward_qkv(e))


def _fused_backward_qkv(e: OpEvent) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """q, k, v as [B, H, L, E] of a fused attention backward."""
    if e.packet in _SDPA_BACKWARDS:
        return _t(e, 1).shape, _t(e, 2).shape, _t(e, 3).shape  # (grad_out, query, key, value, ...)
    # (grad_out, query, key, value, out|bias, ..., cum_seq_q, cum_seq_k, max_q, max_k, ...)
    return _kernel_layout(e, 1, 6, 8, 9)


FUSED_ATTENTION_BACKWARDS = (*_SDPA_BACKWARDS, "aten._flash_attention_backward",
                             "aten._efficient_attention_backward")
BACKWARD_ATTENTION_CONVENTION = (
    "a fused attention backward (flash / memory-efficient kernels) keeps no scores, so it "
    "recomputes Q·Kᵀ before dV, dP, dQ and dK: five L x S products per head, 2.5x the forward's "
    "two (torch's own formula); the math form's backward reuses the saved scores: four, 2x")


def attention_recompute(events: Iterable[OpEvent]) -> tuple[int, int]:
    """(fused attention backward calls, MACs of their Q·Kᵀ recompute) among `events`."""
    calls = macs = 0
    for e in events:
        if e.packet in FUSED_ATTENTION_BACKWARDS:
            (*batch_heads, length, dim), k, _ = _fused_backward_qkv(e)
            calls += 1
            macs += prod(batch_heads) * length * k[-2] * dim
    return calls, macs


def _kernel_layout(e: OpEvent, q: int, cum_seq_q: int, max_q: int, max_k: int
                   ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """q, k, v of the kernels below SDPA (`_flash_attention_*`, `_efficient_attention_*`) as
    [B, H, L, E]. Those kernels take [B, L, H, E] (SDPA transposes before calling them),
    or, for variable-length batches, [total tokens, H, E] with cumulative offsets: the
    offsets are data, so every sequence is counted at the longest length (max_q, max_k),
    an upper bound."""
    qs, ks, vs = _t(e, q).shape, _t(e, q + 1).shape, _t(e, q + 2).shape
    if len(qs) == 4:
        return ((qs[0], qs[2], qs[1], qs[3]), (ks[0], ks[2], ks[1], ks[3]),
                (vs[0], vs[2], vs[1], vs[3]))
    batch = _t(e, cum_seq_q).shape[0] - 1
    lq, lk = int(e.args[max_q]), int(e.args[max_k])
    return ((batch, qs[1], lq, qs[2]), (batch, ks[1], lk, ks[2]), (batch, vs[1], lk, vs[2]))


@register_macs("aten._flash_attention_forward")
def _flash_kernel(e: OpEvent) -> int:
    # (query, key, value, cum_seq_q, cum_seq_k, max_q, max_k, ...)
    return attention_macs(*_kernel_layout(e, 0, 3, 5, 6))


@register_macs("aten._efficient_attention_forward")
def _efficient_kernel(e: OpEvent) -> int:
    # (query, key, value, bias, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, ...)
    return attention_macs(*_kernel_layout(e, 0, 4, 6, 7))


@register_macs("aten._flash_attention_backward", "aten._efficient_attention_backward")
def _kernel_backward(e: OpEvent) -> int:
    return attention_backward_macs(*_fused_backward_qkv(e))


def native_mha_macs(q: tuple[int, ...], k: tuple[int, ...], v: tuple[int, ...],
                    embed_dim: int, num_heads: int) -> int:
    """nn.MultiheadAttention's fused form: q/k/v in-projections, attention per head, out-projection."""
    lq, lk = q[-2], k[-2]
    batch = prod(q[:-2])
    head_dim = embed_dim // num_heads
    projections = batch * (lq * q[-1] + lk * k[-1] + lk * v[-1]) * embed_dim
    attention = attention_macs((batch, num_heads, lq, head_dim), (batch, num_heads, lk, head_dim),
                               (batch, num_heads, lk, head_dim))
    out_projection = batch * lq * embed_dim * embed_dim
    return projections + attention + out_projection


@register_macs("aten._native_multi_head_attention")
def _native_mha(e: OpEvent) -> int:
    """nn.MultiheadAttention's inference fast path."""
    return native_mha_macs(_t(e, 0).shape, _t(e, 1).shape, _t(e, 2).shape, int(e.args[3]), int(e.args[4]))


@register_macs("aten._transformer_encoder_layer_fwd")
def _encoder_layer(e: OpEvent) -> int:
    """nn.TransformerEncoderLayer's inference fast path: self-attention as `_native_mha`, then the
    feed-forward block's two projections, tokens x d_model x d_ff each. PyTorch's FlopCounterMode
    has no formula for this kernel (it counts 0); this is the closed form of the layer's decomposed
    matmuls, which is what FlopCounterMode counts with the fast path off. Layer norms, bias adds,
    softmax and the activation are not contractions and are not counted here (nor, for this
    kernel, as other FLOPs)."""
    # (src, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias, use_gelu,
    #  norm_first, eps, norm_weight_1, norm_bias_1, norm_weight_2, norm_bias_2,
    #  ffn_weight_1, ffn_bias_1, ffn_weight_2, ffn_bias_2, mask, mask_type)
    src = _t(e, 0).shape
    d_ff = _t(e, 14).shape[0]
    tokens = prod(src[:-1])
    attention = native_mha_macs(src, src, src, int(e.args[1]), int(e.args[2]))
    return attention + 2 * tokens * src[-1] * d_ff


@register_macs("aten.convolution_backward")
def _convolution_backward(e: OpEvent) -> int:
    # (grad_out, input, weight, bias_sizes, stride, padding, dilation, transposed,
    #  output_padding, groups, output_mask): grad_input and grad_weight each cost one
    # forward conv. grad_input: every input element receives c_out/g x kernel products;
    # grad_weight: every weight element [c_out, c_in/g, *k] sums one product per output
    # position, N x out spatial. Both equal the forward's MACs, *with* groups (PyTorch's
    # conv_backward_flop uses c_in for the weight gradient, g times too much).
    grad_out, x, w = _t(e, 0).shape, _t(e, 1).shape, _t(e, 2).shape
    transposed = bool(e.args[7])
    mask = e.args[10] if len(e.args) > 10 else [True, True, True]
    one = conv_macs(x, w, grad_out, transposed)
    return one * (int(bool(mask[0])) + int(bool(mask[1])))
