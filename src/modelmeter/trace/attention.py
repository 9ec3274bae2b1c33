"""Which attention kernel `scaled_dot_product_attention` runs while tracing (layer 1).

SDPA picks its kernel by device: GPUs run fused flash / memory-efficient
kernels, CPUs `_scaled_dot_product_flash_attention_for_cpu`; the meta device
has no fused kernel and decomposes SDPA into its math form (bmm, softmax,
masking), which materialises the L x S score and probability matrices, keeps
them for backward, and moves them through memory. That is right only for
unfused attention, so the implementation is a what-if the caller chooses:

* ``flash``: every SDPA call records one fused op,
  `aten._scaled_dot_product_flash_attention_for_cpu` (it has a meta kernel and
  takes masks, `is_causal`, `scale` and grouped K/V heads), whose only outputs,
  and only tensors saved for backward besides Q, K, V, are the attention output
  and its log-sum-exp. Value heads narrower than query heads (MLA) take the
  memory-efficient kernel, whose meta rule gives the output v's width (on CPU,
  which has no such kernel, SDPA runs as PyTorch dispatches it). A fused
  kernel fuses attention dropout (it keeps an RNG seed, not a mask); the CPU
  kernel refuses dropout on real tensors, so there it runs without it.
  On a GPU tensor SDPA is left to pick its own fused kernel.
* ``math``: SDPA's math decomposition on every device (`SDPBackend.MATH`).

MACs are the same either way (the same two products per head, counted densely);
bytes and memory differ. Models that compute attention themselves (eager
attention: matmul, softmax, matmul) make no SDPA call and are traced as written.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..core.attention import FLASH, MATH, check_attention

_NAMES = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


class AttentionMode(TorchFunctionMode):
    """Route every `F.scaled_dot_product_attention` call to `implementation`; count the calls."""

    def __init__(self, implementation: str) -> None:
        super().__init__()
        self.implementation = check_attention(implementation) or FLASH
        self.calls = 0

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        self.calls += 1
        if self.implementation == MATH:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with sdpa_kernel(SDPBackend.MATH):
                return func(*args, **kwargs)
        bound = {**dict(zip(_NAMES, args, strict=False)), **kwargs}
        q, k, v = bound["query"], bound["key"], bound["value"]
        if q.device.type not in ("meta", "cpu"):
            return func(*args, **kwargs)  # a GPU picks its own fused kernel
        dropout = float(bound.get("dropout_p") or 0.0)
        if q.device.type == "cpu":
            dropout = 0.0  # the CPU kernel has no dropout; a fused kernel's costs no memory
        mask, causal, scale = bound.get("attn_mask"), bool(bound.get("is_causal")), bound.get("scale")
        if v.shape[-1] != q.shape[-1]:
            if q.device.type == "cpu":
                return func(*args, **kwargs)  # no CPU kernel for narrower values: what CPU runs
            if k.shape[-3] != q.shape[-3]:
                k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
                v = v.repeat_interleave(q.shape[-3] // v.shape[-3], dim=-3)
            return torch.ops.aten._scaled_dot_product_efficient_attention(
                q, k, v, mask, False, dropout, causal, scale=scale)[0]
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, dropout, causal, attn_mask=mask, scale=scale)[0]

