"""Attention implementations a trace can assume, and how the report says which (layer 0).

`trace/attention.py` routes SDPA calls to the chosen kernel; this module holds
the names and the report's wording, so the upper layers need no torch.
"""

from __future__ import annotations

from typing import Any

from .errors import UserInputError

FLASH, MATH = "flash", "math"
IMPLEMENTATIONS = (MATH, FLASH)
# Which rules pick each call's kernel under 'flash', on the meta device as on a CPU.
CPU_RULES = ("torch's CPU rules (select_sdp_backend_cpp): flash unless dropout > 0, tensors not 4-D, "
             "q/k/v head dims differ, the mask's shape or requires_grad, a last stride != 1 or the "
             "dtype rule it out; then math")
# The inference fast paths of nn.TransformerEncoderLayer and nn.MultiheadAttention
# (trace/fastpath.py): one fused kernel per module call, as torch runs them.
FUSED_ENCODER = "_transformer_encoder_layer_fwd"
FUSED_MHA = "_native_multi_head_attention"
FUSED_KERNELS = (FUSED_ENCODER, FUSED_MHA)
FAST_PATH_RULES = ("torch's fast-path conditions (TransformerEncoderLayer.forward, MultiheadAttention."
                   "forward): eval mode, no autograd on the weights, batch_first, an even head count, "
                   "self-attention with in-projection bias, no per-module hooks, no autocast, a CPU/CUDA "
                   "device (meta traced as the CPU it stands for); the trace's own modes do not count. "
                   "Otherwise the module's decomposition. nn.TransformerEncoder's nested-tensor path for "
                   "a padding mask is traced dense (an upper bound)")


def check_attention(name: str | None) -> str | None:
    """A valid implementation name (None stays None: the caller's default)."""
    if name is None:
        return None
    key = name.strip().lower()
    if key not in IMPLEMENTATIONS:
        raise UserInputError(f"unknown attention implementation {name!r}; choose one of "
                             f"{', '.join(IMPLEMENTATIONS)}")
    return key


def attention_setting(requested: str | None, traced: str | None,
                      kernels: tuple[tuple[str, int], ...] = ()) -> dict[str, Any]:
    """The report's `settings.attention`: the implementation assumed and why.

    `requested`: the caller's choice (None: the default, flash); `traced`: what
    the trace recorded (None: the model made no SDPA call); `kernels`: how many
    calls took each kernel (`Trace.attention_kernels`), reported with the rules
    that picked them; the fused module kernels among them (FUSED_KERNELS) go
    under `fast_paths`.
    """
    fused = {k: n for k, n in kernels if k in FUSED_KERNELS}
    sdpa = {k: n for k, n in kernels if k not in FUSED_KERNELS}
    setting = _setting(requested, traced)
    if traced is None and fused:
        setting["why"] = ("the model makes no scaled_dot_product_attention call of its own: its "
                          "nn.TransformerEncoderLayer/nn.MultiheadAttention calls ran as the fused "
                          "kernels in fast_paths, the rest as written; --attention does not apply")
    if traced is not None and sdpa:
        setting["kernels"] = sdpa
        setting["kernel_rules"] = CPU_RULES if traced == FLASH else "--attention math: every call"
    if fused:
        setting["fast_paths"] = {"calls": fused, "rules": FAST_PATH_RULES}
    return setting


def _setting(requested: str | None, traced: str | None) -> dict[str, Any]:
    if traced is None:
        return {"implementation": "as written",
                "why": "the model makes no scaled_dot_product_attention call (its own attention "
                       "code, or none): traced as written; --attention does not apply"}
    if requested is None:
        return {"implementation": traced,
                "why": "default: the kernel the device runs for each call (on CPU and meta, "
                       "_scaled_dot_product_flash_attention_for_cpu, which never materialises the "
                       "L x S scores, where torch's CPU rules allow it, else the math form); "
                       "--attention math for unfused attention everywhere"}
    return {"implementation": traced, "why": f"--attention {requested} (what-if)"}
