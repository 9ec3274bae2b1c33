"""Closed-form layer formulas: the seed's tables, corrected (SEED-ERRATA.md).

These are the test oracle for the counting engine and the explanation a user
can read; the engine never calls them. Conventions: MACs are multiply-
accumulates of the contractions only; FLOPs = 2 x MACs; bias terms are
counted in parameters (a real counter must) but add no MACs.
"""

from __future__ import annotations

from math import prod


def linear_params(c_in: int, c_out: int, bias: bool = True) -> int:
    return c_in * c_out + (c_out if bias else 0)


def linear_macs(c_in: int, c_out: int, vectors: int = 1) -> int:
    """Erratum 2: c_in x c_out per input vector; B x N vectors cost B·N·c_in·c_out."""
    return vectors * c_in * c_out


def conv_params(c_in: int, c_out: int, kernel: tuple[int, ...], groups: int = 1, bias: bool = True) -> int:
    """Erratum 3: each output channel has a c_in/g x k_h x k_w kernel."""
    return c_out * (c_in // groups) * prod(kernel) + (c_out if bias else 0)


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_transpose_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0,
                               dilation: int = 1, output_padding: int = 0) -> int:
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def conv_macs(c_in: int, c_out: int, kernel: tuple[int, ...], out_spatial: tuple[int, ...],
              groups: int = 1, batch: int = 1) -> int:
    """Each output element: (c_in/g) x k_h x k_w multiply-accumulates."""
    return batch * c_out * prod(out_spatial) * (c_in // groups) * prod(kernel)


def conv_transpose_macs(c_in: int, c_out: int, kernel: tuple[int, ...], in_spatial: tuple[int, ...],
                        groups: int = 1, batch: int = 1) -> int:
    """Each input element scatters into (c_out/g) x kernel outputs."""
    return batch * c_in * prod(in_spatial) * (c_out // groups) * prod(kernel)


def attention_params(d_model: int, n_heads: int, n_kv_heads: int | None = None,
                     bias: bool = False) -> int:
    """Q, K, V and output projections; with GQA, K and V shrink to d·(n_kv·head_dim)."""
    head_dim = d_model // n_heads
    kv = (n_kv_heads or n_heads) * head_dim
    weights = d_model * d_model * 2 + 2 * d_model * kv
    biases = (2 * d_model + 2 * kv) if bias else 0
    return weights + biases


def attention_score_macs(batch: int, n_heads: int, q_len: int, kv_len: int, head_dim: int,
                         v_head_dim: int | None = None) -> int:
    """Q·Kᵀ plus A·V. Causal masks are counted densely (q_len x kv_len per head)."""
    return batch * n_heads * q_len * kv_len * (head_dim + (v_head_dim or head_dim))


def attention_macs(seq: int, d_model: int, n_heads: int, n_kv_heads: int | None = None,
                   batch: int = 1, kv_len: int | None = None) -> int:
    """Erratum 1: 4·N·d² + 2·N²·d for self-attention (all heads, no bias); GQA shrinks K, V.

    Projections: Q and output N·d² each; K and V N·d·(n_kv·head_dim) each.
    Scores and weighted values: N·S·d each (S = kv_len, N for self-attention).
    """
    head_dim = d_model // n_heads
    kv = (n_kv_heads or n_heads) * head_dim
    s = seq if kv_len is None else kv_len
    projections = batch * seq * (2 * d_model * d_model + 2 * d_model * kv)
    return projections + attention_score_macs(batch, n_heads, seq, s, head_dim)


def flops(macs: int) -> int:
    """The seed's identity: one MAC is a multiply and an add."""
    return 2 * macs
