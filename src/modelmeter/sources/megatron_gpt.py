"""The GPT of Megatron-LM as its published runs trained it, for validation (layer 1).

Two variants, each one traced op per kernel the run launched:

* ``2021`` (Narayanan et al. 2021, Korthikanti et al. 2022): apex's fused
  LayerNorm, unfused attention (the s x s scores written, the fused
  scale-mask-softmax kernel, dropout on the probabilities; flash attention came
  in 2022), fused bias-GeLU, one-kernel dropout, an output head tied to the
  word embeddings and fp32 logits for the vocab-parallel cross-entropy;
* ``core`` (Megatron-Core r0.8 with Transformer Engine): the same blocks with a
  fused (flash) attention kernel and an untied output head, as the published
  model sizes imply (1.7 B at h = 2048, 24 layers, vocab 131,072 counts the head
  separately).

Parameters and FLOPs equal the papers' formula (72 B s l h^2 (1 + s/6h + V/16lh)
per forward and backward, tested).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..core.errors import UserInputError

__all__ = ["MegatronGPT", "VARIANTS"]

VARIANTS = ("2021", "core")


def _dropout(x: torch.Tensor, p: float = 0.1) -> torch.Tensor:
    # torch's CUDA dropout is one kernel (aten.native_dropout: x in, output and a byte mask
    # out); on meta/CPU F.dropout decomposes into four ops, so call the kernel CUDA runs.
    return torch.ops.aten.native_dropout(x, p, True)[0]


class _Layer(nn.Module):
    def __init__(self, h: int, heads: int, flash: bool) -> None:
        super().__init__()
        self.heads, self.hd, self.flash = heads, h // heads, flash
        self.input_layernorm = nn.LayerNorm(h)
        self.qkv = nn.Linear(h, 3 * h)
        self.dense = nn.Linear(h, h)
        self.post_attention_layernorm = nn.LayerNorm(h)
        self.fc1 = nn.Linear(h, 4 * h)
        self.fc2 = nn.Linear(4 * h, h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        qkv = self.qkv(self.input_layernorm(x)).view(b, s, self.heads, 3 * self.hd)
        q, k, v = (t.permute(0, 2, 1, 3) for t in qkv.split(self.hd, dim=-1))
        if self.flash:
            ctx = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=0.0)
        else:
            q, k, v = (t.reshape(b * self.heads, s, self.hd) for t in (q, k, v))
            scores = torch.bmm(q, k.transpose(1, 2))  # the 1/sqrt(d) scale rides in the softmax kernel
            probs = _dropout(torch.softmax(scores, dim=-1))  # fused scale + causal mask + softmax
            ctx = torch.bmm(probs, v).view(b, self.heads, s, self.hd)
        ctx = ctx.permute(0, 2, 1, 3).reshape(b, s, h)
        x = x + _dropout(self.dense(ctx))
        y = self.fc2(F.gelu(self.fc1(self.post_attention_layernorm(x)), approximate="tanh"))
        return x + _dropout(y)


class MegatronGPT(nn.Module):
    def __init__(self, vocab: int, seq: int, hidden: int, heads: int, layers: int, variant: str = "2021") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise UserInputError(f"variant {variant!r}: expected one of {', '.join(VARIANTS)}")
        self.variant = variant
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(seq, hidden)
        self.layers = nn.ModuleList(_Layer(hidden, heads, variant == "core") for _ in range(layers))
        self.final_layernorm = nn.LayerNorm(hidden)
        self.output = None if variant == "2021" else nn.Linear(hidden, vocab, bias=False)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = _dropout(self.word_embeddings(input_ids) + self.position_embeddings(pos))
        for layer in self.layers:
            x = layer(x)
        x = self.final_layernorm(x)
        logits = F.linear(x, self.word_embeddings.weight) if self.output is None else self.output(x)
        # Megatron-LM's vocab-parallel cross-entropy takes the logits in fp32.
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten())
