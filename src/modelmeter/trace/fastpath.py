"""nn.TransformerEncoderLayer's and nn.MultiheadAttention's inference fast paths while tracing (layer 1).

In eval mode under `no_grad`, torch runs these modules as one fused kernel each
(`aten._transformer_encoder_layer_fwd`, `aten._native_multi_head_attention`)
instead of their Python decomposition, when a list of conditions holds (their
`forward` in torch/nn/modules/transformer.py and activation.py). The fused
kernel keeps no per-op intermediates alive between ops: a 2-layer d_model-256
encoder at batch 8 x 128 tokens holds 2.1 MB at op boundaries, the decomposed
path 11-19 MB. A trace does not meet two of those conditions on its own:

* any `TorchFunctionMode` (the trace's attention and dropout modes) makes
  `has_torch_function` true, which sends every call to the decomposition;
* the meta device is not on the kernel's device list.

So while tracing, each such module's `forward` is replaced by one that applies
torch's conditions itself, as the real call on the target device would: the
trace's own modes are not the model's tensors (a real tensor subclass still
rules the fast path out), and meta stands for a CPU (meta = cpu wherever both
run). When they hold, the module calls the fused kernel with the arguments
torch passes (masks merged by `merge_masks`); otherwise its own `forward` runs,
decomposed. Training, autograd on trainable weights, odd head counts,
`batch_first=False`, per-module hooks, autocast, `norm1.eps != norm2.eps`,
custom activations, cross-attention and the other listed cases all decompose,
as in torch. `tests/test_fastpath.py` checks the decision against torch's
own on real CPU calls.

Not modelled: `nn.TransformerEncoder`'s own sparsity path (a padding mask with
`enable_nested_tensor`: the batch becomes a nested tensor, padding skipped).
It is traced dense, the padding mask merged into each fused layer: an upper
bound on the work. A subclass that overrides `forward` is left alone.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.attention import FUSED_ENCODER, FUSED_MHA

# torch's list, plus meta as the CPU it stands for.
_DEVICES = ("cpu", "cuda", "xpu", "meta")


class FastPaths:
    """While entered, `root`'s encoder layers and attention modules take the fast path as torch
    would on the target device; `calls` counts the fused calls by kernel."""

    def __init__(self, root: nn.Module) -> None:
        self.calls: Counter[str] = Counter()
        self._patched: list[nn.Module] = []
        self._modules = [m for m in root.modules() if _eligible(m)]

    def __enter__(self) -> FastPaths:
        for m in self._modules:
            if "forward" in m.__dict__:
                continue  # the caller replaced forward already: leave theirs
            impl = _encoder_forward if isinstance(m, nn.TransformerEncoderLayer) else _mha_forward
            m.forward = _bound(impl, m, self.calls)  # type: ignore[method-assign]
            self._patched.append(m)
        return self

    def __exit__(self, *exc: object) -> None:
        for m in self._patched:
            del m.__dict__["forward"]
        self._patched.clear()


def _eligible(m: nn.Module) -> bool:
    # Only torch's own forward: a subclass's forward may compute something else.
    return ((type(m).forward is nn.TransformerEncoderLayer.forward
             and isinstance(m, nn.TransformerEncoderLayer))
            or (type(m).forward is nn.MultiheadAttention.forward and isinstance(m, nn.MultiheadAttention)))


def _bound(impl: Any, module: nn.Module, calls: Counter[str]) -> Any:
    def forward(*args: Any, **kwargs: Any) -> Any:
        return impl(module, calls, *args, **kwargs)
    return forward


def _subclassed(tensors: tuple[torch.Tensor | None, ...]) -> bool:
    """`has_torch_function` for the tensors alone, the trace's modes aside."""
    disabled = torch._C._disabled_torch_function_impl
    return any(t is not None and type(t) not in (torch.Tensor, nn.Parameter)
               and getattr(type(t), "__torch_function__", disabled) is not disabled for t in tensors)


def _tensors_allow(tensors: tuple[Any, ...]) -> bool:
    """The tensor conditions both fast paths share: no subclass, a supported device, and no
    autograd graph to record (grad enabled with a tensor that requires grad)."""
    if _subclassed(tensors):
        return False
    if not all(t is None or t.device.type in _DEVICES for t in tensors):
        return False
    return not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors))


def encoder_fast_path(layer: nn.TransformerEncoderLayer, src: torch.Tensor,
                      src_mask: torch.Tensor | None, padding_mask: torch.Tensor | None) -> bool:
    """Whether torch's TransformerEncoderLayer.forward takes `_transformer_encoder_layer_fwd`
    for these (canonical) arguments on the target device."""
    attn = layer.self_attn
    hooked = any(len(getattr(m, "_forward_hooks", {})) + len(getattr(m, "_forward_pre_hooks", {}))
                 for m in layer.modules())
    if (not torch.backends.mha.get_fastpath_enabled() or src.dim() != 3 or layer.training
            or not attn.batch_first or attn.in_proj_bias is None or not attn._qkv_same_embed_dim
            or not layer.activation_relu_or_gelu or layer.norm1.eps != layer.norm2.eps
            or (src.is_nested and (padding_mask is not None or src_mask is not None))
            or attn.num_heads % 2 == 1 or torch.is_autocast_enabled() or hooked):
        return False
    return _tensors_allow((src, attn.in_proj_weight, attn.in_proj_bias, attn.out_proj.weight,
                           attn.out_proj.bias, layer.norm1.weight, layer.norm1.bias,
                           layer.norm2.weight, layer.norm2.bias, layer.linear1.weight,
                           layer.linear1.bias, layer.linear2.weight, layer.linear2.bias))


def _encoder_forward(layer: nn.TransformerEncoderLayer, calls: Counter[str], src: torch.Tensor,
                     src_mask: torch.Tensor | None = None,
                     src_key_padding_mask: torch.Tensor | None = None, is_causal: bool = False) -> Any:
    padding = F._canonical_mask(mask=src_key_padding_mask, mask_name="src_key_padding_mask",
                                other_type=F._none_or_dtype(src_mask), other_name="src_mask",
                                target_type=src.dtype)
    mask = F._canonical_mask(mask=src_mask, mask_name="src_mask", other_type=None, other_name="",
                             target_type=src.dtype, check_other=False)
    if not encoder_fast_path(layer, src, mask, padding):
        return nn.TransformerEncoderLayer.forward(layer, src, src_mask, src_key_padding_mask, is_causal)
    calls[FUSED_ENCODER] += 1
    attn = layer.self_attn
    merged, mask_type = attn.merge_masks(mask, padding, src)
    return torch._transformer_encoder_layer_fwd(
        src, attn.embed_dim, attn.num_heads, attn.in_proj_weight, attn.in_proj_bias,
        attn.out_proj.weight, attn.out_proj.bias, layer.activation_relu_or_gelu == 2,
        layer.norm_first, layer.norm1.eps, layer.norm1.weight, layer.norm1.bias,
        layer.norm2.weight, layer.norm2.bias, layer.linear1.weight, layer.linear1.bias,
        layer.linear2.weight, layer.linear2.bias, merged, mask_type)


def mha_fast_path(attn: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor,
                  value: torch.Tensor, attn_mask: torch.Tensor | None,
                  padding_mask: torch.Tensor | None, float_mask: bool) -> bool:
    """Whether torch's MultiheadAttention.forward takes `_native_multi_head_attention` for these
    (canonical) arguments on the target device; `float_mask`: a mask was given as floats."""
    if (float_mask or not torch.backends.mha.get_fastpath_enabled() or query.dim() != 3
            or query is not key or key is not value or attn.in_proj_weight is None
            or attn.in_proj_bias is None or query.dtype != attn.in_proj_bias.dtype
            or query.dtype != attn.in_proj_weight.dtype or attn.training or attn.num_heads % 2
            or not attn.batch_first or attn.bias_k is not None or attn.bias_v is not None
            or attn.add_zero_attn or not attn._qkv_same_embed_dim
            or (query.is_nested and (padding_mask is not None or attn_mask is not None))
            or torch.is_autocast_enabled()):
        return False
    return _tensors_allow((query, key, value, attn.in_proj_weight, attn.in_proj_bias,
                           attn.out_proj.weight, attn.out_proj.bias))


def _mha_forward(attn: nn.MultiheadAttention, calls: Counter[str], query: torch.Tensor,
                 key: torch.Tensor, value: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                 need_weights: bool = True, attn_mask: torch.Tensor | None = None,
                 average_attn_weights: bool = True, is_causal: bool = False) -> Any:
    float_mask = ((attn_mask is not None and torch.is_floating_point(attn_mask))
                  or (key_padding_mask is not None and torch.is_floating_point(key_padding_mask)))
    padding = F._canonical_mask(mask=key_padding_mask, mask_name="key_padding_mask",
                                other_type=F._none_or_dtype(attn_mask), other_name="attn_mask",
                                target_type=query.dtype)
    mask = F._canonical_mask(mask=attn_mask, mask_name="attn_mask", other_type=None, other_name="",
                             target_type=query.dtype, check_other=False)
    if not mha_fast_path(attn, query, key, value, mask, padding, float_mask):
        return nn.MultiheadAttention.forward(attn, query, key, value, key_padding_mask, need_weights,
                                             attn_mask, average_attn_weights, is_causal)
    calls[FUSED_MHA] += 1
    merged, mask_type = attn.merge_masks(mask, padding, query)
    return torch._native_multi_head_attention(
        query, key, value, attn.embed_dim, attn.num_heads, attn.in_proj_weight, attn.in_proj_bias,
        attn.out_proj.weight, attn.out_proj.bias, merged, need_weights, average_attn_weights,
        mask_type)
