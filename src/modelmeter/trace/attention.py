"""Which attention kernel `scaled_dot_product_attention` runs while tracing (layer 1).

SDPA picks its kernel by device. On a CPU, torch's own rules
(`select_sdp_backend_cpp`, asked here through `torch._fused_sdp_choice`) send a
call to the fused `_scaled_dot_product_flash_attention_for_cpu` unless it has
dropout, tensors that are not 4-D, query/key/value head dims that differ (MLA),
a mask of another shape, a mask that requires grad, a last dim of stride != 1,
an unsupported dtype, or flash disabled (`sdpa_kernel`); those run the math
form. The meta device has no fused kernel and always decomposes SDPA into its
math form (bmm, softmax, masking), which materialises the L x S score and
probability matrices, keeps them for backward, and moves them through memory.
The implementation is therefore a what-if the caller chooses:

* ``flash``: every SDPA call takes the kernel a CPU would take for it. On real
  tensors SDPA runs as PyTorch dispatches it (the trace sees the real kernel);
  on meta the same rules are asked of stand-in CPU tensors of the same shapes,
  strides and dtypes (zero-stride, nothing allocated), and a call they send to
  flash records `_scaled_dot_product_flash_attention_for_cpu` (a bool mask
  turned into an additive one first, as torch does), one they send to math
  records the math form. So meta and cpu traces of a model are the same. On a
  GPU tensor SDPA is left to pick its own fused kernel.
* ``math``: SDPA's math decomposition on every device (`SDPBackend.MATH`).

MACs are the same either way (the same two products per head, counted densely);
bytes and memory differ. Models that compute attention themselves (eager
attention: matmul, softmax, matmul) make no SDPA call and are traced as written.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import _disable_current_modes

from ..core.attention import CPU_RULES, FLASH, MATH, check_attention

_NAMES = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
_CPU_FLASH = 1  # torch's SDPBackend index that `_fused_sdp_choice` returns for flash


class AttentionMode(TorchFunctionMode):
    """Route every `F.scaled_dot_product_attention` call to `implementation`; count the calls.

    `kernels`: how many calls took each kernel ('flash', 'math', or 'device' on a GPU).
    """

    def __init__(self, implementation: str) -> None:
        super().__init__()
        self.implementation = check_attention(implementation) or FLASH
        self.calls = 0
        self.kernels: Counter[str] = Counter()
        self.rules = CPU_RULES

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        self.calls += 1
        bound = {**dict(zip(_NAMES, args, strict=False)), **kwargs}
        device = bound["query"].device.type
        if self.implementation == MATH:
            self.kernels[MATH] += 1
            return _math(func, args, kwargs)
        if device not in ("meta", "cpu"):
            self.kernels["device"] += 1
            return func(*args, **kwargs)  # a GPU picks its own fused kernel
        kernel = cpu_kernel(bound)
        self.kernels[kernel] += 1
        if device == "cpu" or kernel == MATH:
            return func(*args, **kwargs)  # what the CPU runs; meta decomposes into math itself
        q, k, v = bound["query"], bound["key"], bound["value"]
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, float(bound.get("dropout_p") or 0.0), bool(bound.get("is_causal")),
            attn_mask=_additive(bound.get("attn_mask"), q), scale=bound.get("scale"))[0]


def cpu_kernel(bound: dict[str, Any]) -> str:
    """'flash' or 'math': the kernel torch's CPU rules pick for these SDPA arguments."""
    with _disable_current_modes():  # the stand-ins are no ops of the model
        try:
            choice = torch._fused_sdp_choice(
                *(_stand_in(bound.get(n)) for n in ("query", "key", "value", "attn_mask")),
                float(bound.get("dropout_p") or 0.0), bool(bound.get("is_causal")),
                scale=bound.get("scale"), enable_gqa=bool(bound.get("enable_gqa")))
        except RuntimeError:
            return MATH  # arguments SDPA itself rejects: the call below says why
    return FLASH if choice == _CPU_FLASH else MATH


def _stand_in(t: torch.Tensor | None) -> torch.Tensor | None:
    """A CPU tensor the selection rules cannot tell from `t`: its shape, dtype, last stride and
    requires_grad, every other stride 0 so it holds one row."""
    if t is None or t.dim() == 0 or t.numel() == 0:
        return None if t is None else torch.empty(t.shape, dtype=t.dtype)
    row = torch.empty((t.shape[-1] - 1) * t.stride(-1) + 1, dtype=t.dtype)
    strides = (0,) * (t.dim() - 1) + (t.stride(-1),)
    stand_in = row.as_strided(t.shape, strides)
    return stand_in.requires_grad_() if t.requires_grad and t.is_floating_point() else stand_in


def _additive(mask: torch.Tensor | None, query: torch.Tensor) -> torch.Tensor | None:
    # The fused CPU kernel takes an additive mask of the query's dtype; SDPA turns a bool
    # mask into one (-inf where False) before calling it, with these same three ops.
    if mask is None or mask.dtype != torch.bool:
        return mask
    minus_inf = torch.scalar_tensor(float("-inf"), dtype=query.dtype, device=query.device)
    zero = torch.scalar_tensor(0.0, dtype=query.dtype, device=query.device)
    return torch.where(mask, zero, minus_inf)


def _math(func: Any, args: Any, kwargs: Any) -> Any:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        return func(*args, **kwargs)
