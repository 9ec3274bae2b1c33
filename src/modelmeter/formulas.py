"""Closed-form layer formulas: the seed's tables, corrected (SEED-ERRATA.md).

These are the test oracle for the counting engine and the explanation a user
can read; the engine never calls them. Conventions: MACs are multiply-
accumulates of the contractions only; FLOPs = 2 x MACs; bias terms are
counted in parameters (a real counter must) but add no MACs.
"""

from __future__ import annotations

from dataclasses import dataclass
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


# ------------------------------------------------------------------------ LLM
#
# Closed forms for decoder-only transformers (GPT-2 and Llama/Mistral style),
# read from a transformers config dict. They are the oracle for the traced LLM
# view (analysis/llm.py): traced and closed-form FLOPs agree within 1 % (the
# gap is the elementwise work: norms, rotary, softmax, activation), KV-cache
# bytes exactly.


@dataclass(frozen=True)
class DecoderDims:
    """The sizes of a decoder-only transformer that its costs depend on."""

    layers: int
    d_model: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    gated_mlp: bool  # SwiGLU (gate, up, down) vs GELU MLP (fc, proj)
    tied_lm_head: bool
    learned_positions: int  # rows of a learned position table (GPT-2); 0 for rotary
    bias: bool  # projections carry biases (GPT-2)


def decoder_dims(config: dict) -> DecoderDims:
    """Normalise GPT-2 style (`n_embd`, `n_layer`) and Llama style (`hidden_size`) names."""
    if "n_embd" in config:  # GPT-2 family
        d = int(config["n_embd"])
        heads = int(config["n_head"])
        return DecoderDims(
            layers=int(config["n_layer"]), d_model=d, heads=heads, kv_heads=heads,
            head_dim=d // heads, ffn=int(config.get("n_inner") or 4 * d),
            vocab=int(config["vocab_size"]), gated_mlp=False,
            tied_lm_head=bool(config.get("tie_word_embeddings", True)),
            learned_positions=int(config.get("n_positions", 0)), bias=True,
        )
    d = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    return DecoderDims(
        layers=int(config["num_hidden_layers"]), d_model=d, heads=heads,
        kv_heads=int(config.get("num_key_value_heads") or heads),
        head_dim=int(config.get("head_dim") or d // heads), ffn=int(config["intermediate_size"]),
        vocab=int(config["vocab_size"]), gated_mlp=True,
        tied_lm_head=bool(config.get("tie_word_embeddings", False)),
        learned_positions=0, bias=bool(config.get("attention_bias", False)),
    )


def decoder_layer_matmul_params(dims: DecoderDims) -> int:
    """Weights one token multiplies through in one block: q, k, v, o projections and the MLP."""
    q_out = dims.heads * dims.head_dim
    kv_out = dims.kv_heads * dims.head_dim
    attention = dims.d_model * (q_out + 2 * kv_out) + q_out * dims.d_model
    mlp = (3 if dims.gated_mlp else 2) * dims.d_model * dims.ffn
    return attention + mlp


def decoder_params(config: dict) -> int:
    """Every parameter: embeddings, blocks (weights, biases, norms), final norm, LM head if untied."""
    dims = decoder_dims(config)
    q_out = dims.heads * dims.head_dim
    kv_out = dims.kv_heads * dims.head_dim
    per_layer = decoder_layer_matmul_params(dims)
    if dims.gated_mlp:
        per_layer += 2 * dims.d_model  # two RMSNorm weights
        if dims.bias:  # attention_bias: q, k, v, o
            per_layer += q_out + 2 * kv_out + dims.d_model
        final_norm = dims.d_model
    else:
        per_layer += 2 * 2 * dims.d_model  # two LayerNorms, weight and bias
        per_layer += (q_out + 2 * kv_out) + dims.d_model + dims.ffn + dims.d_model  # biases
        final_norm = 2 * dims.d_model
    embeddings = dims.vocab * dims.d_model + dims.learned_positions * dims.d_model
    lm_head = 0 if dims.tied_lm_head else dims.vocab * dims.d_model
    return embeddings + dims.layers * per_layer + final_norm + lm_head


def decoder_attention_flops(dims: DecoderDims, kv_len: int) -> int:
    """Q·Kᵀ and A·V for one query token over `kv_len` keys: 2 x 2 x layers x kv_len x heads x head_dim."""
    return 2 * 2 * dims.layers * kv_len * dims.heads * dims.head_dim


def decoder_flops_per_token(config: dict, kv_len: int) -> int:
    """Matmul FLOPs of one decode step for one sequence attending over `kv_len` positions.

    2 x (block weights + LM head) + the attention term. `kv_len` counts every
    key the new token attends to, itself included (L past tokens -> L + 1).
    Embedding lookups are gathers, not multiplications. Mixture-of-experts
    layers multiply through the router, `top_k` routed experts and any shared
    expert (`moe_dims`); latent attention as `mla_decode_macs`.
    """
    dims = decoder_dims(config)
    moe = moe_dims(config)
    if moe is None and not config.get("kv_lora_rank"):
        weights = dims.layers * decoder_layer_matmul_params(dims) + dims.vocab * dims.d_model
        return 2 * weights + decoder_attention_flops(dims, kv_len)
    if config.get("kv_lora_rank"):
        attention = dims.layers * mla_decode_macs(config, kv_len)
    else:
        q_out, kv_out = dims.heads * dims.head_dim, dims.kv_heads * dims.head_dim
        attention = dims.layers * (dims.d_model * (q_out + 2 * kv_out) + q_out * dims.d_model)
        attention += decoder_attention_flops(dims, kv_len) // 2
    mlp = dims.layers * 3 * dims.d_model * dims.ffn
    if moe is not None:
        active = moe.top_k * moe.expert_ffn + moe.shared_ffn
        mlp = (dims.layers - moe.moe_layers) * 3 * dims.d_model * dims.ffn + moe.moe_layers * (
            3 * dims.d_model * active + dims.d_model * moe.experts)
    return 2 * (attention + mlp + dims.vocab * dims.d_model)


@dataclass(frozen=True)
class MoeDims:
    """A mixture-of-experts decoder's routed layers (transformers config names normalised)."""

    experts: int  # routed experts per MoE layer
    top_k: int
    expert_ffn: int  # one routed expert's hidden width
    shared_ffn: int  # hidden width of the always-on shared expert(s), 0 if none
    moe_layers: int  # layers with routed experts (the rest have a dense MLP of `intermediate_size`)


def moe_dims(config: dict) -> MoeDims | None:
    """Mixtral/gpt-oss (`num_local_experts`), Qwen/OLMoE (`num_experts`), DeepSeek (`n_routed_experts`)."""
    experts = config.get("num_local_experts") or config.get("num_experts") or config.get("n_routed_experts")
    if not experts:
        return None
    expert_ffn = int(config.get("moe_intermediate_size") or config["intermediate_size"])
    shared = int(config.get("n_shared_experts") or 0) * expert_ffn
    shared += int(config.get("shared_expert_intermediate_size") or 0)
    layers = int(config["num_hidden_layers"])
    dense = int(config.get("first_k_dense_replace") or 0) + len(config.get("mlp_only_layers") or [])
    return MoeDims(int(experts), int(config["num_experts_per_tok"]), expert_ffn, shared, layers - dense)


def mla_decode_macs(config: dict, kv_len: int) -> int:
    """One layer of multi-head latent attention (DeepSeek-V2/V3) for one new token, as transformers runs it.

    Projections of the token (q_a, q_b or q, kv_a, o); the cached latent of all
    `kv_len` positions decompressed through kv_b every step; Q·Kᵀ over
    qk_nope + qk_rope dims and A·V over v_head_dim, per head.
    """
    d, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    rank, rope = int(config["kv_lora_rank"]), int(config["qk_rope_head_dim"])
    nope, v = int(config["qk_nope_head_dim"]), int(config["v_head_dim"])
    q_rank = config.get("q_lora_rank")
    q = d * heads * (nope + rope) if not q_rank else d * q_rank + q_rank * heads * (nope + rope)
    token = q + d * (rank + rope) + heads * v * d
    return token + kv_len * rank * heads * (nope + v) + heads * kv_len * (nope + rope + v)


def decoder_prefill_flops(config: dict, prompt: int, batch: int = 1, logits_tokens: int = 1) -> int:
    """Matmul FLOPs of a prefill of `prompt` tokens per sequence.

    Attention is counted densely (prompt x prompt per head), as the traced math
    path computes it; a causal kernel that skips masked blocks does about half.
    `logits_tokens`: positions the LM head runs on (1 when generating).
    """
    dims = decoder_dims(config)
    blocks = 2 * prompt * dims.layers * decoder_layer_matmul_params(dims)
    head = 2 * logits_tokens * dims.vocab * dims.d_model
    return batch * (blocks + head + prompt * decoder_attention_flops(dims, prompt))


def kv_cache_bytes(config: dict, tokens: int, bytes_per_element: float) -> float:
    """2 (K and V) x layers x kv_heads x head_dim x bytes x tokens (all sequences together).

    Multi-head latent attention caches the compressed latent instead:
    layers x (kv_lora_rank + qk_rope_head_dim) x bytes x tokens (DeepSeek-V3 bf16: 70,272 B/token).
    """
    dims = decoder_dims(config)
    if config.get("kv_lora_rank"):
        latent = int(config["kv_lora_rank"]) + int(config["qk_rope_head_dim"])
        return dims.layers * latent * bytes_per_element * tokens
    return 2 * dims.layers * dims.kv_heads * dims.head_dim * bytes_per_element * tokens
